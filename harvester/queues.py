"""The queue file as harvester keeps it: reloaded when it changes (or on SIGHUP), one broken queue paused
without stopping the others, a file that cannot be read at all leaving the version in force."""
import logging
import os
import threading

from harvester.errors import HarvesterError
from queueconfig.loader import load_partial

log = logging.getLogger(__name__)


class QueueFile:
    """One queue file and the context it feeds.

    Args:
        path: the file.
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.context = None
        self.config, self.errors, self.file_errors = None, {}, []
        self._seen = None
        self._requested = threading.Event()

    def load(self):
        """Read the file; at start a file without one valid queue is an error."""
        self._seen = self._stamp()
        config, errors, file_errors = load_partial(self.path)
        if self.config is None and not any(not q.is_template for q in config.queues.values()):
            # At start, a file without one valid queue is a mistake to fix now, not a harvester with nothing to do.
            problems = file_errors + [m for ms in errors.values() for m in ms] or [
                f"{self.path}: no queues defined (only templates or nothing)"]
            raise HarvesterError(f"cannot use the queue file: no valid queue in it ({len(problems)} errors):\n  "
                                 + "\n  ".join(problems))
        if file_errors and self.config is not None:
            log.error("queue file %s: %s; the version in force stays", self.path, "; ".join(file_errors))
            self.file_errors = file_errors
            return False
        for message in config.warnings:
            log.warning("queue file: %s", message)
        self.config, self.errors, self.file_errors = config, errors, file_errors
        return True

    def apply(self):
        queues = {name: q for name, q in self.config.queues.items() if not q.is_template}
        self.context.set_queues(queues, self.errors, self.config.version_id)
        self.context.file_errors = list(self.file_errors)
        log.info("queue file %s version %s: %d queues in force%s", self.path, self.config.version_id, len(queues),
                 f", {len(self.errors)} paused for errors" if self.errors else "")

    def request(self):
        """SIGHUP (seen by the main loop, never called from the handler: this sets an Event): reload at the next
        check even if the file looks unchanged."""
        self._requested.set()

    def check(self):
        """Reload if the file changed; True when a new version took effect."""
        forced = self._requested.is_set()
        self._requested.clear()
        if not forced and self._stamp() == self._seen:
            return False
        if self.load():
            self.apply()
            return True
        return False

    def _stamp(self):
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino
