"""Concurrent bulk claims: each claim gets the number of jobs it asked for while there are enough, and no other
claim's (tests/test_concurrency.py checks that no job goes out twice; this checks what each claim got).

In process, against SQLite and PostgreSQL, each thread on its own connection. Nothing here asserts on timing.
"""
import collections
import threading

import pytest
from conftest import make_job

THREAD_TIMEOUT_S = 120


def submit(queue, n_total):
    from minipanda.core import jobs, queues

    specs = [make_job(queue, jobName=f"bulk.{queue}.{i}", currentPriority=1000 + (i % 5) * 10)
             for i in range(n_total)]
    return [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]


def offer(queue, index, n_jobs):
    from minipanda.core import dispatch

    return dispatch.Offer(queue=queue, prod_source_label="managed", memory_mb=2000, cores=1, n_jobs=n_jobs,
                          node=f"node-{index}", pilot_id=f"pilot-{index}")


def record_statements(database, monkeypatch):
    """The SQL text of every statement run through ``database.execute_sql`` from now on, in order (until the test
    calls ``monkeypatch.undo()``)."""
    statements, execute = [], database.execute_sql

    def recording(sql, params=None, *rest, **named):
        statements.append(sql)
        return execute(sql, params, *rest, **named)

    monkeypatch.setattr(database, "execute_sql", recording)
    return statements


def in_threads(database, n_threads, work):
    """Run ``work(index)`` in ``n_threads`` threads started together, each on its own connection; return
    {index: result or the exception it raised}."""
    results, gate = {}, threading.Barrier(n_threads)

    def run(index):
        database.connect(reuse_if_open=True)
        try:
            gate.wait(timeout=60)
            results[index] = work(index)
        except Exception as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            results[index] = exc
        finally:
            database.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "claim threads did not stop"
    return results


def job_owners(queue):
    """{panda_id: (status, node)} of the queue's jobs, and how many activated -> sent rows each has in status_log."""
    from minipanda.core import models

    Job, StatusLog = models.Job, models.StatusLog
    rows = {job.panda_id: (job.status, job.node)
            for job in Job.select(Job.panda_id, Job.status, Job.node).where(Job.computing_site == queue)}
    sent_logged = collections.Counter(
        row.panda_id for row in StatusLog.select(StatusLog.panda_id).where(
            StatusLog.panda_id.in_(list(rows)), StatusLog.old_status == "activated", StatusLog.new_status == "sent"))
    return rows, sent_logged


def test_concurrent_bulk_claims_each_get_what_they_asked_for_and_never_the_same_job(database):
    """8 threads claim 3..10 jobs per call; as many jobs are submitted as are asked for in all, and as many more
    as keep the fair share of what is left (minipanda.core.fairshare: 10 x 8 pilots) above every ask, so a claim
    that got fewer or more than it asked for, or a job twice, shows at once."""
    from minipanda.core import dispatch

    queue, n_threads, calls = "BULK_CLAIMS", 8, 12
    asks = {index: 3 + index for index in range(n_threads)}
    spare = max(asks.values()) * n_threads
    submitted = submit(queue, sum(asks.values()) * calls + spare)

    def work(index):
        return [dispatch.claim_jobs(offer(queue, index, asks[index])) for _ in range(calls)]

    results = in_threads(database, n_threads, work)
    errors = [r for r in results.values() if isinstance(r, Exception)]
    assert not errors, errors[:3]
    got = collections.Counter()
    for index, claims in results.items():
        for claimed in claims:
            assert len(claimed) == asks[index], f"thread {index} asked for {asks[index]}, got {len(claimed)}"
            priorities = [d["currentPriority"] for d in claimed]
            assert priorities == sorted(priorities, reverse=True)
            got.update((d["PandaID"], index) for d in claimed)
    by_job = collections.Counter(pid for pid, _ in got.elements())
    assert len(by_job) == len(submitted) - spare and set(by_job) <= set(submitted), "a job lost"
    assert set(by_job.values()) == {1}, "a job dispatched twice"

    rows, sent_logged = job_owners(queue)
    owner = {pid: index for pid, index in got}
    assert {pid: row for pid, row in rows.items()} == {
        pid: ("sent", f"node-{owner[pid]}") if pid in owner else ("activated", None) for pid in submitted}
    assert set(sent_logged) == set(by_job) and set(sent_logged.values()) == {1}


