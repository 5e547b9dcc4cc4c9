"""Periodic duties inside the server process (the "daemon" of the PanDA seeds).

A duty is a named ``run_once(now)`` with a period. One thread per duty runs it, never overlapping with itself;
an exception is logged with the duty's name and the next run happens on schedule. Missed ticks are skipped, not
replayed, so a slow run never causes a burst. ``wake()`` runs a duty early (e.g. after a submission).
"""
import dataclasses
import logging
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

    def __init__(self):
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
