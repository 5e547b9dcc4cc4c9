"""Database selection by URL and connection settings (schema versions: :mod:`minipanda.core.schema`).

``sqlite:///path/to/file.db`` (the default, under the minipanda home) or ``postgresql://user:pw@host:port/name``.
The models bind to :data:`database`, a proxy initialised once by :func:`minipanda.core.schema.open_database`.
"""
import logging
import os
import threading
import urllib.parse

import peewee
from minipanda.errors import DatabaseConfigError

log = logging.getLogger(__name__)

database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 30000,
    "cache_size": -32000,
    # SQLite's own checkpoint (every 1,000 WAL pages by default) runs inside the COMMIT that crosses the mark, i.e.
    # while this process's writer lock is held: its page copy and its two fsyncs stalled every other writer (0.3 to
    # 1.4 s of stalls per 20,000 jobs of bulk dispatch + finish). SqliteDatabase.commit checkpoints after releasing
    # the lock instead; this larger mark is only the backstop for writes outside a transaction.
    "wal_autocheckpoint": 10000,
}
CHECKPOINT_COMMITS = 64  # transactions between two checkpoints (a bulk claim or update writes ~30 WAL pages)


class SqliteDatabase(peewee.SqliteDatabase):
    """SQLite with one write transaction at a time per process, queued on a Python lock.

    SQLite allows one writer. A second BEGIN IMMEDIATE waits in SQLite's busy handler, which sleeps in growing
    steps (up to 100 ms) instead of waking when the lock is free: under 16 concurrent pilots that put getJob's p99
    near one second. Queued here, the next writer starts the moment the last one commits. Other processes (the
    CLI) still meet busy_timeout as before.

    Every CHECKPOINT_COMMITS commits, the thread that commits copies the WAL into the database file (a PASSIVE
    checkpoint, which never waits for nor blocks a writer) after it has released the lock, so the next writer does
    not wait for the copy and its fsyncs.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._writer = threading.Lock()
        self._holds = threading.local()
        self._checkpointing = threading.Lock()
        self.commits = 0  # since the last checkpoint (an approximate count: increments race, harmlessly)
        self.checkpoints = 0

    def begin(self, lock_type=None):
        self._writer.acquire()
        self._holds.writer = True
        try:
            super().begin(lock_type)
        except BaseException:
            self._release_writer()
            raise

    def _release_writer(self):
        if getattr(self._holds, "writer", False):
            self._holds.writer = False
            self._writer.release()

    def commit(self):
        try:
            super().commit()
        finally:
            self._release_writer()
        self.commits += 1
        if self.commits >= CHECKPOINT_COMMITS and self._checkpointing.acquire(blocking=False):
            try:
                self.commits = 0
                self.checkpoints += 1
                self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                self._checkpointing.release()

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._release_writer()


def default_url(home):
    """The embedded SQLite database under the minipanda home directory."""
    return "sqlite:///" + os.path.join(os.path.abspath(home), "minipanda.db")


def make_database(url):
    """Build (but do not connect) a peewee database for ``url``; raise DatabaseConfigError naming the problem."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise DatabaseConfigError(f"database URL {url!r}: expected sqlite:///PATH with a file path")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # IMMEDIATE: a write transaction takes the write lock at BEGIN, so two writers never deadlock on upgrade.
        return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=30, check_same_thread=False,
                                     lock_type="IMMEDIATE")
    if parsed.scheme in ("postgres", "postgresql"):
        try:
            import psycopg2  # noqa: F401
        except ImportError as exc:
            raise DatabaseConfigError(
                f"database URL {url!r} needs psycopg2: pip install 'minipanda[postgres]'") from exc
        if not parsed.path.strip("/"):
            raise DatabaseConfigError(f"database URL {url!r}: no database name after the host")
        return peewee.PostgresqlDatabase(
            parsed.path.lstrip("/"), user=urllib.parse.unquote(parsed.username or "") or None,
            password=urllib.parse.unquote(parsed.password or "") or None,
            host=parsed.hostname or None, port=parsed.port or None)
    raise DatabaseConfigError(f"database URL {url!r}: unknown scheme {parsed.scheme!r}; use sqlite:/// or postgresql://")


def is_postgres():
    """True when the bound database is PostgreSQL (dispatch then adds FOR UPDATE SKIP LOCKED)."""
    return isinstance(database.obj, peewee.PostgresqlDatabase)
