"""The archive: where the retention duty (:mod:`minipanda.tasks.retention`) moves jobs and tasks that ended long
ago, so that the live tables stay the size of the recent past however long the server runs.

- SQLite: one file per month beside the database, ``<stem>-archive-YYYY-MM.db`` next to ``<stem>.db``, for the
  month in which the job or task reached its final state. It holds tables of the same names and columns as the
  live ones, made from the live tables' own columns (so an archive follows every schema version: a column the
  live table gained later is added to an older archive when it is next written).
- PostgreSQL: tables ``<name>_archive`` in the same database, made the same way.

A move never needs a transaction spanning two files (SQLite gives none in WAL mode): the rows are first copied
into the archive (INSERT OR REPLACE: copying again is harmless) and committed there, then deleted from the live
tables in one short transaction, once the archive is seen to hold as many rows of each table as the live side.
A process killed between the two leaves the rows in both places; the next run copies them again (replacing
what is there) and deletes them. Lookups read the live tables first, so such a row is never shown twice. On
PostgreSQL copy and delete are one transaction. Copying reads the live database without its write lock; only
the delete takes it, for one batch.
"""
import datetime
import glob
import logging
import os
import re
import sqlite3

import peewee

from minipanda.core import models
from minipanda.core.db import database

log = logging.getLogger(__name__)

# What moves together: a job with its files and state history; a task with its history, inputs and brokerage.
# (table, column that names the job or task); the first table is the one the group is named by.
GROUPS = {
    "job": (("job", "panda_id"), ("job_file", "panda_id"), ("status_log", "panda_id")),
    "task": (("task", "jedi_task_id"), ("task_log", "task_id"), ("task_input", "task_id"),
             ("brokerage", "task_id")),
}
PRIMARY_KEYS = {"job": "panda_id", "job_file": "row_id", "status_log": "id", "task": "jedi_task_id",
                "task_log": "id", "task_input": "row_id", "brokerage": "id"}
# When a job or task ended: the month of its archive, and its age for expiry.
END_TIME = {"job": "state_changed_time", "task": "modification_time"}
MODELS = {"job": models.Job, "job_file": models.JobFile, "status_log": models.StatusLog, "task": models.Task,
          "task_log": models.TaskLog, "task_input": models.TaskInput, "brokerage": models.Brokerage}
MONTH_FILE = re.compile(r"-archive-(\d{4}-\d{2})\.db$")


class ArchiveError(Exception):
    """The archive could not take a batch; nothing was deleted from the live tables."""


def month_of(when):
    """'YYYY-MM' of a datetime (or of the text SQLite returns for one)."""
    if isinstance(when, str):
        return when[:7]
    return f"{when:%Y-%m}"


