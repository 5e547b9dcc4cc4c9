"""harvester's SQLite file: open it, create the tables, hold the instance lease, and lease rows to agents.

One harvester process owns a home. It says so with the ``instance`` lease (owner, pid, host, expiry), refreshed
every cycle: a second ``harvester run`` refuses to start while that lease is live and its pid still runs, and takes
over when the first is dead, releasing every row lease the dead process held (it cannot finish that work).

Row leases (``lease_owner``/``lease_expires`` on workers) are claimed with one conditional UPDATE whose rowcount
says who won, the way Harvester pairs a time column with an owner column, so two agents (or two processes after a
takeover) never work on one row at once.
"""
import datetime
import json
import logging
import os
import socket
import threading

import peewee

from harvester import models
from harvester.errors import AlreadyRunning, HarvesterError
from harvester.states import utcnow

log = logging.getLogger(__name__)

SCHEMA_VERSION = 6  # 2: worker.n_pilots; 3: worker.waiting_pilots; 4: worker.error_code, held_job.cores;
# 5: worker.nodes and the allocation's figures (elapsed_s ... jobs_run); 6: queue_state.shape
ALLOCATION_COLUMNS = (("nodes", "INTEGER NOT NULL DEFAULT 1"), ("elapsed_s", "REAL"), ("charge_source", "VARCHAR(64)"),
                      ("payload_wall_s", "REAL"), ("payload_cpu_s", "REAL"), ("pilot_wait_s", "REAL"),
                      ("pilot_drain_s", "REAL"), ("jobs_run", "INTEGER"))
