"""Pilot updates in-process on each backend: updateJobsInBulk as set operations with every rule of a single update:
one transaction, a bad entry refused alone, conditional transitions whose RETURNING says who won, final states
that never change, repeated entries applied in order, files registered in bulk."""
import threading

import peewee
import pytest
from conftest import make_job
from minipanda.core import jobs, models, states, updates
from minipanda.errors import TOBEKILLED


def dispatched(n, **overrides):
    """``n`` submitted jobs moved to sent, as a getJob would."""
    ids = [row[0] for row in jobs.submit_jobs([make_job(**overrides) for _ in range(n)], "alice")]
    with models.database.atomic():
        states.change_job_status(ids, "sent", "test dispatch")
    return ids


def status_of(ids):
    return {j.panda_id: j.status for j in models.Job.select(models.Job.panda_id, models.Job.status)
            .where(models.Job.panda_id.in_(ids))}


def transitions(pid):
    return [(r.old_status, r.new_status) for r in models.StatusLog.select().where(models.StatusLog.panda_id == pid)
            .order_by(models.StatusLog.id) if r.kind == "transition"]


def test_bulk_update_is_one_transaction_and_a_bad_entry_is_refused_alone(database, monkeypatch):
    first, second, third = dispatched(3)
    (never_sent,) = [row[0] for row in jobs.submit_jobs([make_job()], "alice")]
    begins = []
    real = database.begin
    monkeypatch.setattr(database, "begin", lambda *a, **k: begins.append(1) or real(*a, **k))
    replies = updates.update_jobs([
        {"jobId": first, "state": "running", "pilotID": "p"},
        {"jobId": never_sent, "state": "finished", "pilotID": "p"},  # refused inside the transaction: 409
        {"jobId": second, "state": "bogus"},
        "not an object",
        {"jobId": third, "state": "finished", "pilotID": "p", "transExitCode": 0},
        {"jobId": second, "state": "failed", "pilotErrorDiag": "bad\x00byte"},  # cannot be stored: refused alone
        {"jobId": 10 ** 15, "state": "finished"},
    ])
    assert len(begins) == 1  # one transaction for the whole list
    assert [r["StatusCode"] for r in replies][0] == 0 and replies[4]["StatusCode"] == 0
    assert all(r["StatusCode"] != 0 for r in replies[1:4]) and "jobList[3]" in replies[3]["ErrorDiag"]
    assert "never dispatched" in replies[1]["ErrorDiag"] and "state:" in replies[2]["ErrorDiag"]
    assert "NUL" in replies[5]["ErrorDiag"] and replies[6]["command"] == TOBEKILLED
    assert status_of([first, second, third, never_sent]) == {first: "running", second: "sent", third: "finished",
                                                              never_sent: "activated"}


def test_a_batch_is_one_statement_per_group_whatever_its_size(database, monkeypatch):
    ids = dispatched(120)
    running = ids[:20]
    updates.update_jobs([{"jobId": pid, "state": "running", "pilotID": "p"} for pid in running])
    statements = []
    real = database.execute_sql
    monkeypatch.setattr(database, "execute_sql", lambda sql, params=None, *a, **k: statements.append(sql)
                        or real(sql, params, *a, **k))
    replies = updates.update_jobs([{"jobId": pid, "state": "finished", "pilotID": "p", "transExitCode": i % 3,
                                    "node": f"wn{i}"} for i, pid in enumerate(ids)])
    assert {r["StatusCode"] for r in replies} == {0}
    # one read, one UPDATE per (current state, reported state, columns): sent -> finished and running -> finished,
    # one status_log insert per transition (the rows give their PandaIDs, the states and reason are bound once)
    assert sum(sql.startswith("SELECT") for sql in statements) == 1
    assert sum('UPDATE "job" ' in sql for sql in statements) == 2
    assert sum(' INSERT INTO "status_log"' in sql for sql in statements) == 2
    # the live counts: on SQLite the job triggers pause for the batch, whose moves are one upsert (pause, upsert,
    # resume); PostgreSQL's statement triggers count each UPDATE themselves
    counted = [sql for sql in statements if "job_count" in sql]
    assert len(counted) == (0 if isinstance(database, peewee.PostgresqlDatabase) else 3)
    assert len(statements) - len(counted) == 5
    stored = {j.panda_id: j for j in models.Job.select().where(models.Job.panda_id.in_(ids))}
    assert {j.status for j in stored.values()} == {"finished"}
    assert [stored[pid].trans_exit_code for pid in ids[:4]] == [0, 1, 2, 0]
    assert stored[ids[7]].node == "wn7" and stored[ids[7]].end_time is not None
    assert transitions(ids[0]) == [(None, "activated"), ("activated", "sent"), ("sent", "running"),
                                   ("running", "finished")]
    assert transitions(ids[50]) == [(None, "activated"), ("activated", "sent"), ("sent", "finished")]


