"""The counts the database keeps (minipanda.core.counts) equal a GROUP BY over the live rows after every kind of
write: through the server's code, by hand-written SQL, from concurrent threads and another process, after a
rollback, after a writer killed mid-transaction, and after a schema upgrade. Both backends."""
import contextlib
import dataclasses
import datetime
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import peewee
import pytest
from conftest import make_job
from minipanda.core import counts, dispatch, jobs, models, queues, schema, updates
from minipanda.core.states import JobStatus
from minipanda.tasks import generator, retention, service, settings, settle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_postgres(database):
    return isinstance(database, peewee.PostgresqlDatabase)


def truth(database):
    """({(task, queue, state): n} of job, {(task, state): n} of task_input), counted now from the rows."""
    job_rows = database.execute_sql("SELECT COALESCE(task_id, 0), computing_site, status, COUNT(*) FROM job "
                                    "GROUP BY 1, 2, 3").fetchall()
    input_rows = database.execute_sql("SELECT task_id, status, COUNT(*) FROM task_input GROUP BY 1, 2").fetchall()
    return ({tuple(r[:3]): r[3] for r in job_rows}, {tuple(r[:2]): r[2] for r in input_rows})


def kept():
    """The same, from the count tables (with PostgreSQL's deltas not yet folded)."""
    return ({tuple(r[:3]): int(r[3]) for r in counts._rows(counts.JOBS, "", [])},
            {tuple(r[:2]): int(r[2]) for r in counts._rows(counts.INPUTS, "", [])})


def assert_exact(database):
    assert kept() == truth(database)
    if is_postgres(database):
        counts.fold()
        assert kept() == truth(database)
        assert database.execute_sql("SELECT COUNT(*) FROM job_count_delta").fetchone()[0] == 0
    job_truth = truth(database)[0]
    by_queue = {}
    for (_, queue, status), n in job_truth.items():
        by_queue.setdefault(queue, {}).setdefault(status, 0)
        by_queue[queue][status] += n
    assert counts.jobs_by_queue() == by_queue


def submit(queue, n, **overrides):
    specs = [make_job(queue, jobName=f"{queue}.{i}", **overrides) for i in range(n)]
    return [row[0] for row in jobs.submit_jobs(specs, "alice", queue_ensurer=queues.ensure_queues)]


def claim(queue, n_jobs=1, label="managed"):
    offer = dispatch.Offer(queue=queue, prod_source_label=label, cores=1, memory_mb=4000, n_jobs=n_jobs,
                           node="wn1", pilot_id="p1")
    return [d["PandaID"] for d in dispatch.claim_jobs(offer)]


def update(panda_id, state):
    reply = updates.update_job({"jobId": str(panda_id), "state": state, "node": "wn1"})
    assert reply["StatusCode"] == 0, reply


def update_in_bulk(entries):
    """updateJobsInBulk's set-based path: one read, one conditional UPDATE per group, one status_log insert."""
    return updates.update_jobs([{"jobId": str(pid), "state": state, "node": "wn1"} for pid, state in entries])


def test_counts_follow_every_write(database, tmp_path):
    assert_exact(database)
    submit("Q1", 6)
    submit("Q2", 3)
    assert_exact(database)
    one = claim("Q1")
    several = claim("Q1", n_jobs=3)
    assert_exact(database)
    update(one[0], "running")
    update(one[0], "finished")
    update(several[0], "failed")
    assert_exact(database)
    sent = models.Job.select(models.Job.start_time).where(models.Job.panda_id.in_(one + several))
    assert counts.last_entered("Q1", "sent") == max(job.start_time for job in sent)
    assert counts.last_entered("Q2", "sent") is None
    # A bulk update: transitions of several groups, a heartbeat (same state: no count moves), a refused entry
    # (a final job) and two entries for one job (applied in order, in a later round).
    bulk = claim("Q1", n_jobs=2)
    replies = update_in_bulk([(bulk[0], "running"), (bulk[1], "starting"), (bulk[1], "starting"),
                              (several[0], "running"), (bulk[0], "finished"), (several[1], "failed")])
    assert [r["StatusCode"] for r in replies] == [0, 0, 0, 0, 0, 0], replies
    assert models.Job.get_by_id(bulk[0]).status == "finished" and models.Job.get_by_id(several[0]).status == "failed"
    assert_exact(database)

    # A task: its inputs are inserted and picked by the generator, its jobs settled.
    queues.ensure_queues(["Q3"])
    task_id = service.submit_task({"taskName": "counted", "exec": "echo %RNDM:1", "nJobs": 4, "nScouts": 0,
                                   "site": "Q3"}, service_identity())
    config = settings.Settings({"brokerage.bootstrap_queued": 100})
    while generator.run(config):
        pass
    assert_exact(database)
    assert counts.jobs_by_task([task_id]) == {task_id: {"activated": 4}}
    assert counts.inputs_by_task([task_id])[task_id] == {"picked": 4}
    picked = claim("Q3", n_jobs=2, label="user")
    assert len(picked) == 2
    for panda_id in picked:
        update(panda_id, "running")
        update(panda_id, "finished")
    settle.run(config)
    assert_exact(database)
    assert counts.inputs_by_task([task_id])[task_id] == {"finished": 2, "picked": 2}

    # Hand-written SQL: a job moved to another queue and another state, one deleted, inserts in one statement.
    with database.atomic():
        database.execute_sql(f"UPDATE job SET computing_site = 'Q2', status = 'holding' WHERE panda_id = {one[0]}")
        database.execute_sql(f"DELETE FROM job WHERE panda_id = {several[1]}")
        database.execute_sql("UPDATE job SET heartbeat_time = modification_time")  # changes no key: no count
    assert_exact(database)

    # A rolled-back transaction leaves the counts as they were.
    before = kept()
    with pytest.raises(RuntimeError):
        with database.atomic():
            submit("Q1", 2)
            database.execute_sql("UPDATE job SET status = 'cancelled' WHERE computing_site = 'Q2'")
            raise RuntimeError("roll back")
    assert kept() == before
    assert_exact(database)

    # The retention duty's deletes (it keeps the newest job live).
    old = datetime.datetime(2025, 1, 1)
    models.Job.update(status="finished", state_changed_time=old, modification_time=old, settled=True).execute()
    live = models.Job.select().count()
    moved = retention.run(settings.Settings(), str(tmp_path))["jobs_archived"][0]
    assert moved >= 10 and models.Job.select().count() == live - moved
    assert_exact(database)

    # A task whose rows have all left: its counts of 0 go with tidy(), the others stay.
    database.execute_sql(f"DELETE FROM job WHERE task_id = {task_id}")
    database.execute_sql(f"DELETE FROM task_input WHERE task_id = {task_id}")
    database.execute_sql(f"DELETE FROM task WHERE jedi_task_id = {task_id}")
    assert_exact(database)
    assert counts.tidy() > 0
    assert not [key for key in kept()[0] if key[0] == task_id] and not kept()[1]
    assert counts.last_entered("Q1", "sent") is not None  # rows of 0 without a task keep their time
    assert_exact(database)


def service_identity():
    from minipanda.core import auth

    return auth.Identity("alice", "user")


