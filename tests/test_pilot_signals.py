"""Warm then cold stop, a handler that only records (its log line written after, by the thread that looks), and
sleeps that a signal cuts short."""
import os
import signal
import subprocess
import sys
import time

import pytest

from pilot.errors import ColdShutdown
from pilot.signals import REPEAT_WINDOW_S, StopState, Waker


def test_first_signal_warm_second_cold():
    stop = StopState()
    assert not stop.requested
    stop.handle(signal.SIGTERM)
    assert stop.requested and stop.name == "SIGTERM"
    stop.first_at -= REPEAT_WINDOW_S  # a second signal later, not the first delivered twice
    with pytest.raises(ColdShutdown) as exc:
        stop.handle(signal.SIGINT)
    assert exc.value.signum == signal.SIGTERM and stop.cold
    stop.handle(signal.SIGINT)  # a third signal changes nothing


def test_a_stop_delivered_twice_at_once_is_one_stop():
    """A job script of several pilots forwards the signal its process group also got, LSF sends SIGINT then
    SIGTERM: one stop, still warm; a signal after the window is the cold stop."""
    stop = StopState()
    stop.handle(signal.SIGTERM)
    stop.handle(signal.SIGTERM)
    stop.handle(signal.SIGINT)
    assert stop.requested and not stop.cold and stop.name == "SIGTERM"
    stop.first_at -= REPEAT_WINDOW_S
    with pytest.raises(ColdShutdown):
        stop.handle(signal.SIGINT)


def test_waker_returns_early_on_a_signal():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1,
                                              signal.SIGQUIT, signal.SIGXCPU, signal.SIGBUS, signal.SIGSEGV)}
    stop, waker = StopState(), Waker()
    try:
        assert waker.install(stop) and waker.installed
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGUSR1))
        start = time.monotonic()
        waker.sleep(30)
        assert time.monotonic() - start < 25 and stop.signum == signal.SIGUSR1
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        for signum, handler in saved.items():
            signal.signal(signum, handler)


IN_THE_LOCK = """
import logging, logging.handlers, queue, signal
from pilot.signals import StopState

records = queue.Queue()
logging.basicConfig(level=logging.INFO, handlers=[logging.handlers.QueueHandler(records)])
stop = StopState()
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, stop.handle)
# The moment a handler that logged deadlocked on: this thread inside the log queue's lock (a QueueHandler's put,
# not reentrant) when the signals arrive; raise_signal runs the Python handler before it returns.
with records.mutex:
    for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
        signal.raise_signal(signum)
assert records.empty() and stop.signum == signal.SIGTERM and not stop.cold
assert stop.requested  # the first look logs the stop, from this thread
print(records.get_nowait().getMessage())
"""


def test_a_stop_signal_while_the_thread_holds_the_log_lock_is_recorded_and_logged_after():
    """In a subprocess with a time limit, so a deadlock fails instead of hanging."""
    try:
        proc = subprocess.run([sys.executable, "-c", IN_THE_LOCK], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the pilot's stop handler deadlocked inside the log queue's lock: {str(exc.stderr)[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.endswith("got SIGTERM: stopping after killing the payload and reporting\n"), proc.stdout
