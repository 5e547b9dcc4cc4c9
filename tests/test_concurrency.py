"""Concurrent dispatch: many pilots asking at once must each get different jobs, and every job must go out once.

Over real HTTP against a ``minipanda serve`` subprocess (SQLite, and PostgreSQL when MINIPANDA_TEST_PG_URL is
set), and in-process with ``dispatch.claim_jobs`` called from many threads. Nothing here asserts on timing: every
loop is bounded in calls and in time only so that a broken server fails the test instead of hanging it.
"""
import collections
import threading
import time

import pytest
import requests
from conftest import eventually, make_job

DEADLINE_S = 240  # per test, generous: a correct run on 2 cores takes a fraction of it
EMPTY_REPLIES_TO_STOP = 3  # a thread stops after this many "no jobs" replies in a row


def submit(server, queue, n_jobs):
    """Submit ``n_jobs`` activated jobs to ``queue`` (the server takes up to 5000 per call); return their ids."""
    ids = []
    for start in range(0, n_jobs, 5000):
        specs = [make_job(queue, jobName=f"conc.{queue}.{i}") for i in range(start, min(n_jobs, start + 5000))]
        reply = requests.post(server.url + "/api/v1/job/submit", json={"jobs": specs}, headers=server.headers(),
                              timeout=120)
        assert reply.status_code == 200, reply.text
        ids.extend(row[0] for row in reply.json()["data"])
    assert len(set(ids)) == n_jobs
    return ids


def pilot_form(queue, index, call, n_jobs=None):
    form = {"computingElement": queue, "prodSourceLabel": "managed", "mem": "2000", "node": f"wn{index:02d}",
            "pilotID": f"pilot-{index}-{call}"}
    if n_jobs is not None:
        form["nJobs"] = str(n_jobs)
    return form


def run_pilots(server, queue, n_threads, max_calls, n_jobs_of=lambda index: None, finish_of=lambda index: False):
    """``n_threads`` pilots, each on its own requests.Session, call getJob until the queue stays empty.

    ``n_jobs_of(index)`` is the nJobs a thread asks for (None: a single-job getJob); ``finish_of(index)`` says
    whether it also reports each job finished with updateJob. Returns (dispatched ids with repeats, per-thread
    {index: [ids]}, replies that broke the protocol, errors).
    """
    lock = threading.Lock()
    got, by_thread, bad_replies, errors = [], {}, [], []
    gate = threading.Barrier(n_threads)
    deadline = time.monotonic() + DEADLINE_S

    def pilot(index):
        mine, bad = [], []
        n_jobs, finish = n_jobs_of(index), finish_of(index)
        try:
            with requests.Session() as session:
                session.headers.update(server.headers())
                gate.wait(timeout=60)
                empty = 0
                for call in range(max_calls):
                    if time.monotonic() > deadline:
                        errors.append(f"thread {index}: deadline reached after {call} calls")
                        break
                    form = pilot_form(queue, index, call, n_jobs)
                    reply = session.post(server.url + "/server/panda/getJob", data=form, timeout=60)
                    if reply.status_code != 200:
                        bad.append(f"HTTP {reply.status_code}: {reply.text[:200]}")
                        break
                    data = reply.json()
                    if data["StatusCode"] == 20:
                        if n_jobs is not None and data.get("jobs"):
                            bad.append(f"StatusCode 20 with jobs: {data}")
                        empty += 1
                        if empty >= EMPTY_REPLIES_TO_STOP:
                            break
                        continue
                    empty = 0
                    if data["StatusCode"] != 0:
                        bad.append(f"StatusCode {data['StatusCode']}: {data}")
                        break
                    if n_jobs is None:
                        ids = [data["PandaID"]]
                    else:
                        ids = [job["PandaID"] for job in data["jobs"]]
                        if not 1 <= len(ids) <= n_jobs or data.get("nSent", len(ids)) != len(ids):
                            bad.append(f"bulk reply with {len(ids)} jobs for nJobs={n_jobs}")
                    mine.extend(ids)
                    for pid in ids if finish else ():
                        answer = session.post(server.url + "/server/panda/updateJob", timeout=60, data={
                            "jobId": pid, "state": "finished", "pilotID": form["pilotID"], "transExitCode": "0"})
                        if answer.status_code != 200 or answer.json().get("StatusCode") != 0:
                            bad.append(f"updateJob {pid}: HTTP {answer.status_code} {answer.text[:200]}")
                else:
                    errors.append(f"thread {index}: still getting jobs after {max_calls} calls")
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
        finally:
            with lock:
                got.extend(mine)
                by_thread[index] = mine
                bad_replies.extend(bad)

    threads = [threading.Thread(target=pilot, args=(i,), name=f"pilot-{i}", daemon=True) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S + 120)
    assert not any(thread.is_alive() for thread in threads), "pilot threads did not stop"
    return got, by_thread, bad_replies, errors