def test_a_claims_files_are_read_after_its_commit_and_its_definitions_carry_them(database, monkeypatch):
    """The claim's transaction holds the one writer (SQLite: of every process): the jobs' files are read and the
    definitions built after its COMMIT, for a bulk claim and for single claims joined in a group commit alike,
    and each definition still carries its own job's files."""
    from minipanda.core import dispatch

    queue = "CLAIM_FILES"
    specs = [make_job(queue, jobName=f"files.{i}", Files=[
        {"type": "input", "lfn": f"in.{i}.root", "scope": "test", "dataset": "ds.in"},
        {"type": "output", "lfn": f"out.{i}.root", "scope": "test", "dataset": "ds.out"},
        {"type": "log", "lfn": f"log.{i}.tgz", "scope": "test", "dataset": "ds.log"}]) for i in range(6)]
    from minipanda.core import jobs, queues

    submitted = jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)
    names = {row[0]: i for i, row in enumerate(submitted)}
    statements, execute = [], database.execute_sql

    def recording(sql, params=None, *rest, **named):
        statements.append((sql, database.in_transaction()))
        return execute(sql, params, *rest, **named)

    monkeypatch.setattr(database, "execute_sql", recording)
    claimed = dispatch.claim_jobs(offer(queue, 0, 4)) + dispatch.claim_jobs(offer(queue, 1, 1))
    monkeypatch.undo()

    files_reads = [in_transaction for sql, in_transaction in statements if 'FROM "job_file"' in sql]
    assert len(files_reads) == 2 and not any(files_reads), statements
    assert any(in_transaction for sql, in_transaction in statements if sql.startswith('UPDATE "job"'))
    assert len(claimed) == 5
    for definition in claimed:
        i = names[definition["PandaID"]]
        assert (definition["inFiles"], definition["outFiles"], definition["logFile"]) == \
            (f"in.{i}.root", f"out.{i}.root,log.{i}.tgz", f"log.{i}.tgz")


def test_a_claim_on_sqlite_reads_its_jobs_as_one_row_and_its_update_returns_none(database, monkeypatch):
    """SQLite: the picked jobs come back as one row and the UPDATE that claims them returns no rows (every row an
    UPDATE ... RETURNING hands back lets go of the GIL, the writer's lock in hand); PostgreSQL keeps its one
    UPDATE ... RETURNING. Either way each definition carries its own job's values, odd text and large ids too."""
    from minipanda.core import db, dispatch, jobs, queues

    queue = "CLAIM_ONE_ROW"
    odd = 'a "quoted" \\ back\\slash, ünïcødé ✓, tab\t and\nnewline'
    specs = [make_job(queue, jobName=f"one.row.{i}", jobParameters=f"{odd} {i}", taskID=2 ** 40 + i,
                      currentPriority=100 - i) for i in range(12)]
    submitted = [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]
    statements = record_statements(database, monkeypatch)
    claimed = dispatch.claim_jobs(offer(queue, 0, 10))
    monkeypatch.undo()

    claims = [sql for sql in statements if sql.startswith('UPDATE "job"')]
    assert len(claims) == 1
    assert ("RETURNING" in claims[0]) == db.is_postgres(), claims[0]
    assert [d["PandaID"] for d in claimed] == submitted[:10]  # best first
    for i, definition in enumerate(claimed):
        assert (definition["jobPars"], definition["jobName"], int(definition["taskID"]),
                int(definition["currentPriority"])) == (f"{odd} {i}", f"one.row.{i}", 2 ** 40 + i, 100 - i)
    assert {status for status, _ in job_owners(queue)[0].values()} == {"sent", "activated"}


@pytest.fixture
def sqlite_database(tmp_path):
    """SQLite alone: the claim's read-then-UPDATE is SQLite's (PostgreSQL's claim is one UPDATE ... RETURNING,
    whose rows are what it changed)."""
    from minipanda.core import schema

    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    yield database
    database.close()