def test_a_job_changed_between_the_read_and_the_write_is_left_alone(database, monkeypatch):
    """PostgreSQL: the conditional UPDATE, not the read, decides: a job another writer moved after the batch read it
    (here: cancelled in between) is answered 'retry' and keeps the other writer's state; the rest of the batch
    applies. SQLite: the read and the UPDATEs are one transaction of the one writer, so the UPDATEs change every
    job read and return none of them; were one changed in between, the row counts differ and the whole batch fails
    and rolls back rather than answer a change it did not make; sent again, it applies."""
    ids = dispatched(5)
    victim = ids[2]
    real = updates._read_jobs

    def read_then_someone_cancels(panda_ids):
        found = real(panda_ids)
        database.execute_sql('UPDATE "job" SET "status" = \'cancelled\' WHERE "panda_id" = %s' % database.param,
                             [victim])
        return found

    monkeypatch.setattr(updates, "_read_jobs", read_then_someone_cancels)
    if not isinstance(database, peewee.PostgresqlDatabase):
        with pytest.raises(RuntimeError, match="read 5 sent jobs and changed 4 of them"):
            updates.update_jobs([{"jobId": pid, "state": "finished", "pilotID": "p"} for pid in ids])
        assert status_of(ids) == {pid: "sent" for pid in ids}
        monkeypatch.undo()
        replies = updates.update_jobs([{"jobId": pid, "state": "finished", "pilotID": "p"} for pid in ids])
        assert [r["StatusCode"] for r in replies] == [0] * 5 and status_of(ids) == {pid: "finished" for pid in ids}
        return
    replies = updates.update_jobs([{"jobId": pid, "state": "finished", "pilotID": "p"} for pid in ids])
    assert [r["StatusCode"] for r in replies] == [0, 0, replies[2]["StatusCode"], 0, 0]
    assert replies[2]["StatusCode"] != 0 and "changed state concurrently" in replies[2]["ErrorDiag"]
    assert status_of(ids) == {**{pid: "finished" for pid in ids}, victim: "cancelled"}
    assert ("sent", "finished") not in transitions(victim)