def assert_each_once(got, submitted):
    counts = collections.Counter(got)
    twice = {pid: n for pid, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} jobs dispatched more than once, e.g. {sorted(twice.items())[:10]}"
    missed = set(submitted) - set(counts)
    assert not missed, f"{len(missed)} jobs never dispatched, e.g. {sorted(missed)[:10]}"
    foreign = set(counts) - set(submitted)
    assert not foreign, f"dispatched jobs that were not submitted here: {sorted(foreign)[:10]}"


def server_states(server, queue):
    """{PandaID: status} of every job of ``queue``, from the server's job list."""
    reply = requests.get(server.url + "/api/v1/job/list", params={"queue": queue, "limit": 10000}, timeout=120)
    assert reply.status_code == 200, reply.text
    return {row["PandaID"]: row["jobStatus"] for row in reply.json()["data"]}


def test_32_pilots_take_5000_jobs_each_exactly_once(live_server):
    queue = "CONC_SINGLE"
    submitted = submit(live_server, queue, 5000)
    got, by_thread, bad, errors = run_pilots(live_server, queue, n_threads=32, max_calls=5000 + 50)
    assert not errors and not bad, (errors[:5], bad[:5])
    assert_each_once(got, submitted)
    assert sum(1 for ids in by_thread.values() if ids) > 1, "one pilot took every job: nothing ran concurrently"

    states = server_states(live_server, queue)
    assert set(states) == set(submitted)
    assert collections.Counter(states.values()) == {"sent": 5000}
    # The pilot's own status query agrees, for every job.
    reply = requests.post(live_server.url + "/api/v1/job/get_status", json={"job_ids": submitted}, timeout=120)
    assert {row["status"] for row in reply.json()["data"]} == {"sent"}
    # One more pilot finds nothing left.
    reply = requests.post(live_server.url + "/server/panda/getJob", data=pilot_form(queue, 99, 0),
                          headers=live_server.headers(), timeout=60)
    assert reply.json()["StatusCode"] == 20


def test_single_and_bulk_pilots_mixed_with_final_updates(live_server):
    """Half the pilots take one job per call and report it finished at once; the others take nJobs=7 per call."""
    queue = "CONC_MIXED"
    submitted = submit(live_server, queue, 3000)
    single = set(range(0, 16, 2))
    got, by_thread, bad, errors = run_pilots(
        live_server, queue, n_threads=16, max_calls=3000 + 50,
        n_jobs_of=lambda index: None if index in single else 7, finish_of=lambda index: index in single)
    assert not errors and not bad, (errors[:5], bad[:5])
    assert_each_once(got, submitted)
    by_single = {pid for index in single for pid in by_thread[index]}
    by_bulk = set(got) - by_single
    assert by_single and by_bulk, "both kinds of pilot should have got jobs"

    states = server_states(live_server, queue)
    assert set(states) == set(submitted)
    assert {states[pid] for pid in by_single} == {"finished"}
    assert {states[pid] for pid in by_bulk} == {"sent"}