def test_counts_stay_exact_with_concurrent_writers(database, db_url):
    """Threads on their own connections claim, update and submit while another process writes too, and (on
    PostgreSQL) a thread folds the deltas meanwhile: the counts equal the rows at the end."""
    submit("C1", 300)
    submit("C2", 100)
    errors, stop = [], threading.Event()

    def pilot(index):
        try:
            database.connect(reuse_if_open=True)
            for _ in range(40):
                taken = claim("C1", n_jobs=1 + index % 3)
                if index % 2:  # half the pilots report their jobs in bulk (the set-based path)
                    update_in_bulk([(pid, "running") for pid in taken])
                    update_in_bulk([(pid, "finished" if pid % 2 else "failed") for pid in taken])
                    continue
                for panda_id in taken:
                    update(panda_id, "running")
                    update(panda_id, "finished" if panda_id % 2 else "failed")
                submit("C2", 2)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(f"pilot {index}: {type(exc).__name__}: {exc}")
        finally:
            database.close()

    def folder():
        try:
            database.connect(reuse_if_open=True)
            while not stop.is_set():
                counts.fold()
                time.sleep(0.005)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"fold: {type(exc).__name__}: {exc}")
        finally:
            database.close()

    other = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS, db_url], cwd=ROOT)
    threads = [threading.Thread(target=pilot, args=(i,)) for i in range(8)] + [threading.Thread(target=folder)]
    for thread in threads:
        thread.start()
    for thread in threads[:-1]:
        thread.join(300)
    stop.set()
    threads[-1].join(60)
    assert other.wait(300) == 0
    assert not errors, errors[:5]
    database.connect(reuse_if_open=True)
    moved = models.Job.select().where(models.Job.computing_site == "C1", models.Job.status != "activated").count()
    assert moved > 100  # the pilots did work
    assert_exact(database)


# Another process (as the CLI or a second server would be): its own connection, its own transactions.
OTHER_PROCESS = """
import sys
from minipanda.core import schema
db = schema.open_database(sys.argv[1])
db.connect()
for i in range(60):
    with db.atomic():
        db.execute_sql("UPDATE job SET status = 'cancelled' WHERE panda_id IN (SELECT panda_id FROM job "
                       "WHERE computing_site = 'C2' AND status = 'activated' ORDER BY panda_id LIMIT 2)")
db.close()
"""

# A writer that changes and inserts jobs, then is killed before it commits.
KILLED_WRITER = """
import os, signal, sys
from minipanda.core import models, schema
db = schema.open_database(sys.argv[1])
db.connect()
db.execute_sql("UPDATE job SET status = 'closed' WHERE computing_site = 'K1' AND (panda_id / 2) * 2 = panda_id")
db.begin()
db.execute_sql("UPDATE job SET status = 'cancelled' WHERE computing_site = 'K1'")
columns = [f.column_name for f in models.Job._meta.sorted_fields if f.column_name != "panda_id"]
copied = ["'K2'" if c == "computing_site" else "'activated'" if c == "status" else c for c in columns]
db.execute_sql(f"INSERT INTO job ({', '.join(columns)}) SELECT {', '.join(copied)} FROM job "
               "WHERE computing_site = 'K1'")
print("changed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_mid_transaction_changes_no_count(database, db_url):
    submit("K1", 10)
    before = truth(database)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, db_url], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    out, _ = writer.communicate(timeout=120)
    assert writer.returncode == -signal.SIGKILL and "changed" in out
    if not is_postgres(database):
        database.close()  # a new connection sees the database as the killed writer left it (its WAL discarded)
        database.connect()
    after = truth(database)
    assert after[0][(0, "K1", "closed")] == 5 and (0, "K2", "activated") not in after[0]  # the commit kept
    assert sum(after[0].values()) == sum(before[0].values())
    assert_exact(database)


def test_counts_stay_exact_through_any_mix_of_the_paths(database):
    """Random sequences of every path that writes job states, each bulk path (submission, a claim of several jobs,
    a bulk update) among the single-row ones it must not double count with (a claim of one in the group commit,
    a single update, a kill, hand-written SQL): the counts equal the rows after every step."""
    rng = random.Random(23)
    queues.ensure_queues(["R1", "R2"])
    sent = []
    for step in range(60):
        action = rng.choice(["submit", "claim", "claim_one", "bulk", "single", "kill", "sql"])
        queue = rng.choice(["R1", "R2"])
        if action == "submit" or not sent and action != "claim":
            submit(queue, rng.randint(1, 30), **({"taskID": rng.choice([10000101, 10000102])} if rng.random() < 0.5
                                                 else {}))
        elif action in ("claim", "claim_one"):
            sent += claim(queue, n_jobs=1 if action == "claim_one" else rng.randint(2, 20))
        elif action == "bulk":
            picked = rng.sample(sent, min(len(sent), rng.randint(1, 25)))
            entries = [(pid, rng.choice(["starting", "running", "finished", "failed", "holding"])) for pid in picked]
            entries += [(pid, "finished") for pid in picked[:3]]  # a job reported twice: a later round
            update_in_bulk(entries)
        elif action == "single":
            panda_id = rng.choice(sent)
            updates.update_jobs([{"jobId": str(panda_id), "state": rng.choice(["running", "finished"]),
                                  "node": "wn1"}])
        elif action == "kill":
            jobs.kill_jobs(rng.sample(sent, min(len(sent), 3)), "alice", manages_all=True)
        else:
            with database.atomic():
                database.execute_sql(f"UPDATE job SET status = 'activated', computing_site = '{queue}' WHERE "
                                     "panda_id IN (SELECT panda_id FROM job WHERE status = 'failed' LIMIT 2)")
        assert_exact(database)
    assert len(sent) > 50


# A bulk writer (a claim of several jobs) killed inside its transaction, while the job triggers are paused for it.
KILLED_BULK_WRITER = """
import os, signal, sys
from minipanda.core import counts, dispatch, schema
db = schema.open_database(sys.argv[1])
db.connect()
db.begin()
with counts.bulk_jobs():
    taken = dispatch._claim_rows(dispatch.Offer(queue="K3", n_jobs=3), 3, None)
    print("claimed", len(taken), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_bulk_writer_killed_mid_transaction_leaves_the_triggers_counting(database, db_url):
    submit("K3", 6)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_BULK_WRITER, db_url], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    out, _ = writer.communicate(timeout=120)
    assert writer.returncode == -signal.SIGKILL and "claimed 3" in out
    if not is_postgres(database):
        database.close()
        database.connect()
    assert_exact(database)
    with database.atomic():  # written by hand, after the killed writer: still counted
        database.execute_sql("UPDATE job SET status = 'cancelled' WHERE computing_site = 'K3'")
    assert_exact(database)
    assert counts.jobs_by_queue(queue="K3") == {"K3": {"cancelled": 6}}