def test_a_sqlite_batch_reads_its_jobs_as_one_row_and_its_updates_return_no_rows(database, monkeypatch):
    """SQLite: the batch's jobs come back as one row of JSON and neither the transitions' UPDATE nor the heartbeats'
    returns rows (every row a statement hands back lets go of the GIL, the writer's lock in hand); what changed is
    what was read, and the live counts still see every move. PostgreSQL keeps its rows and RETURNING (concurrent
    writers: what an UPDATE changed is what it returned)."""
    from minipanda.core import counts

    ids = dispatched(6)
    updates.update_jobs([{"jobId": pid, "state": "running", "pilotID": "p"} for pid in ids[:2]])
    statements = []
    real = database.execute_sql
    monkeypatch.setattr(database, "execute_sql", lambda sql, params=None, *a, **k: statements.append(sql)
                        or real(sql, params, *a, **k))
    replies = updates.update_jobs([{"jobId": ids[0], "state": "running", "pilotID": "p", "node": "wn-a"},
                                   {"jobId": ids[1], "state": "running", "pilotID": "p", "node": "wn-b"}]
                                  + [{"jobId": pid, "state": "finished", "pilotID": "p", "transExitCode": 0}
                                     for pid in ids[2:]])
    monkeypatch.undo()
    assert [r["StatusCode"] for r in replies] == [0] * 6
    postgres = isinstance(database, peewee.PostgresqlDatabase)
    reads = [sql for sql in statements if sql.startswith("SELECT") and '"job"' in sql]
    assert len(reads) == 1 and ("json_group_array" in reads[0]) != postgres, reads
    changes = [sql for sql in statements if 'UPDATE "job" ' in sql]
    assert len(changes) == 2 and all(("RETURNING" in sql) == postgres for sql in changes), changes
    assert status_of(ids) == {**{pid: "running" for pid in ids[:2]}, **{pid: "finished" for pid in ids[2:]}}
    stored = {j.panda_id: j.node for j in models.Job.select().where(models.Job.panda_id.in_(ids[:2]))}
    assert stored == {ids[0]: "wn-a", ids[1]: "wn-b"}
    assert all(transitions(pid)[-1] == ("sent", "finished") for pid in ids[2:])
    queue = models.Job.get_by_id(ids[0]).computing_site
    live = counts.jobs_by_queue(queue)[queue]
    assert (live.get("finished"), live.get("running"), live.get("sent")) == (4, 2, None), live


def test_a_sqlite_heartbeat_of_a_job_changed_under_it_fails_the_batch_whole(database, monkeypatch):
    """SQLite: a heartbeat (a report of the job's own state) changes every job the batch read in that state; were
    one changed in between, the row counts differ and the batch fails and rolls back (PostgreSQL: answered 'retry',
    test_a_job_changed_between_the_read_and_the_write_is_left_alone)."""
    if isinstance(database, peewee.PostgresqlDatabase):
        return
    ids = dispatched(3)
    updates.update_jobs([{"jobId": pid, "state": "running", "pilotID": "p"} for pid in ids])
    real = updates._read_jobs

    def read_then_someone_cancels(panda_ids):
        found = real(panda_ids)
        database.execute_sql('UPDATE "job" SET "status" = \'cancelled\' WHERE "panda_id" = ?', [ids[1]])
        return found

    monkeypatch.setattr(updates, "_read_jobs", read_then_someone_cancels)
    with pytest.raises(RuntimeError, match="read 3 running jobs and changed 2 of them"):
        updates.update_jobs([{"jobId": pid, "state": "running", "pilotID": "p", "node": "wn-late"} for pid in ids])
    assert status_of(ids) == {pid: "running" for pid in ids}
    assert {j.node for j in models.Job.select().where(models.Job.panda_id.in_(ids))} != {"wn-late"}


def test_final_states_never_change_and_a_repeat_is_already_done(database):
    finished, failed, killed = dispatched(3)
    updates.update_jobs([{"jobId": finished, "state": "finished"}, {"jobId": failed, "state": "failed"}])
    jobs.kill_jobs([killed], "alice", True)
    replies = updates.update_jobs([{"jobId": finished, "state": "failed"}, {"jobId": failed, "state": "finished"},
                                   {"jobId": finished, "state": "finished"}, {"jobId": killed, "state": "running"},
                                   {"jobId": killed, "state": "failed", "pilotErrorCode": 1144}])
    assert [r["command"] for r in replies] == [TOBEKILLED, TOBEKILLED, "NULL", TOBEKILLED, TOBEKILLED]
    assert replies[2].get("alreadyDone") is True
    assert status_of([finished, failed, killed]) == {finished: "finished", failed: "failed", killed: "failed"}
    assert transitions(killed)[-1] == ("sent", "failed")  # a killed job's pilot may still report it failed


