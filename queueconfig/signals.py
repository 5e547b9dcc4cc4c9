"""Signals recorded by their handler and acted on by the thread that owns the loop (harvester and the server).

A Python signal handler runs in the main thread between two bytecodes, wherever that thread happens to be: inside
``Event.wait`` re-acquiring its condition's lock, inside ``Event.set``, inside a logging call holding its handler's
lock or half-way through a write on a buffered stream. A handler that sets an Event, takes a lock, logs or sends a
datagram can therefore deadlock on a lock its own thread already holds (harvester once hung in ``Event.set`` on a
second SIGTERM) or break a write in progress. So the handlers here only store the signal number in an attribute,
and ``signal.set_wakeup_fd`` writes a byte to a pipe from C; the loop's owner sleeps in :meth:`SignalInbox.wait`
(which returns at once when that byte arrives) and then acts: sets its Events, logs, tells systemd, stops agents.
A second or third signal only stores the number again: never a deadlock, never a lost stop.
"""
import os
import select
import signal
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalInbox:
    """Stop signals (TERM, INT) and hang-ups (HUP) as they arrive, for the main thread's loop to act on.

    ``stop_signum``: the first stop signal's number (None: keep going). ``hangups``: hang-ups received so far
    (:meth:`take_hangup` says whether a new one arrived since the last call).
    """

    def __init__(self, extra=()):
        self.stop_signum = None
        self.hangups = 0
        self._hangups_seen = 0
        self._extra = tuple(extra)  # more signals that only wake the loop (SIGCHLD: a child exited)
        self._read_fd = self._write_fd = None
        self._previous = {}
        self._previous_fd = -1

    @property
    def installed(self):
        return self._read_fd is not None

    def install(self):
        """Route TERM, INT and HUP here; only the main thread can (elsewhere nothing changes and False comes
        back: the testbed runs the server on a thread of its own process)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self.record_stop)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.record_hangup)
        for signum in self._extra:
            self._previous[signum] = signal.signal(signum, self.record_nothing)
        return True

    def ignore_further(self):
        """Once the owner acts on a stop: more TERM/INT/HUP change nothing. Ignored, not recorded, because Python
        puts the default action (death by the signal) back while the interpreter exits, and a stop repeated
        then would end the process with the signal instead of its exit code; an ignored signal stays ignored."""
        if self._read_fd is None:
            return
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)

    def uninstall(self):
        """Put the previous handlers back and close the pipe."""
        if self._read_fd is None:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)
        self._read_fd = self._write_fd = None
        self._previous = {}

    # ---- the handlers: one attribute store each, nothing else (see the module's docstring) -------------------
    def record_stop(self, signum, frame=None):
        if self.stop_signum is None:
            self.stop_signum = signum

    def record_hangup(self, signum, frame=None):
        # A hang-up landing inside another's ``+= 1`` may be counted once for two: still counted, which is all
        # that matters (the file is re-read once either way).
        self.hangups += 1

    def record_nothing(self, signum, frame=None):
        pass

    # ---- the owner's side --------------------------------------------------------------------------------------
    @property
    def stop_name(self):
        return signal.Signals(self.stop_signum).name if self.stop_signum else ""

    def take_hangup(self):
        """True once per batch of hang-ups received since the last call."""
        count = self.hangups
        if count == self._hangups_seen:
            return False
        self._hangups_seen = count
        return True

    def wait(self, seconds):
        """Sleep up to ``seconds``; return early when a signal arrives (not installed: a plain timed sleep)."""
        if self._read_fd is None:
            time.sleep(max(0.0, seconds))
            return
        if self.stop_signum is not None or self.hangups != self._hangups_seen:
            seconds = 0  # arrived before this sleep: act now
        try:
            ready, _, _ = select.select([self._read_fd], [], [], max(0.0, seconds))
        except InterruptedError:
            ready = [self._read_fd]
        if ready:
            try:
                while os.read(self._read_fd, 512):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