def claim_from_threads(database, queue, n_total, claim, n_threads=16):
    """``n_threads`` threads, each on its own connection, call ``claim(offer)`` until ``queue`` stays empty; odd
    threads claim one job per call (the group-committed claims), even ones five. Returns (got, claimer, errors)."""
    from minipanda.core import dispatch

    lock = threading.Lock()
    got, claimer, errors = [], {}, []
    gate = threading.Barrier(n_threads)
    deadline = time.monotonic() + DEADLINE_S

    def worker(index):
        offer = dispatch.Offer(queue=queue, prod_source_label="managed", memory_mb=2000, cores=1,
                               n_jobs=1 if index % 2 else 5, node=f"thread-{index}", pilot_id=f"pilot-{index}")
        mine = []
        try:
            database.connect(reuse_if_open=True)
            gate.wait(timeout=60)
            empty = 0
            for _ in range(n_total + 50):
                if time.monotonic() > deadline:
                    errors.append(f"thread {index}: deadline reached")
                    break
                claimed = claim(offer)
                if not claimed:
                    empty += 1
                    if empty >= EMPTY_REPLIES_TO_STOP:
                        break
                    continue
                empty = 0
                if len(claimed) > offer.n_jobs:
                    errors.append(f"thread {index}: {len(claimed)} jobs for n_jobs={offer.n_jobs}")
                priorities = [d["currentPriority"] for d in claimed]
                if priorities != sorted(priorities, reverse=True):
                    errors.append(f"thread {index}: a claim not in priority order: {priorities}")
                mine.extend(d["PandaID"] for d in claimed)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
        finally:
            database.close()
            with lock:
                got.extend(mine)
                claimer.update({pid: f"thread-{index}" for pid in mine})

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S + 60)
    assert not any(thread.is_alive() for thread in threads), "claim threads did not stop"
    return got, claimer, errors


def submit_in_process(queue, n_total):
    from minipanda.core import jobs, queues

    # Mixed priorities, so the pick's ORDER BY has work to do while the threads race.
    specs = [make_job(queue, jobName=f"inproc.{i}", currentPriority=1000 + (i % 7) * 10) for i in range(n_total)]
    return [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]


def test_claim_jobs_from_16_threads_in_process(database):
    """dispatch.claim_jobs itself, each thread on its own connection: no job twice, each written by its claimer."""
    from minipanda.core import dispatch, models

    queue, n_total = "CONC_INPROC", 2000
    submitted = submit_in_process(queue, n_total)
    dispatch.group_commit.largest = 0
    got, claimer, errors = claim_from_threads(database, queue, n_total, dispatch.claim_jobs)
    assert not errors, errors[:5]
    assert_each_once(got, submitted)
    assert dispatch.group_commit.largest > 1, "no two single-job claims ever shared a transaction"

    database.connect(reuse_if_open=True)
    Job, StatusLog = models.Job, models.StatusLog
    rows = {job.panda_id: job for job in Job.select(Job.panda_id, Job.status, Job.node, Job.pilot_id)
            .where(Job.computing_site == queue)}
    assert set(rows) == set(submitted)
    assert {job.status for job in rows.values()} == {"sent"}
    wrong_owner = [pid for pid, job in rows.items() if job.node != claimer[pid]]
    assert not wrong_owner, f"jobs whose node is not the thread that got them: {wrong_owner[:10]}"
    # Exactly one activated -> sent transition was logged per job.
    logged = collections.Counter(
        row.panda_id for row in StatusLog.select(StatusLog.panda_id).where(
            StatusLog.panda_id.in_(submitted), StatusLog.new_status == "sent", StatusLog.old_status == "activated"))
    assert set(logged) == set(submitted) and set(logged.values()) == {1}


def unsafe_claim(offer, now=None):
    """A deliberately wrong claim: the pick is read outside the write transaction, and the UPDATE does not check
    that the jobs are still activated (the race the real claim's single conditional UPDATE closes)."""
    from minipanda.core import models
    from minipanda.core.db import database

    Job = models.Job
    picked = list(Job.select(Job.panda_id, Job.current_priority)
                  .where((Job.status == "activated") & (Job.computing_site == offer.queue))
                  .order_by(Job.current_priority.desc(), Job.panda_id).limit(offer.n_jobs).tuples())
    time.sleep(0.002)  # another pilot's pick reads the same rows meanwhile
    with database.atomic():
        Job.update(status="sent", node=offer.node).where(Job.panda_id.in_([pid for pid, _ in picked])).execute()
    return [{"PandaID": pid, "currentPriority": priority} for pid, priority in picked]