def test_entries_for_one_job_apply_in_the_order_sent(database):
    first, second = dispatched(2)
    replies = updates.update_jobs([{"jobId": first, "state": "running"}, {"jobId": second, "state": "finished"},
                                   {"jobId": first, "state": "finished"}, {"jobId": second, "state": "running"}])
    assert [r["StatusCode"] for r in replies] == [0, 0, 0, replies[3]["StatusCode"]]
    assert replies[3]["command"] == TOBEKILLED  # finished first: the later 'running' finds it final
    assert transitions(first)[-2:] == [("sent", "running"), ("running", "finished")]
    assert status_of([first, second]) == {first: "finished", second: "finished"}


def test_a_heartbeat_updates_fields_without_a_transition(database):
    (pid,) = dispatched(1)
    updates.update_jobs([{"jobId": pid, "state": "running"}])
    changed_at = models.Job.get_by_id(pid).state_changed_time
    replies = updates.update_jobs([{"jobId": pid, "state": "running", "maxRSS": 1234, "node": "n" * 300}])
    job = models.Job.get_by_id(pid)
    assert replies[0]["StatusCode"] == 0 and job.max_rss == 1234 and job.state_changed_time == changed_at
    assert job.node == "n" * 256  # cut to its column, as the diagnostics are
    assert transitions(pid)[-1] == ("sent", "running") and len(transitions(pid)) == 3


def test_output_files_of_a_batch_are_registered(database):
    files = [{"type": "output", "lfn": "out.root", "scope": "s"}, {"type": "log", "lfn": "log.tgz", "scope": "s"}]
    ids = dispatched(3, Files=files)
    replies = updates.update_jobs([
        {"jobId": ids[0], "state": "finished", "xml": {"out.root": {"guid": "g-0", "fsize": 10, "adler32": "0a0b0c0d",
                                                                    "surl": "file:///x/out.root"}}},
        {"jobId": ids[1], "state": "failed", "xml": '{"log.tgz": {"fsize": "7", "checksum": "md5:ff"}}'},
        {"jobId": ids[2], "state": "finished", "xml": {"g" * 70 + ".root": {"guid": "g" * 70}}},  # refused alone
    ])
    assert [r["StatusCode"] for r in replies][:2] == [0, 0] and replies[2]["StatusCode"] != 0
    stored = {(f.panda_id, f.lfn): f for f in models.JobFile.select()}
    out = stored[(ids[0], "out.root")]
    assert (out.guid, out.fsize, out.checksum, out.surl, out.status) == \
        ("g-0", 10, "ad:0a0b0c0d", "file:///x/out.root", "finished")
    log = stored[(ids[1], "log.tgz")]
    assert (log.fsize, log.checksum, log.status) == (7, "md5:ff", "failed") and log.guid  # the submitted guid kept
    assert stored[(ids[0], "log.tgz")].status == "defined"  # not reported: untouched


