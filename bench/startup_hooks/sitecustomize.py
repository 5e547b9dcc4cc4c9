"""bench/testbed_startup.py's hooks, loaded by the testbed's process when this directory is on PYTHONPATH; they act
only when STARTUP_MARKS names the file to write (never part of the product).

They mark the process's CPU (``time.process_time``: every thread's) at the edges of the testbed's start-up steps
(``testbed.bed.Testbed``'s and the server's), and take the CPU of harvester's thread that makes the pilot zipapp
(``harvester.handoff.pilots.build_ahead``, its own thread CPU); JSON at exit.
"""
import atexit
import importlib.util
import json
import os
import sys
import time

OUT = os.environ.get("STARTUP_MARKS")
marks = {}


def mark(name):
    marks.setdefault(name, time.process_time())


def around(owner, attribute, before, after):
    function = getattr(owner, attribute)

    def call(*args, **kwargs):
        mark(before)
        try:
            return function(*args, **kwargs)
        finally:
            mark(after)

    setattr(owner, attribute, call)


def patch_bed(bed):
    around(bed.Testbed, "_start_server", "server_start", "server_up")
    around(bed.Testbed, "_start_harvester", "harvester_start", "harvester_up")
    around(bed.Testbed, "_submit_demo", "demo_start", "demo_end")
    around(bed.demo, "submit_prepared", "submit_start", "submitted")


def patch_process(process):
    around(process, "build", "build_start", "app_built")


def patch_pilots(pilots):
    build_ahead = pilots.build_ahead

    def timed(home):
        started = time.thread_time()
        try:
            return build_ahead(home)
        finally:
            marks["zipapp_thread_s"] = time.thread_time() - started

    pilots.build_ahead = timed


def after_import(patches):
    """files_cpu's hook that patches each module of ``patches`` ({name: function(module)}) once it is imported (one
    copy of it: that file does nothing else unless FILES_CPU_DIR is set)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "files_cpu_hooks",
                        "sitecustomize.py")
    spec = importlib.util.spec_from_file_location("files_cpu_hooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AfterImport(patches)


def dump():
    with open(OUT, "w") as handle:
        json.dump(marks, handle)


if OUT and "testbed" in sys.argv:
    mark("site")
    sys.meta_path.insert(0, after_import({"testbed.bed": patch_bed, "minipanda.server.process": patch_process,
                                          "harvester.handoff.pilots": patch_pilots}))
    atexit.register(dump)
