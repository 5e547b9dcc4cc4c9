"""The sweeper and the command agent on a real harvester database, the real local batch plugin and real pilots
(here `sleep` processes); only the server is a recorder of the calls made to it (the HTTP boundary; the real
server is exercised end to end in test_harvester_e2e.py and test_harvester_faults.py)."""
import datetime
import json
import os
import sys

import pytest

from harvester import db, models
from harvester.agents.commands import Commands
from harvester.agents.sweeper import Sweeper
from harvester.batch.base import WorkerSpec
from harvester.context import Context, Settings
from queueconfig.loader import loads

from conftest import eventually as wait_for

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)


class RecordingServer:
    url = "http://127.0.0.1:9"

    def __init__(self, commands=()):
        self.calls, self.commands = [], list(commands)

    def revoke_pilot_tokens(self, jtis):
        self.calls.append(("revoke", sorted(jtis)))
        return {"revoked": len(jtis)}

    def heartbeat(self, start_time, agents=None, queues=None, home=None):
        self.calls.append(("heartbeat", start_time))
        self.agents, self.queues = agents, queues

    def acquire_commands(self, n_commands=20):
        commands, self.commands = self.commands, []
        return commands

    def acknowledge_commands(self, ids):
        self.calls.append(("ack", sorted(ids)))


