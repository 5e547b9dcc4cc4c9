"""harvester's database: the instance lease (one live harvester per home) and row leases (one owner per row)."""
import os
import subprocess
import sys
import threading

import pytest

from harvester import db, models
from harvester.errors import AlreadyRunning

NOW = db.utcnow()


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / "harvester.db")
    db.open_database(path)
    yield path
    db.close_database()


def test_second_live_harvester_refused_dead_one_taken_over(database):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        db.acquire_instance(owner=f"host:{sleeper.pid}")
        models.Lease.update(pid=sleeper.pid).execute()
        models.Worker.create(queue="Q", lease_owner=f"host:{sleeper.pid}/monitor",
                             lease_expires=db.utcnow().replace(year=2100))
        with pytest.raises(AlreadyRunning, match=f"pid {sleeper.pid}"):
            db.acquire_instance()
    finally:
        sleeper.kill()
        sleeper.wait()
    previous = db.acquire_instance()  # its pid is gone now: taken over at once, its row leases released
    assert previous == f"host:{sleeper.pid}"
    assert models.Worker.get().lease_owner is None
    assert models.Lease.get().pid == os.getpid()
    assert db.refresh_instance()
    assert not db.refresh_instance(owner="someone-else")


def test_row_leases_one_owner_per_row_under_concurrency(database):
    for _ in range(300):
        models.Worker.create(queue="Q", status="running")
    claimed, barrier = {}, threading.Barrier(6)

    def claimer(name):
        barrier.wait()
        while True:
            rows = db.claim_workers(name, models.Worker.queue == "Q", 60, limit=7)
            if not rows:
                return
            claimed.setdefault(name, []).extend(r.worker_id for r in rows)

    threads = [threading.Thread(target=claimer, args=(f"owner{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [worker_id for ids in claimed.values() for worker_id in ids]
    assert len(every) == len(set(every)) == 300  # each row to exactly one owner


def test_expired_lease_is_taken_released_lease_is_free(database):
    worker = models.Worker.create(queue="Q", status="running")
    assert [w.worker_id for w in db.claim_workers("a", models.Worker.queue == "Q", 60)] == [worker.worker_id]
    assert db.claim_workers("b", models.Worker.queue == "Q", 60) == []
    later = db.utcnow().replace(year=2100)
    assert [w.worker_id for w in db.claim_workers("b", models.Worker.queue == "Q", 60, now=later)] == [
        worker.worker_id]
    db.release_workers("b")
    assert len(db.claim_workers("c", models.Worker.queue == "Q", 60)) == 1


ALLOCATION = tuple(name for name, _ in db.ALLOCATION_COLUMNS)


@pytest.mark.parametrize("version, dropped", [(1, ("n_pilots", "waiting_pilots", "error_code") + ALLOCATION),
                                              (2, ("waiting_pilots", "error_code") + ALLOCATION),
                                              (3, ("error_code",) + ALLOCATION), (4, ALLOCATION), (5, ())])
def test_an_older_database_is_upgraded_and_keeps_its_workers(tmp_path, version, dropped):
    """A home written by an older harvester opens with its workers intact, each running one pilot, and its held
    jobs with the cores their definitions ask for."""
    import sqlite3

    path = str(tmp_path / "old.db")
    db.open_database(path)
    models.Worker.create(queue="OLD", status="running", batch_id="17")
    models.HeldJob.create(panda_id=5, queue="OLD", definition='{"PandaID": 5, "coreCount": 8}', fetched_time=NOW)
    models.HeldJob.create(panda_id=6, queue="OLD", definition='{"PandaID": 6}', fetched_time=NOW)
    db.close_database()
    with sqlite3.connect(path) as old:  # what an older harvester left: without the newer columns
        for column in dropped:
            old.execute(f"ALTER TABLE worker DROP COLUMN {column}")
        if version < 4:
            old.execute("ALTER TABLE held_job DROP COLUMN cores")
        old.execute("ALTER TABLE queue_state DROP COLUMN shape")
        old.execute("UPDATE setting SET value = ? WHERE key = 'schema_version'", (str(version),))
    db.open_database(path)
    try:
        worker = models.Worker.get()
        assert (worker.queue, worker.batch_id, worker.n_pilots, worker.waiting_pilots, worker.error_code,
                worker.nodes, worker.elapsed_s, worker.charge_source) == ("OLD", "17", 1, None, 0, 1, None, None)
        if version < 4:  # counted from the definitions by the upgrade to 4
            assert {job.panda_id: job.cores for job in models.HeldJob.select()} == {5: 8, 6: 1}
        assert models.Setting.get(models.Setting.key == "schema_version").value == str(db.SCHEMA_VERSION)
        models.QueueState.create(queue="OLD", shape='{"chosen": "1 node x 600 s"}')
        assert models.QueueState.get().shape == '{"chosen": "1 node x 600 s"}'
        models.Worker.create(queue="NEW", n_pilots=4)
        assert models.Worker.get(models.Worker.queue == "NEW").n_pilots == 4
    finally:
        db.close_database()


def test_a_claim_with_nothing_due_writes_nothing(database):
    models.Worker.create(queue="Q", status="running")
    writes = []
    database_obj = models.database.obj
    original = database_obj.begin

    def counting_begin(*args, **kwargs):
        writes.append(args)
        return original(*args, **kwargs)

    database_obj.begin = counting_begin
    try:
        assert db.claim_workers("a", models.Worker.queue == "OTHER", 60) == []
        assert writes == []  # an idle cycle takes no write lock
        assert len(db.claim_workers("a", models.Worker.queue == "Q", 60)) == 1
        assert len(writes) == 1
    finally:
        database_obj.begin = original


def test_each_agent_cycle_is_counted_and_its_error_kept(database):
    from harvester.runner import record_run

    record_run("monitor", NOW, 0.25)
    record_run("monitor", NOW, 0.5, "OSError: gone")
    later = NOW.replace(year=NOW.year + 1)
    record_run("monitor", later, 0.125)
    row = models.AgentRun.get(models.AgentRun.agent == "monitor")
    assert (row.runs, row.errors, row.last_duration, row.last_error) == (3, 1, 0.125, "OSError: gone")
    assert row.last_start == later and row.last_error_time == NOW
    record_run("sweeper", NOW, 0.0)
    assert models.AgentRun.get(models.AgentRun.agent == "sweeper").runs == 1