def test_a_sqlite_claim_whose_jobs_changed_under_it_fails_whole(sqlite_database, monkeypatch):
    """The read and the UPDATE of a SQLite claim are one transaction of the one writer, so the UPDATE changes every
    job read; were one changed in between, the row counts differ and the claim fails and rolls back rather than
    hand out a job it did not change."""
    from minipanda.core import dispatch

    database = sqlite_database
    queue = "CLAIM_CHANGED"
    ids = submit(queue, 5)
    execute = database.execute_sql

    def cancel_one_before_the_claims_update(sql, params=None, *rest, **named):
        if sql.startswith('UPDATE "job" SET') and "json_each" in sql:
            execute('UPDATE "job" SET "status" = \'cancelled\' WHERE "panda_id" = ?', [ids[0]])
        return execute(sql, params, *rest, **named)

    monkeypatch.setattr(database, "execute_sql", cancel_one_before_the_claims_update)
    with pytest.raises(RuntimeError, match="changed 4 of them"):
        dispatch.claim_jobs(offer(queue, 0, 5))
    monkeypatch.undo()
    assert {status for status, _ in job_owners(queue)[0].values()} == {"activated"}
    assert len(dispatch.claim_jobs(offer(queue, 0, 5))) == 5
    assert sorted(job_owners(queue)[0]) == sorted(ids)


def _files_as_stored(ids):
    from minipanda.core import dispatch, jobspec, models

    JobFile = models.JobFile
    columns = [getattr(JobFile, "job" if c == "panda_id" else c) for c in jobspec.DEFINITION_FILE_COLUMNS]
    out = {pid: [] for pid in ids}
    for row in JobFile.select(*columns).where(JobFile.job.in_(ids)).order_by(JobFile.row_id).tuples():
        out[row[1]].append(dispatch.FileRow._make(row))
    return out


def test_a_claims_files_on_sqlite_come_as_one_row_each_file_as_stored_in_its_order(database, monkeypatch):
    """SQLite: a claim's files are read (after its COMMIT) as ONE row of JSON, not a row each (each row a step that
    lets go of the GIL); PostgreSQL reads them as rows. Either way every job gets its own files, in the order they
    were submitted, each value as stored: odd text, a 64-bit size, a NULL."""
    from minipanda.core import db, dispatch, jobs, queues

    queue = "CLAIM_FILES_ONE_ROW"
    odd = 'a "quoted" \\ back\\slash, ünïcødé ✓, tab\t and\nnewline'
    specs = [make_job(queue, jobName=f"files.{i}", Files=[
        {"type": "input", "lfn": f"in.{i}.{k}.root", "scope": "s", "dataset": f"{odd} {i}", "fsize": 2 ** 62 + k,
         "checksum": f"ad:{k:08x}", "guid": None if k == 1 else f"g-{i}-{k}"} for k in (3, 1, 2)]
        + [{"type": "output", "lfn": f"out.{i}.root", "scope": "s", "destinationDBlock": odd},
           {"type": "log", "lfn": f"log.{i}.tgz", "scope": "s"}]) for i in range(6)]
    submitted = [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]
    statements = record_statements(database, monkeypatch)
    claimed = dispatch.claim_jobs(offer(queue, 0, 6))
    read = dispatch._load_files(submitted)
    monkeypatch.undo()

    reads = [sql for sql in statements if 'FROM "job_file"' in sql]
    assert len(reads) == 2 and all(("json_group_array" in sql) != db.is_postgres() for sql in reads), reads
    assert read == _files_as_stored(submitted)
    assert [f.lfn for f in read[submitted[0]]] == ["in.0.3.root", "in.0.1.root", "in.0.2.root", "out.0.root",
                                                   "log.0.tgz"]
    assert read[submitted[0]][0].fsize == 2 ** 62 + 3 and read[submitted[0]][1].guid is None
    by_id = {d["PandaID"]: d for d in claimed}
    assert sorted(by_id) == sorted(submitted)
    for i, pid in enumerate(submitted):
        assert by_id[pid]["inFiles"] == f"in.{i}.3.root,in.{i}.1.root,in.{i}.2.root"
        assert by_id[pid]["realDatasetsIn"].startswith(f"{odd} {i},")


def test_a_claims_files_on_sqlite_keep_their_order_whatever_index_reads_them(sqlite_database):
    """The files' JSON comes in the order SQLite reads them: through the (panda_id, type) index a job's log would
    come before its outputs. The rows are put back in the order they were submitted (by row id) before the
    definitions are built. (The index the reads usually take is dropped here to make SQLite use the other.)"""
    from minipanda.core import dispatch, jobs, queues

    queue = "CLAIM_FILES_ORDER"
    specs = [make_job(queue, jobName=f"files.order.{i}", Files=[
        {"type": "output", "lfn": f"out.{i}.root", "scope": "s"}, {"type": "log", "lfn": f"log.{i}.tgz", "scope": "s"},
        {"type": "input", "lfn": f"in.{i}.root", "scope": "s"}]) for i in range(3)]
    submitted = [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]
    sqlite_database.execute_sql('DROP INDEX "job_file_panda_id"')
    read = dispatch._load_files(submitted)
    assert [f.lfn for f in read[submitted[0]]] == ["out.0.root", "log.0.tgz", "in.0.root"]
    assert read == _files_as_stored(submitted)


