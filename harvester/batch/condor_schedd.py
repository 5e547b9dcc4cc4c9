"""How one HTCondor queue reaches its schedd: located once through the pool's collector (again after an error),
authenticated with the queue's methods, and every failure said in words naming the queue, the schedd and, when
authentication failed, the method.

Authentication: FS with the local schedd (the client proves its user through a directory it makes in /tmp), and
IDTOKENS only, with the token file named by ``batch.token_file``, wherever a queue gives one (a remote schedd);
a remote schedd without one is reached as the host's HTCondor configuration says. The bindings' configuration is
process-wide, so each call sets the queue's methods under one lock and puts the previous values back.
"""
import contextlib
import os
import shutil
import stat
import tempfile
import threading
import weakref

import htcondor2

from harvester.batch.base import RETRY, BatchError

ERRORS = (htcondor2.HTCondorException, RuntimeError, OSError, ValueError)  # what the bindings raise
_CONFIG_LOCK = threading.RLock()  # the bindings' configuration is one per process


class ScheddAccess:
    """One queue's way to its schedd. ``schedd_class(location...)`` and ``collector_class(pool)`` make the bindings'
    objects (the plugin passes its own, which tests replace with stand-ins)."""

    def __init__(self, queue, schedd_class, collector_class):
        self.queue, self.schedd_class, self.collector_class = queue, schedd_class, collector_class
        self._location = None  # the remote schedd's ad, located once through the collector
        self._token_dir = None  # a private directory holding the copy of batch.token_file the bindings read

    @contextlib.contextmanager
    def call(self, what):
        """The schedd, for one call named ``what`` (submit, query, remove), under this queue's authentication. A
        failure of the bindings becomes a retryable :class:`BatchError` in words, and the schedd is located
        again next time (it may have moved)."""
        try:
            with self.security():
                yield self.schedd()
        except ERRORS as exc:
            self._location = None
            raise BatchError(self.failure(what, exc), RETRY) from None

    def schedd(self):
        batch = self.queue.batch
        if not (batch.schedd or batch.pool):
            return self.schedd_class()
        if self._location is None:
            collector = self.collector_class(batch.pool)
            self._location = collector.locate(htcondor2.DaemonType.Schedd, batch.schedd)
        return self.schedd_class(self._location)

    def where(self):
        """The schedd in words, for messages."""
        batch = self.queue.batch
        if not (batch.schedd or batch.pool):
            return "the local schedd"
        name = batch.schedd or "the schedd"
        return f"schedd {name} of pool {batch.pool or 'of the local configuration'}"

    def methods(self):
        """The authentication methods this queue uses: IDTOKENS with a token file, FS with the local schedd, else
        None (the host's HTCondor configuration decides)."""
        batch = self.queue.batch
        if batch.token_file:
            return "IDTOKENS"
        return None if batch.schedd or batch.pool else "FS"

    @contextlib.contextmanager
    def security(self):
        """Hold the bindings' configuration for one call: this queue's authentication methods and token."""
        settings = {}
        if self.methods():
            settings["SEC_CLIENT_AUTHENTICATION_METHODS"] = self.methods()
        if self.queue.batch.token_file:
            settings["SEC_TOKEN_DIRECTORY"] = self._token_directory()
        with _CONFIG_LOCK:
            saved = {}
            for name, value in settings.items():
                try:
                    saved[name] = htcondor2.param[name]
                except KeyError:
                    saved[name] = None
                htcondor2.param[name] = value
            try:
                yield
            finally:
                for name, value in saved.items():
                    if value is None:
                        del htcondor2.param[name]
                    else:
                        htcondor2.param[name] = value

    def _token_directory(self):
        """A private directory holding a copy of batch.token_file (the bindings read every file of a token
        directory, and only those of mode 0600); the copy follows the file when it changes."""
        path = self.queue.batch.token_file
        try:
            info = os.stat(path)
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise BatchError(f"queue {self.queue.name}: cannot read batch.token_file {path} for IDTOKENS "
                             f"authentication with {self.where()}: {exc.strerror}", RETRY) from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise BatchError(f"queue {self.queue.name}: batch.token_file {path} for IDTOKENS authentication with "
                             f"{self.where()} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); a token "
                             "is a password: chmod 600 it", RETRY)
        if not token:
            raise BatchError(f"queue {self.queue.name}: batch.token_file {path} is empty: no IDTOKEN for IDTOKENS "
                             f"authentication with {self.where()}", RETRY)
        if self._token_dir is None:
            self._token_dir = tempfile.mkdtemp(prefix="minipanda-condor-token-")
            weakref.finalize(self, shutil.rmtree, self._token_dir, True)
        copy = os.path.join(self._token_dir, "token")
        if not os.path.exists(copy) or open(copy, encoding="utf-8").read() != token:
            fd = os.open(copy + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token)
            os.replace(copy + ".new", copy)
        return self._token_dir

    def failure(self, what, exc):
        """A failed call in words: the queue, the schedd and, when authentication failed, the method."""
        text = str(exc).strip() or type(exc).__name__
        if "AUTHENTICATE" in text:
            method = self.methods() or "the methods of the host's HTCondor configuration"
            token = f" with token file {self.queue.batch.token_file}" if self.queue.batch.token_file else ""
            return (f"queue {self.queue.name}: {self.where()} refused {what}: {method} authentication{token} "
                    f"failed: {text}")
        return f"queue {self.queue.name}: HTCondor {what} at {self.where()} failed: {text}"