def month_end(month):
    """The first instant after ``month`` ('YYYY-MM')."""
    year, number = int(month[:4]), int(month[5:7])
    return datetime.datetime(year + number // 12, number % 12 + 1, 1)


def _quoted(names):
    return ", ".join(f'"{name}"' for name in names)


def live_columns(db, table):
    return [column.name for column in db.get_columns(table)]


def for_database(db=None):
    """The archive of the bound database (or ``db``): :class:`SqliteArchive` or :class:`PostgresArchive`."""
    db = db or database.obj
    if isinstance(db, peewee.PostgresqlDatabase):
        return PostgresArchive(db)
    if db.database == ":memory:":
        raise ArchiveError("an in-memory database has no archive")
    return SqliteArchive(db)


def prepare_tables(db):
    """Make the archive tables where they live in the database itself (PostgreSQL); nothing on SQLite."""
    if isinstance(db, peewee.PostgresqlDatabase):
        PostgresArchive(db).prepare()


def as_model(table, row):
    """A model instance of ``table`` from a {column: raw value} row (values converted as peewee reads them)."""
    model = MODELS[table]
    data = {}
    for column, value in row.items():
        field = model._meta.columns.get(column)
        if field is not None:
            data[field.name] = field.python_value(value) if value is not None else None
    instance = model(__no_default__=1)
    instance.__data__ = data
    return instance


class Archived:
    """A job or task found in the archive: its rows as model instances (read-only copies), and where."""

    def __init__(self, where, rows):
        self.where = where  # 'YYYY-MM' (SQLite file) or 'archive tables' (PostgreSQL)
        self.rows = rows  # {table: [model instances]} in primary-key order

    def first(self, table):
        return self.rows[table][0]


class SqliteArchive:
    """Month files beside the SQLite database ``db``."""

    def __init__(self, db):
        self.db = db
        self.live_path = os.path.abspath(db.database)
        self.base = os.path.splitext(self.live_path)[0]

    @classmethod
    def at(cls, path):
        """The archive of the SQLite file ``path``, to list and read its month files (not to move rows into)."""
        return cls(peewee.SqliteDatabase(path))

    def path(self, month):
        return f"{self.base}-archive-{month}.db"

    def months(self):
        """The months that have an archive file, oldest first."""
        found = []
        for path in glob.glob(glob.escape(self.base) + "-archive-*.db"):
            match = MONTH_FILE.search(path)
            if match:
                found.append(match.group(1))
        return sorted(found)

    def _connect(self, path, read_only=False):
        if read_only:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        else:
            conn = sqlite3.connect(path, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _prepare(self, conn, group):
        """Tables of ``group`` with every live column (added when the live schema grew), keyed as live."""
        for table, key in GROUPS[group]:
            live = self.db.get_columns(table)
            have = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
            if not have:
                columns = ", ".join(f'"{c.name}" {c.data_type or ""}'
                                    + (" PRIMARY KEY" if c.name == PRIMARY_KEYS[table] else "") for c in live)
                conn.execute(f'CREATE TABLE "{table}" ({columns})')
                if key != PRIMARY_KEYS[table]:
                    conn.execute(f'CREATE INDEX "{table}_{key}" ON "{table}" ("{key}")')
                continue
            for column in live:
                if column.name not in have:
                    conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column.name}" {column.data_type or ""}')

    def copy(self, group, month, ids):
        """Copy the rows of ``ids`` into month ``month``'s file and commit there; {table: rows held} after."""
        marks = ", ".join("?" * len(ids))
        conn = self._connect(self.path(month))
        try:
            with conn:
                self._prepare(conn, group)
            conn.execute("ATTACH DATABASE ? AS live", (self.live_path,))
            held = {}
            with conn:  # one transaction in the archive file; the live file is only read
                for table, key in GROUPS[group]:
                    columns = _quoted(live_columns(self.db, table))
                    conn.execute(f'INSERT OR REPLACE INTO main."{table}" ({columns}) SELECT {columns} FROM '
                                 f'live."{table}" WHERE "{key}" IN ({marks})', ids)
                    held[table] = conn.execute(f'SELECT COUNT(*) FROM main."{table}" WHERE "{key}" IN ({marks})',
                                               ids).fetchone()[0]
            conn.execute("DETACH DATABASE live")
            return held
        except sqlite3.Error as exc:
            raise ArchiveError(f"archive {self.path(month)}: {exc}") from None
        finally:
            conn.close()

    def move(self, group, by_month):
        """Move the ``{month: [ids]}`` of ``group`` out of the live tables; returns how many moved."""
        moved = 0
        for month, ids in sorted(by_month.items()):
            held = self.copy(group, month, ids)
            moved += delete_live(self.db, group, ids, held)
        return moved

    def find(self, group, ident):
        """The :class:`Archived` job or task ``ident``, newest month first; None when no archive has it."""
        for month in reversed(self.months()):
            try:
                conn = self._connect(self.path(month), read_only=True)
            except sqlite3.Error:
                continue
            try:
                rows = _read_group(conn, group, ident, "?")
            except sqlite3.Error as exc:  # a file being expired, or one that never got this group's tables
                log.debug("archive %s: %s", self.path(month), exc)
                rows = None
            finally:
                conn.close()
            if rows:
                return Archived(month, rows)
        return None

    def expire(self, cutoff):
        """Delete the month files whose month ended before ``cutoff``; {"files", "jobs", "tasks"} deleted."""
        out = {"files": 0, "jobs": 0, "tasks": 0}
        for month in self.months():
            if month_end(month) > cutoff:
                continue
            path = self.path(month)
            try:
                conn = self._connect(path, read_only=True)
                try:
                    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    counts = {g: conn.execute(f'SELECT COUNT(*) FROM "{g}"').fetchone()[0] if g in tables else 0
                              for g in ("job", "task")}
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                log.warning("archive %s: cannot count its rows before deleting it: %s", path, exc)
                counts = {"job": 0, "task": 0}
            for leftover in (path, path + "-journal", path + "-wal", path + "-shm"):
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass
            log.info("deleted archive %s (month %s ended before %s): %d jobs, %d tasks", path, month,
                     f"{cutoff:%Y-%m-%d}", counts["job"], counts["task"])
            out["files"] += 1
            out["jobs"] += counts["job"]
            out["tasks"] += counts["task"]
        return out


def _read_group(conn, group, ident, mark, suffix=""):
    """{table: [model instances]} of one job or task from a DB-API connection, or None when it is not there."""
    rows = {}
    for index, (table, key) in enumerate(GROUPS[group]):
        cursor = conn.execute(f'SELECT * FROM "{table}{suffix}" WHERE "{key}" = {mark} ORDER BY '
                              f'"{PRIMARY_KEYS[table]}"', (ident,))
        names = [d[0] for d in cursor.description]
        found = [as_model(table, dict(zip(names, row))) for row in cursor.fetchall()]
        if index == 0 and not found:
            return None
        rows[table] = found
    return rows


def delete_live(db, group, ids, held):
    """Delete ``ids`` of ``group`` from the live tables in one transaction, when the archive ``held`` as many rows
    of each table as the live side has; else nothing is deleted (ArchiveError). Returns the rows of the group's
    first table deleted."""
    marks = ", ".join([db.param] * len(ids))
    with db.atomic():
        for table, key in GROUPS[group]:
            live = db.execute_sql(f'SELECT COUNT(*) FROM "{table}" WHERE "{key}" IN ({marks})', ids).fetchone()[0]
            if live != held.get(table):
                raise ArchiveError(f"{table}: {live} live rows of the batch, the archive holds {held.get(table)}; "
                                   "nothing deleted (the next run copies the batch again)")
        for table, key in reversed(GROUPS[group]):
            cursor = db.execute_sql(f'DELETE FROM "{table}" WHERE "{key}" IN ({marks})', ids)
        return cursor.rowcount


class PostgresArchive:
    """``<table>_archive`` tables in the same PostgreSQL database."""

    def __init__(self, db):
        self.db = db

    def prepare(self):
        """Create the archive tables (columns as the live ones, no constraints but the keys) and add columns the
        live tables gained since."""
        db = self.db
        for group, tables in GROUPS.items():
            for table, key in tables:
                archive = f"{table}_archive"
                db.execute_sql(f'CREATE TABLE IF NOT EXISTS "{archive}" (LIKE "{table}")')
                db.execute_sql(f'CREATE UNIQUE INDEX IF NOT EXISTS "{archive}_pk" ON "{archive}" '
                               f'("{PRIMARY_KEYS[table]}")')
                if key != PRIMARY_KEYS[table]:
                    db.execute_sql(f'CREATE INDEX IF NOT EXISTS "{archive}_{key}" ON "{archive}" ("{key}")')
                have = set(live_columns(db, archive))
                types = db.execute_sql(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = "
                    "%s::regclass AND a.attnum > 0 AND NOT a.attisdropped", (f'"{table}"',)).fetchall()
                for name, kind in types:
                    if name not in have:
                        db.execute_sql(f'ALTER TABLE "{archive}" ADD COLUMN "{name}" {kind}')
            first = tables[0][0]
            db.execute_sql(f'CREATE INDEX IF NOT EXISTS "{first}_archive_end" ON "{first}_archive" '
                           f'("{END_TIME[group]}")')

    def months(self):
        return []

    def move(self, group, by_month):
        ids = [i for month_ids in by_month.values() for i in month_ids]
        if not ids:
            return 0
        db = self.db
        marks = ", ".join([db.param] * len(ids))
        with db.atomic():
            held = {}
            for table, key in GROUPS[group]:
                columns = _quoted(live_columns(db, table))
                db.execute_sql(f'INSERT INTO "{table}_archive" ({columns}) SELECT {columns} FROM "{table}" WHERE '
                               f'"{key}" IN ({marks}) ON CONFLICT DO NOTHING', ids)
                held[table] = db.execute_sql(f'SELECT COUNT(*) FROM "{table}_archive" WHERE "{key}" IN ({marks})',
                                             ids).fetchone()[0]
            return delete_live(db, group, ids, held)

    def find(self, group, ident):
        cursor_db = _CursorAdapter(self.db)
        rows = _read_group(cursor_db, group, ident, self.db.param, suffix="_archive")
        return Archived("archive tables", rows) if rows else None

    def expire(self, cutoff, batch=1000):
        """Delete archived jobs and tasks that ended before ``cutoff``, in batches; {"files", "jobs", "tasks"}."""
        out = {"files": 0, "jobs": 0, "tasks": 0}
        for group, name in (("job", "jobs"), ("task", "tasks")):
            first, key = GROUPS[group][0]
            while True:
                with self.db.atomic():
                    ids = [row[0] for row in self.db.execute_sql(
                        f'SELECT "{key}" FROM "{first}_archive" WHERE "{END_TIME[group]}" < %s LIMIT %s',
                        (cutoff, batch)).fetchall()]
                    if not ids:
                        break
                    marks = ", ".join(["%s"] * len(ids))
                    for table, column in reversed(GROUPS[group]):
                        self.db.execute_sql(f'DELETE FROM "{table}_archive" WHERE "{column}" IN ({marks})', ids)
                out[name] += len(ids)
        if out["jobs"] or out["tasks"]:
            log.info("deleted %d archived jobs and %d archived tasks that ended before %s", out["jobs"],
                     out["tasks"], f"{cutoff:%Y-%m-%d}")
        return out


class _CursorAdapter:
    """``execute()`` returning a cursor, as sqlite3 connections have, over a peewee database."""

    def __init__(self, db):
        self.db = db

    def execute(self, sql, params):
        return self.db.execute_sql(sql, params)


def find(group, ident):
    """The archived job (``group`` 'job', a PandaID) or task ('task', a jediTaskID), or None."""
    try:
        return for_database().find(group, ident)
    except ArchiveError:
        return None