def test_a_claims_files_too_large_for_one_json_row_on_sqlite_come_row_by_row(sqlite_database):
    """Files whose JSON together passes SQLite's string limit are read row by row instead: the claim still hands
    out every job with its files. The limit is lowered on the connection to stand in for SQLite's 10**9."""
    import sqlite3

    from minipanda.core import dispatch, jobs, queues

    database = sqlite_database
    queue = "CLAIM_FILES_TOO_LARGE"
    # a dataset and a destination block as long as their columns hold (256), each character 6 in JSON (\u0001)
    specs = [make_job(queue, jobName=f"files.large.{i}", Files=[
        {"type": "input", "lfn": f"in.{i}.{k}.root", "scope": "s", "dataset": "\x01" * 256,
         "destinationDBlock": "\x01" * 256} for k in range(4)]
        + [{"type": "log", "lfn": f"log.{i}.tgz", "scope": "s"}]) for i in range(10)]
    submitted = [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]
    connection = database.connection()
    before = connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20_000)  # the rows fit, their JSON (~125 kB) does not
    try:
        claimed = dispatch.claim_jobs(offer(queue, 0, 10))
        read = dispatch._load_files(submitted)
    finally:
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, before)
    assert read == _files_as_stored(submitted)
    assert sorted(d["PandaID"] for d in claimed) == sorted(submitted)
    assert all(d["inFiles"].count(".root") == 4 for d in claimed)


def test_a_sqlite_claim_of_jobs_too_large_for_one_json_row_still_claims_them_each_with_its_own_text(
        sqlite_database):
    """Jobs whose JSON together passes SQLite's string limit (JSON writes a control character as six bytes) cannot be
    read as one row: the claim takes their rows one by one instead of failing, again and again, every claim that
    picks them (the queue would starve). The limit is lowered on the connection to stand in for SQLite's 10**9."""
    import sqlite3

    from minipanda.core import dispatch, jobs, queues

    database = sqlite_database
    queue = "CLAIM_TOO_LARGE"
    specs = [make_job(queue, jobName=f"large.{i}", jobParameters=f"{i}" + "\x01" * 30_000) for i in range(10)]
    submitted = [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]
    connection = database.connection()
    before = connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200_000)  # one job's row fits, ten in JSON do not
    try:
        claimed = dispatch.claim_jobs(offer(queue, 0, 10))
    finally:
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, before)
    assert sorted(d["PandaID"] for d in claimed) == sorted(submitted)
    assert {d["jobName"]: d["jobPars"] for d in claimed} == {f"large.{i}": f"{i}" + "\x01" * 30_000
                                                             for i in range(10)}
    assert {status for status, _ in job_owners(queue)[0].values()} == {"sent"}


def test_a_getjob_reads_its_queue_once_for_its_labels_and_its_cores(database, monkeypatch):
    """A getJob reads the queue's row once (each read a statement that lets go of the GIL) for both what it takes
    from it: the labels the queue serves and the cores its pilots offer when they do not say."""
    import json

    from minipanda.api import handlers
    from minipanda.core import jobs, models, queues
    from minipanda.core.auth import Identity

    queue = "GETJOB_QUEUE_ONCE"
    small, user, wide = [row[0] for row in jobs.submit_jobs(
        [make_job(queue, coreCount=4), make_job(queue, coreCount=1, prodSourceLabel="user"),
         make_job(queue, coreCount=8)], "tester", queue_ensurer=queues.ensure_queues)]
    models.Queue.update(queuedata=json.dumps({"corecount": 4, "prodsourcelabels": ["managed"]})).where(
        models.Queue.name == queue).execute()
    statements = record_statements(database, monkeypatch)
    definitions, _, _ = handlers.acquire_jobs({"computingElement": queue, "nJobs": 10, "prodSourceLabel": "managed",
                                               "node": "n", "pilotID": "p"}, Identity("admin", "admin"))
    monkeypatch.undo()
    assert [d["PandaID"] for d in definitions] == [small]  # 4 cores from the queue; the user job is not served
    assert len([sql for sql in statements if 'FROM "queue"' in sql]) == 1, statements