INSTANCE_LEASE_S = 120
PRAGMAS = {"journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 30000}


class Database(peewee.SqliteDatabase):
    """SQLite with write transactions queued on a Python lock: agent threads take turns at once instead of
    sleeping in SQLite's busy handler (the file lock still guards against other processes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._writer = threading.RLock()

    def begin(self, lock_type="IMMEDIATE"):
        self._writer.acquire()
        try:
            super().begin(lock_type)
        except BaseException:
            self._writer.release()
            raise

    def commit(self):
        try:
            super().commit()
        finally:
            self._writer.release()

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._writer.release()


def open_database(path):
    """Open (creating if needed) the database file and its tables; return the database."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    database = Database(path, pragmas=PRAGMAS, check_same_thread=False)
    models.database.initialize(database)
    database.connect(reuse_if_open=True)
    database.create_tables(models.ALL_MODELS, safe=True)
    with database.atomic():
        row = models.Setting.get_or_none(models.Setting.key == "schema_version")
        if row is None:
            models.Setting.create(key="schema_version", value=str(SCHEMA_VERSION))
        elif int(row.value) > SCHEMA_VERSION:
            raise RuntimeError(f"{path}: schema version {row.value} is newer than this harvester "
                               f"({SCHEMA_VERSION}); upgrade harvester")
        elif int(row.value) < SCHEMA_VERSION:
            _upgrade(database, int(row.value), path)
            row.value = str(SCHEMA_VERSION)
            row.save()
    return database


def _upgrade(database, version, path):
    """Bring a database written by an older harvester up to this schema (inside open_database's transaction)."""
    columns = {column.name for column in database.get_columns("worker")}
    if version < 2 and "n_pilots" not in columns:
        database.execute_sql("ALTER TABLE worker ADD COLUMN n_pilots INTEGER NOT NULL DEFAULT 1")
    if version < 3 and "waiting_pilots" not in columns:
        database.execute_sql("ALTER TABLE worker ADD COLUMN waiting_pilots INTEGER")
    if version < 4:
        if "error_code" not in columns:
            database.execute_sql("ALTER TABLE worker ADD COLUMN error_code INTEGER NOT NULL DEFAULT 0")
        if "cores" not in {column.name for column in database.get_columns("held_job")}:
            database.execute_sql("ALTER TABLE held_job ADD COLUMN cores INTEGER NOT NULL DEFAULT 1")
            for panda_id, definition in database.execute_sql("SELECT panda_id, definition FROM held_job"):
                database.execute_sql("UPDATE held_job SET cores = ? WHERE panda_id = ?",
                                     (job_cores(definition), panda_id))
    if version < 5:
        for name, kind in ALLOCATION_COLUMNS:
            if name not in columns:
                database.execute_sql(f"ALTER TABLE worker ADD COLUMN {name} {kind}")
    if version < 6 and "shape" not in {column.name for column in database.get_columns("queue_state")}:
        database.execute_sql("ALTER TABLE queue_state ADD COLUMN shape TEXT NOT NULL DEFAULT ''")
    log.info("%s: upgraded the schema from version %d to %d", path, version, SCHEMA_VERSION)


def backup(path, target):
    """Copy the harvester database ``path`` to ``target`` with SQLite's online backup API, while harvester runs:
    one step, one read transaction, so the copy holds what was committed when it began. Written as
    ``target.part``, checked with ``PRAGMA quick_check`` and synced before the rename. Returns its size."""
    import sqlite3

    if os.path.abspath(path) == os.path.abspath(target):
        raise HarvesterError(f"{target}: the backup would overwrite the database itself")
    partial = target + ".part"
    if os.path.exists(partial):
        os.unlink(partial)
    source = sqlite3.connect(path, timeout=30)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
            verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise HarvesterError(f"backup of {path} to {target} failed: {exc}") from None
    finally:
        source.close()
    if verdict != "ok":
        os.unlink(partial)
        raise HarvesterError(f"backup of {path}: the copy fails SQLite's quick_check ({verdict}); nothing kept")
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return os.path.getsize(target)


def job_cores(job):
    """The cores a job asks for (its ``coreCount``; 1 when it names none), from its dict or its JSON."""
    try:
        job = json.loads(job) if isinstance(job, str) else job
        return max(1, int(job.get("coreCount") or 1))
    except (ValueError, TypeError, AttributeError):
        return 1


def close_database():
    if not models.database.is_closed():
        models.database.close()


# ---- the instance lease ----------------------------------------------------------------------------------------
def owner_id():
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_instance(now=None, owner=None):
    """Take the ``instance`` lease for this process.

    Raises:
        AlreadyRunning: a live harvester (lease not expired and, on this host, its pid still running) holds it.

    Returns:
        The previous owner when it was taken over from a dead process (its row leases are released), else None.
    """
    now, owner = now or utcnow(), owner or owner_id()
    host, pid = socket.gethostname(), os.getpid()
    with models.database.atomic():
        row = models.Lease.get_or_none(models.Lease.name == "instance")
        previous = None
        if row is not None and row.owner != owner:
            dead = (row.host == host and not _pid_alive(row.pid)) or row.expires < now
            if not dead:
                raise AlreadyRunning(
                    f"another harvester (pid {row.pid} on {row.host}, started {row.started:%Y-%m-%d %H:%M:%S} UTC)"
                    f" uses this home; its lease runs until {row.expires:%H:%M:%S} UTC. Stop it first, or use "
                    f"another --home")
            previous = row.owner
            release_leases_of(previous)
            log.warning("took over from harvester %s, which is no longer running; its row leases are released",
                        previous)
        expires = now + datetime.timedelta(seconds=INSTANCE_LEASE_S)
        models.Lease.insert(name="instance", owner=owner, pid=pid, host=host, expires=expires, started=now) \
            .on_conflict_replace().execute()
    return previous


def refresh_instance(now=None, owner=None):
    """Extend this process's instance lease; False when someone else holds it now (then stop)."""
    now, owner = now or utcnow(), owner or owner_id()
    expires = now + datetime.timedelta(seconds=INSTANCE_LEASE_S)
    return bool(models.Lease.update(expires=expires).where(models.Lease.name == "instance",
                                                           models.Lease.owner == owner).execute())


def release_instance(owner=None):
    models.Lease.delete().where(models.Lease.name == "instance",
                                models.Lease.owner == (owner or owner_id())).execute()


def release_leases_of(owner):
    """Release the row leases of ``owner`` and of its agents (``owner/agent``)."""
    return (models.Worker.update(lease_owner=None, lease_expires=None)
            .where((models.Worker.lease_owner == owner) | models.Worker.lease_owner.startswith(owner + "/"))
            .execute())


# ---- row leases ------------------------------------------------------------------------------------------------
def claim_workers(owner, condition, seconds, now=None, limit=None, columns=None):
    """Lease the workers matching ``condition`` that nobody holds (or whose lease expired) to ``owner``.

    One conditional UPDATE decides; the claimed rows are then read back by owner. Returns the claimed rows, with
    only ``columns`` (Worker fields) filled when given: the monitor reads 10,000 rows a cycle.
    """
    now = now or utcnow()
    free = models.Worker.lease_owner.is_null() | (models.Worker.lease_expires < now)
    expires = now + datetime.timedelta(seconds=seconds)
    ids = models.Worker.select(models.Worker.worker_id).where(condition, free).order_by(models.Worker.worker_id)
    if limit:
        ids = ids.limit(limit)
    if not ids.exists():  # most cycles find nothing due: no write transaction for them (the UPDATE still decides)
        return []
    with models.database.atomic():
        (models.Worker.update(lease_owner=owner, lease_expires=expires)
         .where(models.Worker.worker_id.in_(ids), free).execute())
    fields = columns or ()
    return list(models.Worker.select(*fields).where(models.Worker.lease_owner == owner, condition,
                                             models.Worker.lease_expires == expires)
                .order_by(models.Worker.worker_id))


def release_workers(owner, worker_ids=None):
    query = models.Worker.update(lease_owner=None, lease_expires=None).where(models.Worker.lease_owner == owner)
    if worker_ids is not None:
        query = query.where(models.Worker.worker_id.in_(list(worker_ids)))
    return query.execute()


def queue_state(name):
    """The :class:`QueueState` row of ``name``, created on first use."""
    row, _ = models.QueueState.get_or_create(queue=name)
    return row
