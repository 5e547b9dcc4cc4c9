"""Concurrent bulk claims: each claim gets the number of jobs it asked for while there are enough, and no other
claim's (tests/test_concurrency.py checks that no job goes out twice; this checks what each claim got).

In process, against SQLite and PostgreSQL, each thread on its own connection. Nothing here asserts on timing.
"""
import collections
import threading

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
