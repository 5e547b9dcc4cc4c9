"""bench/files_cpu.py's hooks, loaded by every Python process the testbed starts when this directory is on
PYTHONPATH; they act only when FILES_CPU_DIR names where to write (never part of the product):

- every thread's CPU by thread name (``time.thread_time`` at the end of its ``run``; the threads alive at exit from
  /proc/self/task), as JSON at exit, in the testbed's process (server + harvester) and in each pilot;
- in the testbed's process, the CPU of each request thread's WSGI call by method and route (numbers and file names
  folded), counted around ``minipanda.server.process.AccessLog``;
- the process's CPU (``os.times``, as the testbed's summary takes it) at the edges of the jobs' window, so that
  costs paid once per run are told apart from those paid per job: in the testbed's process at the demo task's
  submission (start-up: imports, database, server, harvester, the inputs) and when the task is seen done and
  when the summary is taken (the tail: the pilots' last idle getJob tries served, harvester waiting for them to
  end); in each pilot at its first getJob (start-up: the interpreter, its imports, its set-up) and after each
  job update (the last one is its last job's final: what follows is its tail, the idle tries and its exit).
"""
import atexit
import importlib.abc
import importlib.util
import json
import os
import re
import sys
import threading
import time

OUT = os.environ.get("FILES_CPU_DIR")
ended = {}
routes = {}
marks = {}  # name -> the process's CPU seconds at that moment (see the module docstring)
at_submission = {}  # thread name -> its CPU seconds when the demo task was submitted (testbed process)
lock = threading.Lock()


def thread_name(name):
    return re.sub(r"-\d+$", "-N", name)


def threads_alive():
    spent, names = {}, {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = thread_name(names.get(int(tid), "native (granian)"))
        spent[name] = spent.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
    return spent


def dump(kind):
    with open(os.path.join(OUT, f"{kind}-{os.getpid()}.json"), "w") as handle:
        json.dump({"routes": routes, "alive": threads_alive(), "ended": ended, "times": list(os.times()),
                   "marks": dict(marks, exit=process_cpu()), "threads_at_submission": at_submission}, handle)


def process_cpu():
    times = os.times()
    return times.user + times.system


def mark(name, first_only=False):
    if not (first_only and name in marks):
        marks[name] = process_cpu()


def marked(function, name, before=True, first_only=False):
    """``function`` that marks ``name`` before (or after) each call."""
    def call(*args, **kwargs):
        if before:
            mark(name, first_only)
        try:
            return function(*args, **kwargs)
        finally:
            if not before:
                mark(name, first_only)
    return call


def count_threads():
    run = threading.Thread.run

    def counted(self):
        try:
            run(self)
        finally:
            name = thread_name(self.name)
            with lock:
                ended[name] = ended.get(name, 0) + time.thread_time()

    threading.Thread.run = counted


def route(environ):
    path = re.sub(r"\d+", "N", re.sub(r"/files/.*", "/files/*", environ.get("PATH_INFO", "")))
    return environ.get("REQUEST_METHOD", "") + " " + path


def count_routes(process):
    inner = process.AccessLog.__call__

    def call(self, environ, start_response):
        started = time.thread_time()
        try:
            return inner(self, environ, start_response)
        finally:
            spent, key = time.thread_time() - started, route(environ)
            with lock:
                entry = routes.setdefault(key, [0, 0.0])
                entry[0] += 1
                entry[1] += spent

    process.AccessLog.__call__ = call


def mark_testbed(bed):
    submit = marked(bed.demo.submit_prepared, "submitted")

    def submitted(*args, **kwargs):
        # the threads' CPU so far: harvester's pilot-zipapp thread (built once per run) may still be at work
        at_submission.update(threads_alive())
        return submit(*args, **kwargs)

    bed.demo.submit_prepared = submitted
    bed.Testbed._follow = marked(bed.Testbed._follow, "task_done", before=False)
    bed.summary.summarize = marked(bed.summary.summarize, "summary")


def mark_pilot(comm):
    client = comm.ServerClient
    for name in ("get_job", "begin_get_job", "get_jobs", "begin_get_jobs"):
        setattr(client, name, marked(getattr(client, name), "first_getjob", first_only=True))
    for name in ("update_job", "update_jobs_bulk"):
        setattr(client, name, marked(getattr(client, name), "last_update", before=False))


class AfterImport(importlib.abc.MetaPathFinder):
    """Patches the modules of ``patches`` ({name: function(module)}) once each is imported."""

    def __init__(self, patches):
        self.patches = dict(patches)

    def find_spec(self, name, path, target=None):
        if name not in self.patches:
            return None
        patch = self.patches.pop(name)
        sys.meta_path.remove(self)  # find_spec below must not come back here
        try:
            spec = importlib.util.find_spec(name)
        finally:
            if self.patches:
                sys.meta_path.insert(0, self)
        loader = spec.loader
        load = loader.exec_module

        def exec_module(module):
            if module.__name__ != name:  # a loader shared by a whole archive (zipimport): not ours
                return load(module)
            del loader.exec_module  # back to the class's own
            load(module)
            patch(module)

        loader.exec_module = exec_module
        return spec


if OUT and "testbed" in sys.argv and "--jobs" in sys.argv:
    count_threads()
    sys.meta_path.insert(0, AfterImport({"minipanda.server.process": count_routes, "testbed.bed": mark_testbed}))
    atexit.register(dump, "testbed")
elif OUT and sys.argv and sys.argv[0].endswith("pilot.pyz"):
    count_threads()
    sys.meta_path.insert(0, AfterImport({"pilot.comm": mark_pilot}))
    atexit.register(dump, "pilot")
