"""Database selection by URL, connection settings, and schema upgrade without loss."""
import os
import sqlite3

import peewee
import pytest
from conftest import LiveServer, make_job
from minipanda import errors
from minipanda.core import db, models, schema

DATA = os.path.join(os.path.dirname(__file__), "data")


def test_sqlite_pragmas(tmp_path):
    database = schema.open_database("sqlite:///" + str(tmp_path / "x.db"))
    database.connect(reuse_if_open=True)
    assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert database.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert database.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 1000
    database.close()


def test_the_wal_is_checkpointed_after_the_writer_lock_is_released(tmp_path, monkeypatch):
    """Every CHECKPOINT_COMMITS write transactions the committing thread copies the WAL into the database file, and
    only once it has released the writer lock: another writer never waits for the copy and its fsyncs."""
    database = schema.open_database("sqlite:///" + str(tmp_path / "x.db"))
    database.connect(reuse_if_open=True)
    assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 10000  # SQLite's own: the backstop
    connection = database.connection()
    seen = []

    class Watched:  # the connection, noting whether the writer lock is free when a checkpoint starts
        def execute(self, sql, *args):
            if "wal_checkpoint" in sql:
                free = database._writer.acquire(blocking=False)
                if free:
                    database._writer.release()
                seen.append(free)
            return connection.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(connection, name)

    monkeypatch.setattr(database, "connection", lambda: Watched())
    database.commits = 0
    for n in range(2 * db.CHECKPOINT_COMMITS + 1):
        with database.atomic():
            models.Config.insert(key=f"k{n}", value="x" * 3000).execute()
    assert seen == [True, True]
    # what the two checkpoints copied is in the database file itself (read without the WAL); the last row is not yet
    plain = sqlite3.connect(f"file:{tmp_path / 'x.db'}?immutable=1", uri=True)
    assert plain.execute("SELECT COUNT(*) FROM config WHERE key LIKE 'k%'").fetchone()[0] == \
        2 * db.CHECKPOINT_COMMITS
    plain.close()
    database.close()


@pytest.mark.parametrize("url, message", [
    ("mysql://x/y", "unknown scheme 'mysql'"),
    ("sqlite://relative.db", "expected sqlite:///PATH"),
    ("postgresql://localhost", "no database name"),
])
def test_bad_urls_are_named(url, message):
    with pytest.raises(errors.DatabaseConfigError, match=message):
        db.make_database(url)


def test_fresh_database_gets_current_version(database):
    assert schema.schema_version(database) == schema.SCHEMA_VERSION


def test_newer_database_is_refused(tmp_path):
    url = "sqlite:///" + str(tmp_path / "x.db")
    database = schema.open_database(url)
    database.connect(reuse_if_open=True)
    models.Config.update(value="999").where(models.Config.key == "schema_version").execute()
    database.close()
    with pytest.raises(errors.DatabaseConfigError, match="version 999 is newer"):
        schema.open_database(url)


def make_v1_database(path):
    """A database as minipanda schema version 1 left it, holding one activated job with a file."""
    conn = sqlite3.connect(path)
    with open(os.path.join(DATA, "schema_v1.sqlite.sql")) as handle:
        conn.executescript(handle.read())
    now = "2026-01-01 00:00:00"
    conn.execute(
        "INSERT INTO job (panda_id, job_definition_id, jobset_id, job_name, status, computing_site, prod_source_label,"
        " prod_user_name, transformation, job_pars, attempt_nr, max_attempt, current_priority, assigned_priority,"
        " core_count, min_ram_count, max_walltime, max_cpu_count, max_disk_count, creation_time, modification_time,"
        " state_changed_time, attributes) VALUES (41, 0, 0, 'old.job', 'activated', 'OLD_Q', 'managed', 'bob',"
        " '/bin/true', '', 0, 3, 900, 900, 1, 0, 0, 0, 0, ?, ?, ?, '{\"cloud\": \"WORLD\"}')", (now, now, now))
    conn.execute("INSERT INTO job_file (panda_id, type, lfn, status) VALUES (41, 'log', 'old.log.tgz', 'defined')")
    conn.commit()
    conn.close()


