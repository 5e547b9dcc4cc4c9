"""bench/files_cpu.py's hooks, loaded by every Python process the testbed starts when this directory is on
PYTHONPATH; they act only when FILES_CPU_DIR names where to write (never part of the product):

- every thread's CPU by thread name (``time.thread_time`` at the end of its ``run``; the threads alive at exit from
  /proc/self/task), as JSON at exit, in the testbed's process (server + harvester) and in each pilot;
- in the testbed's process, the CPU of each request thread's WSGI call by method and route (numbers and file names
  folded), counted around ``minipanda.server.process.AccessLog``.
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
        json.dump({"routes": routes, "alive": threads_alive(), "ended": ended, "times": list(os.times())}, handle)


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


class AfterImport(importlib.abc.MetaPathFinder):
    """Patches minipanda.server.process once it is imported."""

    def find_spec(self, name, path, target=None):
        if name != "minipanda.server.process":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            count_routes(module)

        spec.loader.exec_module = exec_module
        return spec


if OUT and "testbed" in sys.argv and "--jobs" in sys.argv:
    count_threads()
    sys.meta_path.insert(0, AfterImport())
    atexit.register(dump, "testbed")
elif OUT and sys.argv and sys.argv[0].endswith("pilot.pyz"):
    count_threads()
    atexit.register(dump, "pilot")
