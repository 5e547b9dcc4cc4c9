"""bench/submit_pieces.py --http: where a server (this tree's or a baseline's) spends a job/submit call.

On PYTHONPATH of a server that bench/submit_pieces.py starts (never installed, never imported by minipanda itself):
once the modules are imported (a thread watches for them), the bridge's body reading (on the loop) and its app runs (on request threads), the
body's parsing, submit_jobs and the reply's JSON are wrapped to sum their wall time and CPU (time.thread_time), and
a collector callback sums the garbage collections; the totals go to $MINIPANDA_BENCH_SUBMIT_HOOKS.<pid> every 0.2 s.
"""
import gc
import os
import sys
import threading
import time

OUT = os.environ.get("MINIPANDA_BENCH_SUBMIT_HOOKS")
TOTALS = {}


def _add(name, wall, cpu):
    total = TOTALS.setdefault(name, [0, 0.0, 0.0])
    total[0] += 1
    total[1] += wall
    total[2] += cpu


def _timed(name, function):
    def wrapper(*args, **named):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **named)
        finally:
            _add(name, time.perf_counter() - wall, time.thread_time() - cpu)
    return wrapper


def _http(module):
    bridge = getattr(module, "RsgiBridge", None)
    if bridge is None or bridge.__module__ != module.__name__:  # the other of server.http and server.bridge
        return
    read_body, run_app = bridge.read_body, bridge.run_app

    async def timed_read_body(self, headers, proto):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return await read_body(self, headers, proto)
        finally:  # the loop thread runs other coroutines meanwhile: its CPU here is an upper bound
            _add("body received (loop thread)", time.perf_counter() - wall, time.thread_time() - cpu)

    bridge.read_body, bridge.run_app = timed_read_body, _timed("app runs (request thread)", run_app)


def _wire(module):
    module.parse_body = _timed("body parsed", module.parse_body)
    module.envelope = _timed("reply's JSON", module.envelope)


def _jobs(module):
    module.submit_jobs = _timed("submit_jobs", module.submit_jobs)


PATCHES = {"minipanda.server.http": _http, "minipanda.server.bridge": _http, "minipanda.api.wire": _wire, "minipanda.core.jobs": _jobs}


def _patch_when_imported():
    """Patch each module of PATCHES once it is imported (all are while the server starts, before it listens;
    server.bridge holds the bridge since it was split out of server.http)."""
    waiting, deadline = dict(PATCHES), time.monotonic() + 60  # a tree without one of them: not for ever
    while waiting and time.monotonic() < deadline:
        for name in [name for name in waiting if name in sys.modules]:
            module = sys.modules[name]
            while getattr(module, "__spec__", None) is not None and getattr(module.__spec__, "_initializing", False):
                time.sleep(0.001)  # still running its own code
            waiting.pop(name)(module)
        time.sleep(0.01)


def _collection(phase, info, started={}):
    if phase == "start":
        started["wall"], started["cpu"] = time.perf_counter(), time.thread_time()
    elif started:
        _add("garbage collection (inside the above)", time.perf_counter() - started["wall"],
             time.thread_time() - started["cpu"])


def _report():
    while True:
        time.sleep(0.2)
        with open(f"{OUT}.{os.getpid()}.part", "w") as handle:
            for name, (count, wall, cpu) in list(TOTALS.items()):
                handle.write(f"{name}\t{count}\t{wall:.6f}\t{cpu:.6f}\n")
        os.replace(f"{OUT}.{os.getpid()}.part", f"{OUT}.{os.getpid()}")


if OUT:
    threading.Thread(target=_patch_when_imported, name="bench-submit-hooks-patch", daemon=True).start()
    gc.callbacks.append(_collection)
    threading.Thread(target=_report, name="bench-submit-hooks", daemon=True).start()