def test_v1_database_is_upgraded_without_loss(tmp_path):
    path = str(tmp_path / "old.db")
    make_v1_database(path)
    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    assert schema.schema_version(database) == schema.SCHEMA_VERSION
    job = models.Job.get_by_id(41)
    assert (job.job_name, job.prod_user_name, job.current_priority, job.harvester_id) == ("old.job", "bob", 900, None)
    assert [f.lfn for f in job.files] == ["old.log.tgz"]
    assert "worker" in database.get_tables()
    database.close()


def test_server_starts_on_v1_database_and_dispatches_old_job(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    make_v1_database(str(home / "minipanda.db"))
    server = LiveServer(home, "sqlite:///" + str(home / "minipanda.db"))
    try:
        import requests

        reply = requests.post(server.url + "/server/panda/getJob", data={"computingElement": "OLD_Q", "node": "n"},
                              headers=server.headers()).json()
        assert reply["PandaID"] == 41 and reply["jobName"] == "old.job"
        assert "upgraded database schema from version 1 to 2" in server.read_log()
    finally:
        server.stop()


def make_v3_database(path):
    """A database as minipanda schema version 3 left it, with a worker a pilot reported (updateWorkerPilotStatus)."""
    conn = sqlite3.connect(path)
    with open(os.path.join(DATA, "schema_v3.sqlite.sql")) as handle:
        conn.executescript(handle.read())
    conn.execute("INSERT INTO worker (harvester_id, worker_id, computing_site, pilot_status, node, start_time,"
                 " modification_time) VALUES ('h1', 9, 'OLD_Q', 'started', 'wn9', '2026-01-01 00:00:00',"
                 " '2026-01-01 00:00:00')")
    conn.commit()
    conn.close()


def test_v3_database_gets_the_harvester_tables_and_keeps_its_workers(tmp_path):
    path = str(tmp_path / "v3.db")
    make_v3_database(path)
    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    assert schema.schema_version(database) == schema.SCHEMA_VERSION
    tables = database.get_tables()
    assert {"harvester_instance", "harvester_command", "worker_statistics"} <= set(tables)
    old = models.Worker.get(models.Worker.worker_id == 9)
    assert (old.harvester_id, old.pilot_status, old.node, old.status, old.pandaid_list) == (
        "h1", "started", "wn9", None, None)
    from minipanda.workers import harvesters

    assert harvesters.update_workers("h1", [{"workerID": 9, "computingSite": "OLD_Q", "status": "running",
                                             "batchID": "42"}]) == [True]
    new = models.Worker.get(models.Worker.worker_id == 9)
    assert (new.status, new.batch_id, new.pilot_status, new.node) == ("running", "42", "started", "wn9")
    database.close()


def reopened_older(tmp_path, version, *statements):
    """A database as version ``version`` left it (``statements`` take away what came later and add rows), opened
    again by this version: the upgraded database, connected."""
    path = str(tmp_path / f"v{version}.db")
    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    for statement in statements:
        database.execute_sql(statement)
    database.execute_sql(f"UPDATE config SET value = '{version}' WHERE key = 'schema_version'")
    database.close()
    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    return database


def test_v4_database_tells_retry_notes_apart_from_transitions(tmp_path):
    database = reopened_older(
        tmp_path, 4, 'ALTER TABLE "status_log" DROP COLUMN "kind"',
        "INSERT INTO status_log (panda_id, old_status, new_status, time, reason) VALUES "
        "(1, 'sent', 'failed', '2026-01-01 00:00:00', 'pilot reported failed'), "
        "(1, 'failed', 'failed', '2026-01-01 00:00:01', 'retry: new attempt')")
    assert schema.schema_version(database) == schema.SCHEMA_VERSION
    kinds = [(r.old_status, r.new_status, r.kind) for r in models.StatusLog.select().order_by(models.StatusLog.id)]
    assert kinds == [("sent", "failed", "transition"), ("failed", "failed", "note")]
    database.close()


def test_v5_database_gets_the_harvester_agent_figures_column(tmp_path):
    database = reopened_older(
        tmp_path, 5, 'ALTER TABLE "harvester_instance" DROP COLUMN "agents"',
        "INSERT INTO harvester_instance (harvester_id, host, version, last_heartbeat) VALUES "
        "('h1', 'host1', '0.1.0', '2026-01-01 00:00:00')")
    assert schema.schema_version(database) == schema.SCHEMA_VERSION
    row = models.HarvesterInstance.get_by_id("h1")
    assert (row.host, row.agents) == ("host1", None)
    database.close()


def test_v6_database_gets_the_harvester_report_column(tmp_path):
    database = reopened_older(
        tmp_path, 6, 'ALTER TABLE "harvester_instance" DROP COLUMN "report"',
        "INSERT INTO harvester_instance (harvester_id, host, version, last_heartbeat, agents) VALUES "
        "('h1', 'host1', '0.1.0', '2026-01-01 00:00:00', '{}')")
    assert schema.schema_version(database) == schema.SCHEMA_VERSION
    row = models.HarvesterInstance.get_by_id("h1")
    assert (row.host, row.agents, row.report) == ("host1", "{}", None)
    database.close()


def test_v7_database_gets_the_retention_columns_and_table(tmp_path):
    database = reopened_older(
        tmp_path, 7, 'DROP INDEX "file_lfn"', 'DROP INDEX "job_status_changed"',
        'DROP TABLE "retention_stat"',
        'ALTER TABLE "file" DROP COLUMN "fetched_time"',
        "INSERT INTO dataset (name, type, user_name, creation_time, modification_time) VALUES "
        "('ds1', 'output', 'bob', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        "INSERT INTO file (dataset_id, lfn, guid, fsize, checksum, location, status, creation_time) VALUES "
        "(1, 'a.root', 'g', 5, 'ad:1', '/data', 'ready', '2026-01-01 00:00:00')")
    assert schema.schema_version(database) == schema.SCHEMA_VERSION
    row = models.DatasetFile.get(models.DatasetFile.lfn == "a.root")
    assert (row.fsize, row.location, row.fetched_time) == (5, "/data", None)
    assert "file_lfn" in {index.name for index in database.get_indexes("file")}
    assert "job_status_changed" in {index.name for index in database.get_indexes("job")}  # job_modification: 8 to 11
    assert "retention_stat" in database.get_tables()
    database.close()


def test_oldest_database_upgrades_and_its_jobs_can_be_archived(tmp_path):
    """A version 1 database (the oldest) comes forward through every step, and its jobs move to the archive."""
    import datetime

    from minipanda.core import archive
    from minipanda.tasks import retention, settings

    path = str(tmp_path / "old.db")
    make_v1_database(path)
    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    assert schema.schema_version(database) == schema.SCHEMA_VERSION
    models.Job.update(status="finished").where(models.Job.panda_id == 41).execute()
    newer = models.Job.create(job_name="newer", status="activated", computing_site="OLD_Q", creation_time="2026-05-01",
                              modification_time="2026-05-01", state_changed_time="2026-05-01")
    models.JobFile.create(job=newer.panda_id, type="log", lfn="newer.log.tgz")  # the newest rows stay live
    done = retention.run(settings.Settings(), str(tmp_path), datetime.datetime(2026, 6, 1))
    assert done["jobs_archived"] == (1, 0)
    found = archive.find("job", 41)
    assert (found.where, found.first("job").job_name, [f.lfn for f in found.rows["job_file"]]) == (
        "2026-01", "old.job", ["old.log.tgz"])
    database.close()


STARTERS = """
import sys, time
from minipanda.core import schema
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
schema.open_database(sys.argv[1])
"""


@pytest.mark.postgres
def test_servers_started_at_once_on_an_empty_postgresql_database_all_come_up():
    """Four processes create the schema of one empty PostgreSQL database at the same moment, five times: each
    comes up (they take turns; without that, two CREATE TABLEs of one name at once made PostgreSQL refuse one of
    them with a unique violation on its catalog, and that server died at start)."""
    import subprocess
    import sys
    import time

    from conftest import PG_URL, reset_postgres

    if not PG_URL:
        pytest.skip("needs MINIPANDA_TEST_PG_URL (PostgreSQL)")
    for _ in range(5):
        reset_postgres(PG_URL)
        start = time.time() + 3.0  # every process imported by then
        procs = [subprocess.Popen([sys.executable, "-c", STARTERS, PG_URL, repr(start)], stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        failures = [err[-2000:] for proc in procs for err in [proc.communicate(timeout=120)[1]] if proc.returncode]
        assert not failures, failures[0]
        database = schema.open_database(PG_URL)
        database.connect(reuse_if_open=True)
        try:
            assert schema.schema_version(database) == schema.SCHEMA_VERSION
        finally:
            database.close()