def test_postgresql_truncate_empties_the_counts(database):
    if not is_postgres(database):
        pytest.skip("TRUNCATE is PostgreSQL's (SQLite's DELETE without WHERE fires the row triggers)")
    submit("T1", 3)
    database.execute_sql("TRUNCATE job CASCADE")
    assert kept() == ({}, {})
    assert_exact(database)


def drop_counts(database):
    """Take the counts away, as a version 8 database is."""
    if is_postgres(database):
        for counter in counts.COUNTERS:
            for event in ("insert", "update", "delete", "truncate"):
                database.execute_sql(f"DROP FUNCTION {counter.name}_{event}() CASCADE")
            database.execute_sql(f"DROP TABLE {counter.name}, {counter.name}_delta")
    else:
        for counter in counts.COUNTERS:
            for event in ("insert", "update", "delete"):
                database.execute_sql(f"DROP TRIGGER {counter.name}_{event}")
            database.execute_sql(f"DROP TABLE {counter.name}")
        database.execute_sql(f"DROP TABLE IF EXISTS {counts.JOBS.name}_paused")


def uncounted_bulk_jobs(n_rows=None):
    """What the bulk writers of versions 8 to 10 counted themselves: nothing."""
    yield counts.JobMoves()


def test_version_8_database_gets_the_counts_of_its_rows(db_url, monkeypatch):
    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    drop_counts(database)
    database.execute_sql("UPDATE config SET value = '8' WHERE key = 'schema_version'")
    with monkeypatch.context() as patched:
        patched.setattr(counts, "bulk_jobs", contextlib.contextmanager(uncounted_bulk_jobs))
        submit("U1", 5)  # written by version 8: nothing counts them
        claim("U1", n_jobs=2)
    database.execute_sql("INSERT INTO task_input (task_id, chunk, status, fsize, attempt_nr) VALUES "
                         "(10000001, 0, 'ready', 0, 0), (10000001, 1, 'finished', 0, 0)")
    database.close()

    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    assert schema.schema_version(database) == schema.SCHEMA_VERSION == 12
    assert counts.jobs_by_queue(queue="U1") == {"U1": {"activated": 3, "sent": 2}}
    assert counts.inputs_by_task([10000001]) == {10000001: {"ready": 1, "finished": 1}}
    sent = models.Job.select(peewee.fn.MAX(models.Job.start_time)).where(models.Job.computing_site == "U1").scalar()
    assert counts.last_entered("U1", JobStatus.SENT.value) == sent
    claim("U1")  # and the triggers count from now on
    assert counts.jobs_by_queue(queue="U1") == {"U1": {"activated": 2, "sent": 3}}
    assert_exact(database)
    database.close()


