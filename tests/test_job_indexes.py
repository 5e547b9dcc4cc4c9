"""The job table's partial indexes (schema 11, minipanda.core.schema.JOB_INDEXES) serve the queries they were
made for, on both backends: the planner may use a partial index only where it sees that the query's conditions
imply the index's own, so a query written a little differently silently falls back to reading every row.

PostgreSQL's planner picks by cost, and a test table is small: sequential scans are switched off here, so what is
checked is that the index CAN serve the query (its condition implied), not that it is cheaper."""
import re

import peewee
from minipanda.core import dispatch, models, states, statesql
from minipanda.core.states import JobStatus
from minipanda.tasks import settle


def plan(database, sql, params):
    """The query plan's text."""
    if isinstance(database, peewee.PostgresqlDatabase):
        with database.atomic():
            database.execute_sql("SET LOCAL enable_seqscan = off")
            rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
        return "\n".join(row[0] for row in rows)
    return "\n".join(str(row[-1]) for row in database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall())


def claim_statements(database, n_labels=1):
    """The claim's statements that pick, exactly as dispatch runs them (an offer with a memory limit), each with its
    parameters: PostgreSQL's UPDATE ... RETURNING; SQLite's read of the picked jobs as one row and the UPDATE ...
    RETURNING it falls back to when they are too large for one."""
    postgres = isinstance(database, peewee.PostgresqlDatabase)
    pick = dispatch._pick_statement(database.param, postgres, n_labels, ("min_ram_count",))
    picked = ["Q1"] + ["managed"] * n_labels + [4000, 10, "activated"]
    columns, listed = ("status", "heartbeat_time"), ("panda_id",) + states._COUNTED
    update = (statesql.picked_update_sql(database.param, pick, columns, listed, postgres=postgres),
              ["sent", states.utcnow()] + picked)
    return [update] if postgres else [(statesql.picked_rows_sql(database.param, pick, listed), picked), update]


def test_the_claim_picks_through_the_dispatch_index(database):
    for n_labels in (1, 3):
        for sql, params in claim_statements(database, n_labels):
            assert "job_dispatch_order" in plan(database, sql, params), sql


def test_the_dispatch_index_holds_activated_jobs_only(database):
    """What makes it cheap: a job leaving ``activated`` leaves the index, and no later change touches it."""
    from conftest import make_job
    from minipanda.core import jobs

    ids = [row[0] for row in jobs.submit_jobs([make_job("Q1", jobName=f"j{i}") for i in range(4)], "alice")]
    with database.atomic():
        states.change_job_status(ids[:2], JobStatus.SENT, "test")
    sql = ('SELECT COUNT(*) FROM "job" WHERE "status" = \'activated\' AND "computing_site" = %s'
           % database.param)
    assert "job_dispatch_order" in plan(database, sql, ["Q1"])
    assert database.execute_sql(sql, ["Q1"]).fetchone()[0] == 2


def test_the_settle_duty_and_a_tasks_jobs_read_through_their_partial_indexes(database):
    Job = models.Job
    unsettled = Job.select(Job.panda_id).where(Job.settled == False,  # noqa: E712 (SQL)
                                               Job.status.in_(list(settle.FINAL)))
    assert "job_settled_status" in plan(database, *unsettled.sql())
    of_task = Job.select(Job.panda_id).where(Job.task_id == 10000001, Job.status.in_(["activated", "running"]))
    assert "job_task_status" in plan(database, *of_task.sql())


def test_the_monitors_newest_jobs_read_through_the_status_index(database):
    """Schema 12 has no index on modification_time: the monitor's list, most recently changed first, reads the newest
    of each state from job_status_changed, whatever the filters, and never the whole table."""
    from minipanda.monitor import filters, queries

    now = states.utcnow()
    for params in ({}, {"status": "running|failed"}, {"days": "2"}, {"queue": "Q1", "limit": "20"}):
        sql, values = queries.newest_ids(filters.parse_filters(params), now).sql()
        text = plan(database, sql, values)
        assert "job_status_changed" in text, (params, text)
        # SQLite: "SCAN t1" reads the whole job table (or a whole index); the branches' subqueries are "SCAN s1"
        assert not re.search(r"SCAN t\d", text) and "Seq Scan" not in text, text


def test_no_job_index_on_modification_time(database):
    """What schema 12 saves: a state change rewrites the entries of the indexes on the state and its time only."""
    assert "job_modification" not in {index.name for index in database.get_indexes("job")}


def test_version_11_database_upgrades_without_the_modification_index(db_url):
    """Step 12 drops job_modification and nothing else: the jobs and their history come through whole, and the
    monitor lists them most recently changed first."""
    from conftest import make_job
    from minipanda.core import jobs, schema
    from minipanda.monitor import filters, queries

    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    database.execute_sql('CREATE INDEX "job_modification" ON "job" ("modification_time", "panda_id")')
    database.execute_sql("UPDATE config SET value = '11' WHERE key = 'schema_version'")
    ids = [row[0] for row in jobs.submit_jobs([make_job("Q1", jobName=f"j{i}") for i in range(5)], "alice")]
    with database.atomic():
        states.change_job_status(ids[1:3], JobStatus.SENT, "test")
    rows_before = database.execute_sql("SELECT * FROM job ORDER BY panda_id").fetchall()
    log_before = database.execute_sql("SELECT * FROM status_log ORDER BY id").fetchall()
    database.close()

    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    assert schema.schema_version(database) == schema.SCHEMA_VERSION == 12
    assert "job_modification" not in {index.name for index in database.get_indexes("job")}
    assert "job_status_changed" in {index.name for index in database.get_indexes("job")}
    assert database.execute_sql("SELECT * FROM job ORDER BY panda_id").fetchall() == rows_before
    assert database.execute_sql("SELECT * FROM status_log ORDER BY id").fetchall() == log_before
    listed = queries.job_list(filters.parse_filters({}), states.utcnow())["jobs"]
    assert [j["PandaID"] for j in listed] == [ids[2], ids[1], ids[4], ids[3], ids[0]]
    database.close()
