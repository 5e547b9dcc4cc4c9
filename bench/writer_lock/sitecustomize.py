"""bench/bulk.py --writer-lock: how long a server (this tree's or a baseline's) holds its SQLite writer lock.

On PYTHONPATH of a server that bench/bulk.py starts (never installed, never imported by minipanda itself): once
minipanda.core.db is imported, SqliteDatabase.begin and _release_writer are wrapped to sum the seconds between
taking the process's writer lock and releasing it, and the totals are written to $MINIPANDA_BENCH_WRITER_LOCK.<pid>
(write transactions, seconds held, CPU seconds the holding thread spent meanwhile) every 0.2 s. One writer at a
time: the sum over a phase is the part of its wall time that no second writer could share; held minus CPU is the
time the holder waited (for the GIL, a core, the disk) with the lock in hand.
"""
import importlib.abc
import os
import sys
import threading
import time

OUT = os.environ.get("MINIPANDA_BENCH_WRITER_LOCK")


def _wrap(module):
    cls = module.SqliteDatabase
    begin, release = cls.begin, cls._release_writer
    totals, local = [0, 0.0, 0.0], threading.local()

    def timed_begin(self, lock_type=None):
        begin(self, lock_type)
        local.started, local.cpu = time.perf_counter(), time.thread_time()

    def timed_release(self):
        if getattr(self._holds, "writer", False):
            totals[0] += 1
            totals[1] += time.perf_counter() - local.started
            totals[2] += time.thread_time() - local.cpu
        release(self)

    cls.begin, cls._release_writer = timed_begin, timed_release

    def report():
        pid = os.getpid()
        while True:
            time.sleep(0.2)
            with open(f"{OUT}.{pid}.part", "w") as handle:
                handle.write(f"{totals[0]} {totals[1]:.6f} {totals[2]:.6f}\n")
            os.replace(f"{OUT}.{pid}.part", f"{OUT}.{pid}")

    def start():
        threading.Thread(target=report, name="bench-writer-lock", daemon=True).start()

    def in_child():  # serve --workers: each forked process counts its own holds, in its own file
        totals[:] = [0, 0.0, 0.0]
        start()

    os.register_at_fork(after_in_child=in_child)
    start()


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps minipanda.core.db's loader so the class is patched right after the module runs."""

    def find_spec(self, name, path, target=None):
        if name != "minipanda.core.db":
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                execute = spec.loader.exec_module

                def exec_module(module):
                    execute(module)
                    _wrap(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


if OUT:
    sys.meta_path.insert(0, _Finder())