def test_concurrent_batches_for_the_same_jobs_each_job_changes_once(database):
    """Threads on their own connections report the same jobs finished (even threads) or failed (odd), in batches:
    every job ends with exactly one final transition, and exactly one reply per job says it was applied."""
    ids = dispatched(200)
    lock, replies, errors = threading.Lock(), {pid: [] for pid in ids}, []
    gate = threading.Barrier(6)

    def reporter(index):
        state = "failed" if index % 2 else "finished"
        try:
            database.connect(reuse_if_open=True)
            gate.wait(timeout=60)
            order = ids[index * 17:] + ids[:index * 17]  # each thread starts elsewhere
            for start in range(0, len(order), 40):
                batch = sorted(order[start:start + 40])
                answers = updates.update_jobs([{"jobId": pid, "state": state} for pid in batch])
                with lock:
                    for pid, answer in zip(batch, answers):
                        replies[pid].append(answer)
        except Exception as exc:  # noqa: BLE001 - asserted on below
            errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
        finally:
            database.close()

    threads = [threading.Thread(target=reporter, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    database.connect(reuse_if_open=True)
    assert not errors, errors
    final = status_of(ids)
    for pid in ids:
        finals = [t for t in transitions(pid) if t[1] in ("finished", "failed")]
        assert finals == [("sent", final[pid])], (pid, finals)
        applied = [r for r in replies[pid] if r["StatusCode"] == 0 and r["command"] == "NULL"
                   and not r.get("alreadyDone")]
        assert len(applied) == 1, (pid, replies[pid])


def test_the_judged_job_has_each_column_under_its_own_name(database):
    """An update is judged on the columns read for its job (updates._read_jobs): each under its own name, every one
    of them set to a value the others do not have."""
    pid = dispatched(1)[0]
    models.Job.update(command_to_pilot="tobekilled", attempt_nr=7, pilot_id="pilot-x", batch_id="batch-y",
                      harvester_id="harvester-z", worker_id=42).where(models.Job.panda_id == pid).execute()
    job, row = updates._read_jobs([pid])[pid], models.Job.get_by_id(pid)
    assert {name: getattr(job, name) for name in updates._READ} == {name: getattr(row, name) for name in updates._READ}
    assert (job.status, job.attempt_nr, job.worker_id) == ("sent", 7, 42)


def test_each_reported_value_lands_in_its_own_column_and_a_pilot_id_is_given_once(database):
    """The UPDATE's columns and each entry's values are worked out before the writer's lock (in name order): every
    value still lands in its own column, and a job without a pilot id gets the reporting pilot's, with the rest."""
    with_pilot, without = dispatched(2)
    models.Job.update(pilot_id="p0").where(models.Job.panda_id == with_pilot).execute()
    replies = updates.update_jobs([
        {"jobId": with_pilot, "state": "running", "pilotID": "p0", "transExitCode": 3, "pilotErrorCode": 1305,
         "cpuConsumptionTime": 17, "node": "wn-1", "pilotErrorDiag": "diag one"},
        {"jobId": without, "state": "running", "pilotID": "p9", "batchID": "b9", "exeErrorCode": 8, "node": "wn-2"}])
    assert [r["StatusCode"] for r in replies] == [0, 0]
    one, two = (models.Job.get_by_id(pid) for pid in (with_pilot, without))
    assert (one.trans_exit_code, one.pilot_error_code, one.cpu_consumption_time, one.node, one.pilot_error_diag,
            one.pilot_id) == (3, 1305, 17, "wn-1", "diag one", "p0")
    assert (two.exe_error_code, two.node, two.pilot_id, two.batch_id, two.status) == (8, "wn-2", "p9", "b9",
                                                                                      "running")


def test_an_accepted_entrys_reply_is_built_after_the_commit(database, monkeypatch):
    """Nothing but the judging and the writes happens while the writer's lock is held: the replies of accepted
    entries are made after the COMMIT, each its own dict, a killed job's with tobekilled."""
    ids = dispatched(3)
    models.Job.update(command_to_pilot=TOBEKILLED).where(models.Job.panda_id == ids[1]).execute()
    made_in_transaction = []
    real = updates._reply
    monkeypatch.setattr(updates, "_reply", lambda *a, **k: made_in_transaction.append(
        database.in_transaction()) or real(*a, **k))
    replies = updates.update_jobs([{"jobId": ids[0], "state": "running", "pilotID": "p"},
                                   {"jobId": ids[1], "state": "failed", "pilotID": "p"},
                                   {"jobId": ids[2], "state": "running", "pilotID": "p"}])
    assert made_in_transaction == [False, False, False]
    assert [(r["StatusCode"], r["command"]) for r in replies] == [(0, "NULL"), (0, TOBEKILLED), (0, "NULL")]
    assert replies[0] is not replies[2]
    assert status_of(ids) == {ids[0]: "running", ids[1]: "failed", ids[2]: "running"}
