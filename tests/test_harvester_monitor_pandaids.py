"""The monitor links the PandaIDs a pilot lists in its access point to its worker: each one once, not again at
every cycle (a pilot that ran hundreds of jobs would otherwise cost an insert per job per cycle)."""
import datetime
import json
import os

import pytest

from harvester import db, models
from harvester.agents import monitor as monitor_agent
from harvester.agents.monitor import Monitor
from harvester.batch.base import OK, BatchStatus, QueryResult
from harvester.context import Context, Settings
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)


class Plugin:
    def status(self, batch_ids):
        return QueryResult(OK, {b: BatchStatus("running", "") for b in batch_ids})


@pytest.fixture
def monitor(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    queue = loads(json.dumps({"queues": {"Q": {"mode": "pull"}}}), "q.json").queues["Q"]
    ctx = Context(str(tmp_path), None, Settings(), "h1")
    ctx.set_queues({"Q": queue}, {})
    ctx.plugin = lambda q: Plugin()
    yield Monitor(ctx)
    db.close_database()


def test_each_pandaid_of_a_pilot_is_linked_to_its_worker_once(monitor, tmp_path, monkeypatch):
    access_point = tmp_path / "workers" / "Q" / "1"
    access_point.mkdir(parents=True)
    models.Worker.create(queue="Q", status="running", batch_id="b1", submit_phase="done",
                         access_point=str(access_point), submit_time=NOW, start_time=NOW)
    inserted = []
    real = monitor_agent.link_jobs
    monkeypatch.setattr(monitor_agent, "link_jobs", lambda pairs, now: inserted.extend(pairs) or real(pairs, now))
    pandaids = os.path.join(access_point, "worker_pandaids.json")
    for cycle, ids in enumerate(([11, 12], [11, 12], [11, 12, 13])):
        with open(pandaids, "w") as handle:
            json.dump(ids, handle)
        monitor.run_once(NOW + datetime.timedelta(seconds=cycle * 60))
    assert sorted(panda_id for panda_id, _ in inserted) == [11, 12, 13]
    links = {row.panda_id: row for row in models.JobWorker.select()}
    assert sorted(links) == [11, 12, 13]
    assert {row.worker_id for row in links.values()} == {1}
    # the time each was first seen, read back as a time
    assert [links[n].time for n in (11, 12, 13)] == [NOW, NOW, NOW + datetime.timedelta(seconds=120)]


def test_a_cycle_records_every_pilots_heartbeat_and_pandaids_and_retries_them_when_the_write_fails(
        monitor, tmp_path, monkeypatch):
    """The heartbeats and new PandaIDs of a queue's pilots are written together once per cycle: all of them land,
    and when that write fails the PandaIDs are taken again at the next cycle, not forgotten."""
    beat = datetime.datetime(2026, 11, 30, 11, 59, 0)
    for n in (1, 2):
        access_point = tmp_path / "workers" / "Q" / str(n)
        access_point.mkdir(parents=True)
        models.Worker.create(queue="Q", status="running", batch_id=f"b{n}", submit_phase="done",
                             access_point=str(access_point), submit_time=NOW, start_time=NOW)
        with open(access_point / "worker_pandaids.json", "w") as handle:
            json.dump([100 * n, 100 * n + 1], handle)
        (access_point / "worker_heartbeat.json").write_text("{}")
        stamp = beat.replace(tzinfo=datetime.timezone.utc).timestamp() + n
        os.utime(access_point / "worker_heartbeat.json", (stamp, stamp))
    real = monitor_agent.link_jobs

    def broken(pairs, now):
        raise OSError("disk full")

    monkeypatch.setattr(monitor_agent, "link_jobs", broken)
    monitor.run_once(NOW)  # the queue's write fails: logged, the queue backs off
    assert models.JobWorker.select().count() == 0
    monkeypatch.setattr(monitor_agent, "link_jobs", real)
    models.QueueState.update(backoff_until=None, failures=0).execute()
    monitor.run_once(NOW + datetime.timedelta(seconds=60))
    assert sorted(pid for (pid,) in models.JobWorker.select(models.JobWorker.panda_id).tuples()) == [100, 101, 200,
                                                                                                      201]
    seen = {w.worker_id: w.last_seen for w in models.Worker.select()}
    assert sorted(seen.values()) == [beat + datetime.timedelta(seconds=1), beat + datetime.timedelta(seconds=2)]


def test_a_pandaid_linked_already_is_left_as_it_was(monitor):
    """link_jobs (one plain statement) skips a pair that is linked already (a push-mode binding, or a link written
    before harvester restarted) and adds the others, in one call, without an error."""
    earlier = NOW - datetime.timedelta(hours=1)
    models.JobWorker.create(panda_id=7, worker_id=3, time=earlier)
    with models.database.atomic():
        monitor_agent.link_jobs([(7, 3), (8, 3), (7, 4)], NOW)
    assert sorted((r.panda_id, r.worker_id, r.time) for r in models.JobWorker.select()) == [
        (7, 3, earlier), (7, 4, NOW), (8, 3, NOW)]
