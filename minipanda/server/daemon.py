"""Periodic duties inside the server process (the "daemon" of the PanDA seeds).

A duty is a named ``run_once(now)`` with a period. One thread per duty runs it, never overlapping with itself;
an exception is logged with the duty's name and the next run happens on schedule. Missed ticks are skipped, not
replayed, so a slow run never causes a burst. ``wake()`` runs a duty early (e.g. after a submission).

On PostgreSQL several server processes (``--workers N``, several hosts) share one database, and the duties must
run once, not once per process: a runner given a ``gate`` runs its duties only while ``gate()`` is true, and
``LeaderLock.held`` is that gate: a PostgreSQL session-level advisory lock on a connection of its own. The
process holding it leads; the others try again every ``retry`` seconds, so when the leader stops or dies (its
connection closes and PostgreSQL releases the lock) another one takes over.
"""
import dataclasses
import logging
import os
import threading
import time
from typing import Callable

from minipanda.core import states
from minipanda.core.db import database

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Duty:
    """A periodic job of the server: ``func(now)`` every ``period`` seconds."""

    name: str
    period: float
    func: Callable
    runs: int = 0
    failures: int = 0
    last_error: str = ""


class DutyRunner:
    """Owns one thread per duty, a shared stop event, and per-duty wake events."""

    def __init__(self, gate=None):
        self.gate = gate  # None: always run; else run the duties only while gate() is true
        self.duties = {}
        self._wake = {}
        self._threads = []
        self.stop_event = threading.Event()

    def add(self, name, period, func):
        if period <= 0:
            raise ValueError(f"duty {name}: period must be positive, got {period}")
        self.duties[name] = Duty(name, period, func)
        self._wake[name] = threading.Event()

    def wake(self, name):
        """Run the named duty as soon as its thread is free."""
        if name in self._wake:
            self._wake[name].set()

    def run_once(self, name, now=None):
        """Run one duty now in the caller's thread (tests use this with a fixed clock)."""
        duty = self.duties[name]
        database.connect(reuse_if_open=True)
        try:
            duty.func(now or states.utcnow())
            duty.runs += 1
        except Exception as exc:  # a duty must survive its own bugs; the log says which duty and why
            duty.failures += 1
            duty.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("duty %s failed", name)

    def _loop(self, name):
        duty = self.duties[name]
        next_run = time.monotonic() + duty.period
        while not self.stop_event.is_set():
            self._wake[name].wait(max(0.0, next_run - time.monotonic()))
            if self.stop_event.is_set():
                break
            self._wake[name].clear()
            if self.gate is None or self.gate():
                self.run_once(name)
            next_run = time.monotonic() + duty.period
        database.close()

    def start(self):
        for name in self.duties:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"duty-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.duties:
            log.info("started duties: %s", ", ".join(f"{d.name} every {d.period:g}s" for d in self.duties.values()))

    def stop(self, timeout=10):
        self.stop_event.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout)


# The advisory lock's key: one per database, the same for every minipanda server on it.
LEADER_LOCK_KEY = 0x6D696E6970616E64  # "minipand"


class LeaderLock:
    """``held()`` is true while this process holds the duties' advisory lock on PostgreSQL (see the module doc).

    The lock lives on a connection of its own (psycopg2, autocommit), never on the request or duty connections,
    so it is held for as long as that connection is open. ``held()`` tries to take it, or checks that its
    connection is still alive, at most once every ``retry`` seconds; ``close()`` releases it.
    """

    def __init__(self, url, retry=10.0, key=LEADER_LOCK_KEY):
        self.url, self.retry, self.key = url, retry, key
        self._conn, self._held, self._checked = None, False, None
        self._lock = threading.Lock()

    def held(self):
        with self._lock:
            now = time.monotonic()
            if self._checked is None or now - self._checked >= self.retry:
                self._checked = now
                self._check()
            return self._held

    def _check(self):
        import psycopg2

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(self.url)
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                if self._held:
                    cur.execute("SELECT 1")
                else:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                    if cur.fetchone()[0]:
                        self._held = True
                        log.info("this process leads the duties (pid %d holds their advisory lock)", os.getpid())
        except psycopg2.Error as exc:
            if self._held:
                log.warning("lost the duties' advisory lock (%s); the duties pause here", exc)
            else:
                log.warning("cannot reach PostgreSQL for the duties' advisory lock: %s", exc)
            self._held = False
            self._drop()

    def _drop(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection: nothing left to release
                pass
            self._conn = None

    def close(self):
        """Release the lock and stop leading. The lock is unlocked on its connection before that connection closes:
        a closed connection's backend releases it only when it has exited, which another process's
        ``pg_try_advisory_lock`` may come before."""
        import psycopg2

        with self._lock:
            if self._held:
                log.info("releasing the duties' advisory lock")
                try:
                    with self._conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                except psycopg2.Error as exc:  # the connection is gone, and the lock with its backend
                    log.warning("releasing the duties' advisory lock: %s", exc)
            self._held = False
            self._drop()