def make_version_10(database):
    """Turn a fresh database into what version 10 made: full dispatch, settled and task indexes, and (SQLite) job
    triggers that count every row, with no pause."""
    for name, _, _ in schema.JOB_INDEXES:
        database.execute_sql(f'DROP INDEX "{name}"')
    database.execute_sql('CREATE INDEX "job_dispatch_order" ON "job" ("status", "computing_site", '
                         '"current_priority" DESC, "panda_id")')
    database.execute_sql('CREATE INDEX "job_settled_status" ON "job" ("settled", "status")')
    database.execute_sql('CREATE INDEX "job_task_status" ON "job" ("task_id", "status")')
    if not is_postgres(database):
        for event in ("insert", "update", "delete"):
            database.execute_sql(f"DROP TRIGGER {counts.JOBS.name}_{event}")
        for statement in counts._sqlite_triggers(dataclasses.replace(counts.JOBS, pausable=False)):
            database.execute_sql(statement)
        database.execute_sql(f"DROP TABLE {counts.JOBS.name}_paused")
    database.execute_sql("UPDATE config SET value = '10' WHERE key = 'schema_version'")


def index_definitions(database):
    if is_postgres(database):
        rows = database.execute_sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'job'").fetchall()
    else:
        rows = database.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'job' "
                                    "AND sql IS NOT NULL").fetchall()
    return dict(rows)


def test_version_10_database_upgrades_with_its_jobs_and_counts(db_url, monkeypatch):
    """Step 11 makes three job indexes partial and lets the bulk paths count their own jobs: the rows and their
    counts come through whole, and from then on every path counts once."""
    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    make_version_10(database)
    with monkeypatch.context() as patched:  # version 10's bulk writers left the counting to the triggers
        patched.setattr(counts, "bulk_jobs", contextlib.contextmanager(uncounted_bulk_jobs))
        submit("V1", 8)
        submit("V2", 3, taskID=10000201)
        taken = claim("V1", n_jobs=4)
        update_in_bulk([(taken[0], "running"), (taken[1], "finished")])
    assert_exact(database)
    rows_before = database.execute_sql("SELECT * FROM job ORDER BY panda_id").fetchall()
    log_before = database.execute_sql("SELECT * FROM status_log ORDER BY id").fetchall()
    counts_before = kept()
    assert "WHERE" not in index_definitions(database)["job_dispatch_order"].upper()
    database.close()

    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    assert schema.schema_version(database) == schema.SCHEMA_VERSION == 12
    assert database.execute_sql("SELECT * FROM job ORDER BY panda_id").fetchall() == rows_before
    assert database.execute_sql("SELECT * FROM status_log ORDER BY id").fetchall() == log_before
    assert kept() == counts_before
    assert_exact(database)
    indexes = index_definitions(database)
    for name in ("job_dispatch_order", "job_settled_status", "job_task_status"):
        assert " WHERE " in indexes[name].upper(), indexes[name]
    # every path counts once from now on: the bulk ones themselves, the others by the triggers
    more = claim("V1", n_jobs=3)
    update_in_bulk([(pid, "finished") for pid in more] + [(taken[2], "failed")])
    submit("V2", 2)
    update(taken[3], "running")
    assert_exact(database)
    assert counts.jobs_by_queue(queue="V1") == {"V1": {"activated": 1, "running": 2, "finished": 4, "failed": 1}}
    database.close()


