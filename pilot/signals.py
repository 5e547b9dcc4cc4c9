"""Stop requests and sleeping: the first stop signal is warm, the second cold (as rq's worker).

Warm (first TERM/INT/QUIT/USR1/XCPU/BUS/SEGV): the running payload is killed with code 1200+signal, the log is
staged out and the final update sent (one try, then the outbox); no new job is taken. Cold (a second signal): a
ColdShutdown exception unwinds at once; only the final update is spooled to the outbox (or the handoff files).
A stop signal within ``REPEAT_WINDOW_S`` of the first is the same stop delivered twice (to the job's process group
and forwarded by a job script running several pilots; LSF's bkill sends SIGINT then SIGTERM), not a request for a
cold stop.

``Waker.sleep`` returns early when a signal arrives (including SIGCHLD: the payload exited), through
``signal.set_wakeup_fd``, so the pilot reacts at once without polling fast.
"""
import logging
import os
import select
import signal
import threading
import time

from pilot.errors import SIGNAL_CODES, ColdShutdown

log = logging.getLogger(__name__)
STOP_SIGNALS = tuple(SIGNAL_CODES)
REPEAT_WINDOW_S = 2.0


class StopState:
    """Which stop signal arrived first (None: keep working)."""

    def __init__(self):
        self.signum = None
        self.cold = False
        self.first_at = None

    @property
    def requested(self):
        return self.signum is not None

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else ""

    def handle(self, signum, frame=None):
        """The signal handler: the first call requests a warm stop, the second raises ColdShutdown."""
        if self.signum is None:
            self.signum, self.first_at = signum, time.monotonic()
            log.warning("got %s: stopping after killing the payload and reporting", signal.Signals(signum).name)
            return
        if time.monotonic() - self.first_at < REPEAT_WINDOW_S:
            return  # the same stop delivered twice at once
        if not self.cold:
            self.cold = True
            log.error("got %s again: cold shutdown", signal.Signals(signum).name)
            raise ColdShutdown(self.signum)


class Waker:
    """Sleeps that end early when a signal arrives (only in the main thread; elsewhere plain sleeps)."""

    def __init__(self):
        self.read_fd = None

    def install(self, stop):
        """Route the stop signals to ``stop`` and wake sleepers on them and on SIGCHLD."""
        if threading.current_thread() is not threading.main_thread():
            return False
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self.read_fd = read_fd
        for signum in STOP_SIGNALS:
            signal.signal(signum, stop.handle)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        return True

    @property
    def installed(self):
        return self.read_fd is not None

    def sleep(self, seconds, fds=()):
        """Sleep up to ``seconds``; return early when a signal arrives or one of ``fds`` becomes readable (a
        payload's pidfd: its exit)."""
        seconds = max(0.0, seconds)
        if self.read_fd is None:
            if fds:
                select.select(list(fds), [], [], seconds)
            else:
                time.sleep(seconds)
            return
        try:
            ready, _, _ = select.select([self.read_fd, *fds], [], [], seconds)
        except InterruptedError:
            ready = [self.read_fd]
        if self.read_fd in ready:
            try:
                while os.read(self.read_fd, 512):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
