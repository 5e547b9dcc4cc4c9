"""Picking up an edited queue file without a restart; the caller drives it (no thread inside).

The server and harvester call :meth:`ConfigReloader.check` from a periodic thread, and :meth:`ConfigReloader.request`
from their SIGHUP handler (a handler must not load files itself: it may interrupt a check in progress). An invalid
edit is logged with all its errors and the version in force stays; the errors are not logged again until the file
changes once more.
"""
import logging
import os
import threading

from queueconfig.errors import ConfigError
from queueconfig.loader import load

log = logging.getLogger("queueconfig")


class ConfigReloader:
    """Keeps the newest valid version of one queue file.

    Args:
        path: the queue file.
        on_change: called as ``on_change(new, old)`` with two :class:`queueconfig.QueueConfig` (``old`` is None
            the first time) whenever a new version takes effect. If it raises, the exception propagates, the new
            version is not taken as in force, and the next check tries again.
        initial: a version already loaded from ``path`` (e.g. at start, to fail fast); the first check then only
            reads the file again and reports no change unless its content differs.
        logger: where to log; default the "queueconfig" logger.

    Attributes:
        current: the version in force, or None before the first good load.
        last_errors: the errors of the last refused edit (empty after a good load).
    """

    def __init__(self, path, on_change=None, initial=None, logger=None):
        self.path = os.fspath(path)
        self.on_change = on_change
        self.current = initial
        self.last_errors = []
        self.log = logger or log
        self._seen = None  # (mtime_ns, size, inode) of the file content last looked at
        self._requested = threading.Event()
        self._lock = threading.Lock()

    def request(self):
        """Ask for a reload at the next :meth:`check` even if the modification time did not change (SIGHUP)."""
        self._requested.set()

    def check(self, force=False):
        """Load the file if it changed (or a reload was requested); keep the old version if it is invalid.

        Args:
            force: reload even if the file looks unchanged.

        Returns:
            True when a new version took effect (``on_change`` was called), else False.
        """
        with self._lock:
            force = force or self._requested.is_set()
            self._requested.clear()
            try:
                stat = os.stat(self.path)
            except OSError as exc:
                if self._seen != "missing":
                    self.log.error("queue config %s: cannot read: %s; keeping version %s", self.path,
                                   exc.strerror, self._version())
                self._seen = "missing"
                return False
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if signature == self._seen and not force:
                return False
            self._seen = signature
            return self._reload()

    def _reload(self):
        try:
            new = load(self.path)
        except ConfigError as exc:
            self.last_errors = exc.errors
            self.log.error("queue config %s: edit refused (%d errors), keeping version %s:\n  %s", self.path,
                           len(exc.errors), self._version(), "\n  ".join(exc.errors))
            return False
        self.last_errors = []
        for warning in new.warnings:
            self.log.warning("queue config %s", warning)
        if self.current is not None and new.version_id == self.current.version_id:
            return False
        old = self.current
        if self.on_change is not None:
            try:
                self.on_change(new, old)
            except BaseException:
                self._seen = None  # try again at the next check
                raise
        self.current = new
        self.log.info("queue config %s: version %s in force (%d queues%s)", self.path, new.version_id,
                      len(new.queues), f", was {old.version_id}" if old else "")
        return True

    def _version(self):
        return self.current.version_id if self.current else "none"