@pytest.fixture
def setup(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    queue = loads(json.dumps({"queues": {"Q": {"pilot": {"heartbeat": 60, "lost_heartbeat": 600},
                                                     "sweeper": {"max_queued_time": 3600, "stale_time": 600,
                                                                 "keep_finished": 60, "keep_failed": 600}}}}),
                  "q.json").queues["Q"]
    server = RecordingServer()
    ctx = Context(str(tmp_path / "home"), server, Settings(), "h1")
    ctx.set_queues({"Q": queue}, {})
    ctx.wake = lambda name: None
    started = []
    yield ctx, queue, server, started
    ctx.plugin(queue).cancel(started)
    db.close_database()


def start_pilot(ctx, queue, worker, argv=(sys.executable, "-c", "import time; time.sleep(120)")):
    """A real local batch job (by default a sleeping 'pilot') for a worker row."""
    access_point = ctx.access_point(queue, worker.worker_id)
    spec = WorkerSpec(worker_id=worker.worker_id, access_point=access_point, argv=argv, environment={}, cores=1,
                      memory_mb=100, walltime_s=600)
    plugin = ctx.plugin(queue)
    plugin.write_script(spec)
    (result,) = plugin.submit([spec])
    models.Worker.update(batch_id=result.batch_id, access_point=access_point).where(
        models.Worker.worker_id == worker.worker_id).execute()
    return result.batch_id


def test_overdue_workers_are_killed_for_real(setup):
    ctx, queue, _, started = setup
    old = NOW - datetime.timedelta(hours=2)
    queued = models.Worker.create(queue="Q", status="submitted", submit_phase="done", submit_time=old)
    stale = models.Worker.create(queue="Q", status="running", submit_phase="done", submit_time=old,
                                 start_time=old, last_seen=NOW - datetime.timedelta(seconds=900))
    alive = models.Worker.create(queue="Q", status="running", submit_phase="done", submit_time=old,
                                 start_time=old, last_seen=NOW - datetime.timedelta(seconds=30))
    # seen 620 s ago: over the 600 s, but an idle monitor reads heartbeats only every 4 x 10 s (idle_factor x
    # monitor_period), so its pilot may well have beaten since
    unread = models.Worker.create(queue="Q", status="running", submit_phase="done", submit_time=old,
                                  start_time=old, last_seen=NOW - datetime.timedelta(seconds=620))
    for worker in (queued, stale, alive, unread):
        started.append(start_pilot(ctx, queue, worker))
    assert Sweeper(ctx).run_once(NOW) == 2
    rows = {w.worker_id: w for w in models.Worker.select()}
    assert rows[queued.worker_id].status == "cancelled"
    assert "queued for more than 3600 s" in rows[queued.worker_id].diag
    assert rows[stale.worker_id].status == "cancelled"
    assert "no sign of life from the pilot for more than 600 s" in rows[stale.worker_id].diag
    assert rows[alive.worker_id].status == "running" and rows[alive.worker_id].kill_reason is None
    assert rows[unread.worker_id].status == "running" and rows[unread.worker_id].kill_reason is None
    states = ctx.plugin(queue).status([rows[queued.worker_id].batch_id, rows[alive.worker_id].batch_id]).states
    assert states[rows[alive.worker_id].batch_id].state == "running"


def test_unsubmitted_worker_killed_before_submission_releases_its_jobs(setup):
    ctx, _, _, _ = setup
    worker = models.Worker.create(queue="Q", status="submitted", submit_phase="pending", kill_reason="operator")
    models.HeldJob.create(panda_id=7, queue="Q", definition="{}", worker_id=worker.worker_id, status="fed",
                          fetched_time=NOW)
    Sweeper(ctx).run_once(NOW)
    assert models.Worker.get_by_id(worker.worker_id).status == "cancelled"
    assert models.HeldJob.get_by_id(7).worker_id is None  # back to the queue for the next worker


def test_access_points_cleaned_after_retention_failed_kept_longer(setup):
    ctx, queue, _, _ = setup
    rows = {}
    for status in ("finished", "failed"):
        worker = models.Worker.create(queue="Q", status=status, submit_phase="done", reported=True,
                                      end_time=NOW - datetime.timedelta(seconds=300))
        path = ctx.access_point(queue, worker.worker_id)
        os.makedirs(path)
        open(os.path.join(path, "job.out"), "w").close()
        models.Worker.update(access_point=path).where(models.Worker.worker_id == worker.worker_id).execute()
        rows[status] = (worker.worker_id, path)
    Sweeper(ctx).run_once(NOW)
    assert not os.path.exists(rows["finished"][1])  # keep_finished 60 s: gone
    assert os.path.exists(rows["failed"][1])  # keep_failed 600 s: kept
    assert models.Worker.get_by_id(rows["finished"][0]).cleaned
    Sweeper(ctx).run_once(NOW + datetime.timedelta(seconds=600))
    assert not os.path.exists(rows["failed"][1])


def test_cleaning_a_worker_up_makes_the_plugin_forget_its_batch_job(setup):
    """The local plugin's spool records and its cache of them go with the worker, not grow forever."""
    ctx, queue, _, _ = setup
    plugin, rows = ctx.plugin(queue), {}
    for status in ("finished", "failed"):
        worker = models.Worker.create(queue="Q", status="running", submit_phase="done")
        batch_id = start_pilot(ctx, queue, worker, argv=("true",))
        wait_for(lambda: plugin.status([batch_id]).states[batch_id].state == "finished")
        models.Worker.update(status=status, reported=True, end_time=NOW - datetime.timedelta(seconds=300)).where(
            models.Worker.worker_id == worker.worker_id).execute()
        rows[status] = batch_id
    spool = ctx.spool_dir(queue)
    assert sorted(os.listdir(spool)) == sorted(f"{b}.json" for b in rows.values())
    Sweeper(ctx).run_once(NOW)
    assert os.listdir(spool) == [f"{rows['failed']}.json"]  # keep_failed 600 s: its worker is not cleaned yet
    assert set(plugin.status(list(rows.values())).states) == {rows["failed"]}
    assert rows["finished"] not in plugin.records.known

def test_the_sweeper_cleans_only_reported_workers(setup):
    """An ended worker the server has not heard of yet keeps its access point (its pilot's files may still hold a
    report to forward) until the propagator reported it."""
    ctx, queue, _, _ = setup
    paths = {}
    for reported in (True, False):
        worker = models.Worker.create(queue="Q", status="finished", submit_phase="done", reported=reported,
                                      end_time=NOW - datetime.timedelta(seconds=300))
        paths[reported] = ctx.access_point(queue, worker.worker_id)
        os.makedirs(paths[reported])
        models.Worker.update(access_point=paths[reported]).where(
            models.Worker.worker_id == worker.worker_id).execute()
    Sweeper(ctx).run_once(NOW)
    assert not os.path.exists(paths[True]) and os.path.exists(paths[False])
    assert [w.reported for w in models.Worker.select().where(models.Worker.cleaned == True)] == [True]  # noqa: E712


def test_pilot_tokens_of_ended_workers_revoked_once(setup):
    ctx, _, server, _ = setup
    models.Worker.create(queue="Q", status="finished", submit_phase="done", pilot_token_jti="a")
    models.Worker.create(queue="Q", status="running", submit_phase="done", pilot_token_jti="b")
    sweeper = Sweeper(ctx)
    sweeper.run_once(NOW)
    sweeper.run_once(NOW)
    assert server.calls == [("revoke", ["a"])]


def test_commands_executed_then_acknowledged(setup):
    ctx, _, server, _ = setup
    live = models.Worker.create(queue="Q", status="running", submit_phase="done")
    done = models.Worker.create(queue="Q", status="finished", submit_phase="done")
    other = models.Worker.create(queue="R", status="running", submit_phase="done")
    server.commands = [{"command_id": 1, "command": "KILL_WORKERS", "params": {"queue": "Q"}},
                       {"command_id": 2, "command": "SET_N_WORKERS", "params": {"queue": "Q", "n_workers": 3}},
                       {"command_id": 3, "command": "REPORT_WORKER_STATS", "params": {"queue": "Q"}},
                       {"command_id": 4, "command": "NO_SUCH_COMMAND", "params": {}}]
    assert Commands(ctx).run_once(NOW) == 4
    assert models.Worker.get_by_id(live.worker_id).kill_reason == "KILL_WORKERS from the server"
    assert models.Worker.get_by_id(done.worker_id).kill_reason is None  # final workers are left alone
    assert models.Worker.get_by_id(other.worker_id).kill_reason is None
    state = models.QueueState.get_by_id("Q")
    assert state.n_workers_override == 3 and state.stats_requested
    assert server.calls[0][0] == "heartbeat" and server.calls[-1] == ("ack", [1, 2, 3, 4])
    assert "unknown command" in models.Command.get_by_id(4).result
    assert server.agents == {}  # no agent has run in this database yet; the runner records each cycle