def test_the_in_process_check_fails_against_an_unsafe_claim(database):
    """The check above is worth something only if it catches a claim that hands one job to two pilots."""
    queue, n_total = "CONC_UNSAFE", 300
    submitted = submit_in_process(queue, n_total)
    got, claimer, errors = claim_from_threads(database, queue, n_total, unsafe_claim)
    # (errors, such as PostgreSQL's deadlocks between its unordered UPDATEs, do not matter here)
    with pytest.raises(AssertionError, match="dispatched more than once"):
        assert_each_once(got, submitted)


# ---- harvester commands ----------------------------------------------------------------------------------------

def test_an_unaddressed_harvester_command_is_taken_by_one_harvester_only(database, db_url):
    """Harvesters acquiring commands at the same moment: each command addressed to none of them goes to exactly
    one. On PostgreSQL the callers are made to interleave for certain: a row lock held here lets every caller
    read the commands as queued before any of them updates one, so only the update's own ``status = 'queued'``
    condition keeps a later caller from taking a command again. (On SQLite a write transaction takes the
    database's write lock at BEGIN, so callers cannot interleave; there the test checks the outcome only.)"""
    from minipanda.core import models
    from minipanda.workers import commands as harvester_commands

    n_commands, callers = 5, [f"harvester-{i}" for i in range(4)]
    commands = [harvester_commands.add_command("KILL_WORKERS", {"queue": f"Q{i}"}) for i in range(n_commands)]
    blocker = hold_row_locks(db_url, commands)
    taken, errors, start = {}, [], threading.Barrier(len(callers))

    def acquire(harvester_id):
        try:
            start.wait(30)
            taken[harvester_id] = [c["command_id"] for c in harvester_commands.acquire_commands(harvester_id, n_commands)]
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(f"{harvester_id}: {exc!r}")
        finally:
            database.close()

    threads = [threading.Thread(target=acquire, args=(h,)) for h in callers]
    for thread in threads:
        thread.start()
    if blocker is not None:
        waiting = lambda: blocker.waiting() == len(callers)  # noqa: E731
        assert eventually(waiting, timeout=60), f"{blocker.waiting()} of {len(callers)} callers wait on the lock"
        blocker.release()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    by_command = collections.Counter(cid for got in taken.values() for cid in got)
    assert by_command == collections.Counter(commands), f"commands taken more or less than once: {taken}"
    HC = models.HarvesterCommand
    rows = {row.id: row for row in HC.select().where(HC.id.in_(commands))}
    assert {cid: rows[cid].acquired_by for cid in commands} == {cid: h for h, got in taken.items() for cid in got}
    assert {row.status for row in rows.values()} == {"sent"}


class RowLocks:
    """A PostgreSQL transaction of its own holding row locks on some commands (callers' updates of them wait)."""

    def __init__(self, url, command_ids):
        import psycopg2

        self.conn = psycopg2.connect(url)
        with self.conn.cursor() as cur:
            cur.execute("UPDATE harvester_command SET status_time = status_time WHERE id = ANY(%s)",
                        (list(command_ids),))
        self.monitor = psycopg2.connect(url)
        self.monitor.autocommit = True

    def waiting(self):
        """How many other sessions of this database wait for a lock now."""
        with self.monitor.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            return cur.fetchone()[0]

    def release(self):
        self.conn.commit()
        self.conn.close()
        self.monitor.close()


def hold_row_locks(db_url, command_ids):
    """On PostgreSQL, RowLocks on ``command_ids``; on SQLite None (a transaction there locks the whole file)."""
    return RowLocks(db_url, command_ids) if db_url.startswith("postgresql") else None
