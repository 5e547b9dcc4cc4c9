"""Warm then cold stop, a handler that only records (its log line written after, by the thread that looks), and
sleeps that a signal cuts short."""
import os
import signal
import subprocess
import sys
import time

import pytest

from pilot.errors import ColdShutdown
from pilot.signals import REPEAT_WINDOW_S, StopState, Waker, pidfds_work


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


def _installed(wake_on_child):
    """A Waker installed in this process (the signals restored by the caller's ``finally``)."""
    stop, waker = StopState(), Waker()
    assert waker.install(stop, wake_on_child=wake_on_child)
    return stop, waker


def _restore(saved):
    signal.set_wakeup_fd(-1)
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _saved():
    return {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1,
                                              signal.SIGQUIT, signal.SIGXCPU, signal.SIGBUS, signal.SIGSEGV)}


@pytest.mark.skipif(not pidfds_work(), reason="no pidfds on this kernel")
def test_a_payloads_exit_does_not_wake_the_relay_thread_where_pidfds_wake_the_job_loop():
    """Each payload's SIGCHLD cost the pilot a wake-up of the relay thread and two GIL hand-offs; its pidfd wakes
    the job loop already. A stop signal sent after the child was reaped reaches the relay after any SIGCHLD
    would have (the wakeup pipe keeps their order), so the relay's count is complete when the sleep ends."""
    saved = _saved()
    try:
        stop, waker = _installed(wake_on_child=None)
        assert not waker.wakes_on_child
        child = subprocess.Popen(["true"])
        pidfd = os.pidfd_open(child.pid)
        try:
            waker.sleep(30, [pidfd])  # ends at the child's exit, by its pidfd
        finally:
            os.close(pidfd)
        assert child.wait() == 0
        os.kill(os.getpid(), signal.SIGUSR1)
        waker.sleep(30)
        assert stop.signum == signal.SIGUSR1 and waker.relayed.get(signal.SIGUSR1) == 1
        assert signal.SIGCHLD not in waker.relayed
    finally:
        _restore(saved)


def test_without_pidfds_a_childs_exit_ends_the_sleep():
    """The fallback: SIGCHLD handled, so the job loop still wakes at the payload's exit."""
    saved = _saved()
    try:
        stop, waker = _installed(wake_on_child=True)
        assert waker.wakes_on_child
        child = subprocess.Popen(["sleep", "0.1"])
        waker.sleep(10)  # the relay wakes it after reading the SIGCHLD (without the handler: 10 s, then no count)
        assert child.wait() == 0 and stop.signum is None
        assert waker.relayed.get(signal.SIGCHLD, 0) >= 1
    finally:
        _restore(saved)