def test_the_counts_duty_folds_on_postgresql_only(database):
    from minipanda.server.daemon import DutyRunner
    from minipanda.tasks import duties

    runner = DutyRunner()
    duties.register_duties(runner, settings.Settings())
    assert ("counts" in runner.duties) == is_postgres(database)
    if is_postgres(database):
        submit("D1", 3)
        claim("D1")
        assert database.execute_sql("SELECT COUNT(*) FROM job_count_delta").fetchone()[0] > 0
        runner.run_once("counts")
        assert runner.duties["counts"].failures == 0
        assert database.execute_sql("SELECT COUNT(*) FROM job_count_delta").fetchone()[0] == 0
        assert counts.jobs_by_queue(queue="D1") == {"D1": {"activated": 2, "sent": 1}}


def test_harvester_queue_demand_from_the_counts_equals_the_jobs_by_label(database):
    """get_queue_demand reads the kept counts for a queue that takes any label (PostgreSQL: deltas not yet folded)
    and counts a labelled queue's jobs by label; both equal what the job rows say."""
    from minipanda.workers import harvesters
    from taskhelp import set_queue

    set_queue("ANY_Q")
    set_queue("PROD_Q", prodsourcelabels=["managed"])
    set_queue("DOWN_Q", status="offline")
    submit("ANY_Q", 5)
    submit("ANY_Q", 2, prodSourceLabel="user")
    submit("PROD_Q", 3)
    submit("PROD_Q", 2, prodSourceLabel="user")
    submit("DOWN_Q", 2)
    taken = claim("ANY_Q", 3)
    update(taken[0], "starting")
    update(taken[1], "running")
    update(taken[2], "finished")
    update(claim("PROD_Q")[0], "running")
    demand = harvesters.queue_demand(["ANY_Q", "PROD_Q", "DOWN_Q", "NONE_Q"])
    zero = {"activated": 0, "sent": 0, "starting": 0, "running": 0}
    assert demand == {"ANY_Q": dict(zero, activated=4, starting=1, running=1),
                      "PROD_Q": dict(zero, activated=2, running=1), "DOWN_Q": zero, "NONE_Q": zero}
    if is_postgres(database):
        counts.fold()
        assert harvesters.queue_demand(["ANY_Q", "PROD_Q", "DOWN_Q", "NONE_Q"]) == demand


def test_a_bulk_writer_outside_a_transaction_pauses_nothing(database, db_url, monkeypatch):
    """A pause written outside a transaction would be committed at once, for every other writer to see (and not be
    counted by the triggers) until the bulk writer resumes them: the triggers count such a writer instead. Another
    connection looks at the pause while a bulk update is between its statements, in and out of a transaction."""
    from minipanda.core import states

    seen = []
    add_rows = counts.JobMoves.add_rows

    def looking(self, *args):
        if not is_postgres(database):
            other = sqlite3.connect(db_url[len("sqlite:///"):])
            seen.append(other.execute(f"SELECT COUNT(*) FROM {counts.JOBS.name}_paused").fetchone()[0])
            other.close()
        return add_rows(self, *args)

    monkeypatch.setattr(counts.JobMoves, "add_rows", looking)
    ids = submit("O1", 5)
    with database.atomic():
        assert sorted(claim("O1", n_jobs=5)) == sorted(ids)
    states.change_each_job([("sent", "running", (), [(pid,) for pid in ids], "test")])  # no transaction
    with database.atomic():
        states.change_each_job([("running", "finished", (), [(pid,) for pid in ids], "test")])
    assert_exact(database)
    assert counts.jobs_by_queue(queue="O1") == {"O1": {"finished": 5}}
    assert seen == ([] if is_postgres(database) else [0, 0, 0, 0])
