"""Schema versions: a new database gets the current tables and :data:`SCHEMA_VERSION`; an older one is brought
forward one step at a time, each step in its own transaction, and never loses data.

:func:`open_database` is where a process binds the models (:mod:`minipanda.core.models`) to a database URL.
"""
import logging

import peewee
from minipanda.core import counts, fairshare, models
from minipanda.core.db import database, make_database
from minipanda.errors import DatabaseConfigError
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

log = logging.getLogger(__name__)


def open_database(url):
    """Bind the models to ``url``, create or upgrade the schema, and return the database."""
    db = make_database(url)
    database.initialize(db)
    fairshare.forget()  # the pilots remembered asking for work, and the counts, are the database bound before's
    db.connect(reuse_if_open=True)
    try:
        upgrade_schema(db)
    finally:
        db.close()
    return db


# ---- versions -------------------------------------------------------------------------------------------
# A new database gets the current tables and SCHEMA_VERSION. An older one is brought forward one step at a time by
# MIGRATIONS[n] (n = the version it produces); each step is written with playhouse.migrate so it runs on SQLite
# and PostgreSQL alike, and never drops data.

def _migration_2(db, migrator):
    migrate(
        migrator.add_column("job", "harvester_id", models.Job.harvester_id),
        migrator.add_column("job", "worker_id", models.Job.worker_id),
    )


def _migration_3(db, migrator):
    """Tasks: the task, dataset, file, task_input, brokerage and retry_rule tables, three job columns."""
    db.create_tables(models.TASK_MODELS, safe=True)
    migrate(
        migrator.add_column("job", "scout", models.Job.scout),
        migrator.add_column("job", "settled", models.Job.settled),
        migrator.add_column("job", "brokerage_id", models.Job.brokerage_id),
    )
    # Jobs that existed before tasks belong to no task: nothing to settle.
    db.execute_sql('UPDATE "job" SET "scout" = %s, "settled" = %s' % ((db.param,) * 2), (False, True))
    # the job_settled_status and job_task_status indexes of this step are made as they are now by step 11
    start_task_ids(db)


def start_task_ids(db):
    """Make PostgreSQL's task id sequence start at FIRST_TASK_ID (SQLite tasks pick their id on insert)."""
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("SELECT setval(pg_get_serial_sequence('task', 'jedi_task_id'), GREATEST(%s, "
                       "COALESCE((SELECT MAX(jedi_task_id) FROM task), 0)))", (models.FIRST_TASK_ID - 1,))


def _migration_4(db, migrator):
    """Harvester: the worker as harvester reports it; harvester instances, commands and worker statistics."""
    Worker = models.Worker
    db.create_tables(models.HARVESTER_MODELS, safe=True)
    if "worker" not in db.get_tables():  # a version 1 database never had one: it is made whole, as it is now
        db.create_tables([Worker])
        return
    migrate(*[migrator.add_column("worker", field.column_name, field) for field in
              (Worker.status, Worker.batch_id, Worker.n_core, Worker.n_memory, Worker.walltime, Worker.submit_time,
               Worker.diag, Worker.access_point, Worker.pandaid_list)])
    db.execute_sql('CREATE INDEX IF NOT EXISTS "worker_site_status" ON "worker" ("computing_site", "status")')


def _migration_5(db, migrator):
    """status_log.kind: notes about a job that keeps its state are told apart from transitions."""
    migrate(migrator.add_column("status_log", "kind", models.StatusLog.kind))
    db.execute_sql('UPDATE "status_log" SET "kind" = %s WHERE "old_status" = "new_status"' % db.param, ("note",))


def _migration_6(db, migrator):
    """harvester_instance.agents: each harvester agent's cycle figures from its heartbeat, for /metrics."""
    # step 4 creates the harvester tables from today's models, so an upgrade from before 4 already has the column
    if "agents" not in {column.name for column in db.get_columns("harvester_instance")}:
        migrate(migrator.add_column("harvester_instance", "agents", models.HarvesterInstance.agents))


def _migration_7(db, migrator):
    """harvester_instance.report: its queues' pauses and backoffs and its home's disk, for /metrics."""
    if "report" not in {column.name for column in db.get_columns("harvester_instance")}:
        migrate(migrator.add_column("harvester_instance", "report", models.HarvesterInstance.report))


def _migration_8(db, migrator):
    """Retention: file.fetched_time and an index on file.lfn, indexes on job.modification_time (the monitor's
    lists) and on (job.status, job.state_changed_time) (its charts, old final jobs), the retention_stat table, and
    on PostgreSQL the archive tables (minipanda.core.archive; on SQLite the archive is a file per month, made when
    first used)."""
    if "fetched_time" not in {column.name for column in db.get_columns("file")}:
        migrate(migrator.add_column("file", "fetched_time", models.DatasetFile.fetched_time))
    db.execute_sql('CREATE INDEX IF NOT EXISTS "file_lfn" ON "file" ("lfn")')
    db.execute_sql('CREATE INDEX IF NOT EXISTS "job_modification" ON "job" ("modification_time", "panda_id")')
    db.execute_sql('CREATE INDEX IF NOT EXISTS "job_status_changed" ON "job" ("status", "state_changed_time")')
    db.create_tables([models.RetentionStat], safe=True)
    from minipanda.core import archive

    archive.prepare_tables(db)


