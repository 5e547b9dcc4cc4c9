"""Stop requests and sleeping: the first stop signal is warm, the second cold (as rq's worker).

Warm (first TERM/INT/QUIT/USR1/XCPU/BUS/SEGV): the running payload is killed with code 1200+signal, the log is
staged out and the final update sent (one try, then the outbox); no new job is taken. Cold (a second signal): a
ColdShutdown exception unwinds at once; only the final update is spooled to the outbox (or the handoff files).
A stop signal within ``REPEAT_WINDOW_S`` of the first is the same stop delivered twice (to the job's process group
and forwarded by a job script running several pilots; LSF's bkill sends SIGINT then SIGTERM), not a request for a
cold stop.

``Waker.sleep`` returns early when a signal arrives, through ``signal.set_wakeup_fd``, so the pilot reacts at once
without polling fast. A payload's exit wakes it through the payload's pidfd (pilot.payload); only where there are
no pidfds (Linux before 5.3) does SIGCHLD get a handler to wake it: a handled SIGCHLD per job costs the pilot a
wake-up of the relay thread, a GIL hand-off to it and back, and an interrupted system call in the job loop.
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
    """Which stop signal arrived first (None: keep working).

    :meth:`handle` is the signal handler, and a Python handler runs in the main thread between any two bytecodes:
    inside a logging call holding its handler's lock, half-way through a write on the log's buffered stream,
    inside ``Event.wait``. So it only stores the signal (and raises ColdShutdown for a cold stop, which takes no
    lock); the stop's log line is written outside the handler, by :class:`Waker`'s relay thread as the signal
    arrives, or by whichever code first asks :attr:`requested`."""

    def __init__(self):
        self.signum = None
        self.cold = False
        self.first_at = None
        self._announced = False

    @property
    def requested(self):
        self.announce()  # the first look after the signal says so in the log (never the handler)
        return self.signum is not None

    def announce(self, signum=None):
        """Log the stop once, from the thread that noticed it: ``signum`` from the wakeup pipe (its handler may not
        have run yet), or the one recorded."""
        signum = self.signum or signum
        if signum is not None and not self._announced:
            self._announced = True
            log.warning("got %s: stopping after killing the payload and reporting", signal.Signals(signum).name)

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else ""

    def handle(self, signum, frame=None):
        """The signal handler: the first call requests a warm stop, the second raises ColdShutdown. Attribute
        stores only (no logging: see the class's docstring)."""
        if self.signum is None:
            self.first_at = time.monotonic()
            self.signum = signum
            return
        if time.monotonic() - self.first_at < REPEAT_WINDOW_S:
            return  # the same stop delivered twice at once
        if not self.cold:
            self.cold = True
            raise ColdShutdown(self.signum)


class Waker:
    """Sleeps that end early when a signal arrives (only in the main thread; elsewhere plain sleeps).

    ``signal.set_wakeup_fd`` writes each signal's number, from C, to a pipe that a relay thread reads: it logs a
    stop at once (a thread of its own, never interrupted by a handler, so logging there is safe, and it says so
    even while the main thread is blocked in an upload), then wakes :meth:`sleep` through a second pipe."""

    def __init__(self):
        self.read_fd = None
        self.stop = None
        self.wakes_on_child = False  # SIGCHLD ends sleep() (installed where there are no pidfds)
        self.relayed = {}  # signal number -> how many times the relay thread read it from the wakeup pipe

    def install(self, stop, wake_on_child=None):
        """Route the stop signals to ``stop`` and wake sleepers on them; on SIGCHLD too when ``wake_on_child``
        (default: only where there are no pidfds to wake the job loop at a payload's exit)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if wake_on_child is None:
            wake_on_child = not pidfds_work()
        signals_read, signals_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(signals_write, warn_on_full_buffer=False)
        threading.Thread(target=self._relay, args=(signals_read, wake_write, stop, self.relayed), name="pilot-signals",
                         daemon=True).start()
        self.read_fd, self.stop = wake_read, stop
        for signum in STOP_SIGNALS:
            signal.signal(signum, stop.handle)
        if wake_on_child:
            signal.signal(signal.SIGCHLD, lambda signum, frame: None)
            self.wakes_on_child = True
        return True

    @staticmethod
    def _relay(signals_read, wake_write, stop, relayed):
        while True:
            select.select([signals_read], [], [])
            try:
                numbers = os.read(signals_read, 512)
            except (BlockingIOError, InterruptedError):
                continue
            for signum in numbers:
                relayed[signum] = relayed.get(signum, 0) + 1
                if signum in STOP_SIGNALS:
                    stop.announce(signum)
            try:
                os.write(wake_write, b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # the pipe is full of wake-ups already

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


def pidfds_work():
    """Whether this kernel and Python give pidfds (Linux 5.3+, Python 3.9+), asked once per pilot."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True