def _migration_9(db, migrator):
    """Live counts of jobs by (task, queue, state) and of inputs by (task, state), kept by triggers
    (minipanda.core.counts): the monitor's pages read them instead of counting every live row."""
    counts.install(db)


def _migration_10(db, migrator):
    """worker: what an ended allocation delivered (nodes, the time charged, the pilots' payload and idle time)."""
    have = {column.name for column in db.get_columns("worker")}  # step 4 may have made the table as it is now
    W = models.Worker
    migrate(*[migrator.add_column("worker", field.column_name, field) for field in (
        W.n_nodes, W.elapsed_s, W.charge_source, W.payload_wall_s, W.payload_cpu_s, W.pilot_wait_s, W.pilot_drain_s,
        W.jobs_run) if field.column_name not in have])


# Partial indexes of the job table (schema 11): each covers only the rows its queries read, so a state change
# rewrites fewer index entries (a bulk dispatch + finish rewrote five per change). (name, columns, condition); a
# false is written per database (SQLite stores 0; PostgreSQL has booleans), and each condition is one the queries
# imply: dispatch's pick says status = 'activated', the settle duty settled = false, a task's jobs task_id = ?.
JOB_INDEXES = (
    # dispatch reads activated jobs of one queue in (priority desc, id) order: the index serves that ORDER BY
    ("job_dispatch_order", '"computing_site", "current_priority" DESC, "panda_id"', "\"status\" = 'activated'"),
    # the settle duty: jobs that reached a final state and that the task side has not taken note of yet
    ("job_settled_status", '"status"', '"settled" = {false}'),
    # a task's jobs by state (kill, settle, retry, scouts); jobs of no task are not in it
    ("job_task_status", '"task_id", "status"', '"task_id" IS NOT NULL'),
)


def create_job_indexes(db):
    false = "false" if isinstance(db, peewee.PostgresqlDatabase) else "0"
    for name, columns, condition in JOB_INDEXES:
        db.execute_sql(f'CREATE INDEX IF NOT EXISTS "{name}" ON "job" ({columns}) WHERE '
                       + condition.format(false=false))


def _migration_11(db, migrator):
    """The job table's dispatch, settled and task indexes made partial (JOB_INDEXES); on SQLite the bulk paths
    count their own jobs (the triggers pause for them, minipanda.core.counts.bulk_jobs), so the counts are
    installed again and recounted."""
    for name, _, _ in JOB_INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
    create_job_indexes(db)
    counts.install(db)


def _migration_12(db, migrator):
    """The job_modification index dropped: the monitor's lists, most recently changed first, read the newest jobs
    of each state from job_status_changed (a job's modification_time is its state_changed_time), and every state
    change rewrote two entries of it (a tenth of SQLite's work in bulk dispatch + finish)."""
    db.execute_sql('DROP INDEX IF EXISTS "job_modification"')


MIGRATIONS = {2: _migration_2, 3: _migration_3, 4: _migration_4, 5: _migration_5, 6: _migration_6, 7: _migration_7,
              8: _migration_8, 9: _migration_9, 10: _migration_10, 11: _migration_11, 12: _migration_12}
SCHEMA_VERSION = 12


def schema_version(db):
    """The version recorded in the config table, or None for an empty database."""
    if "config" not in db.get_tables():
        return None
    row = db.execute_sql("SELECT value FROM config WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


# pg_advisory_lock's key for creating or upgrading the schema (any constant; "mpschema" in ASCII)
SCHEMA_LOCK_KEY = 0x6D70736368656D61


def upgrade_schema(db):
    """Create a fresh schema or upgrade an older one to :data:`SCHEMA_VERSION`, one transaction per step.

    On PostgreSQL the whole of it holds an advisory lock: servers (or tools) started at once on one database take
    turns, and the second finds the schema made (two CREATE TABLEs of one name at once make PostgreSQL refuse the
    second with a unique violation on its catalog, which stopped a server at start)."""
    if not isinstance(db, peewee.PostgresqlDatabase):
        _upgrade_schema(db)
        return
    db.execute_sql("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
    try:
        _upgrade_schema(db)
    finally:
        db.execute_sql("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


def _upgrade_schema(db):
    version = schema_version(db)
    if version is None:
        with db.atomic():
            db.create_tables(models.ALL_MODELS)
            create_job_indexes(db)
            start_task_ids(db)
            from minipanda.core import archive

            archive.prepare_tables(db)
            counts.install(db)
            models.Config.insert(key="schema_version", value=str(SCHEMA_VERSION)).execute()
        log.info("created database schema version %d", SCHEMA_VERSION)
        return
    if version > SCHEMA_VERSION:
        raise DatabaseConfigError(
            f"database schema version {version} is newer than this minipanda ({SCHEMA_VERSION}); upgrade minipanda")
    migrator = PostgresqlMigrator(db) if isinstance(db, peewee.PostgresqlDatabase) else SqliteMigrator(db)
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with db.atomic():
            MIGRATIONS[target](db, migrator)
            models.Config.update(value=str(target)).where(models.Config.key == "schema_version").execute()
        log.info("upgraded database schema from version %d to %d", target - 1, target)
    # Tables added in later versions that an older database never had are created here (no-op when present).
    db.create_tables(models.ALL_MODELS, safe=True)
