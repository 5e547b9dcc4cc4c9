"""The monitor's rules, one test each: Monitor.run_once(now) with a fixed now on a real harvester database, real
access points on disk, and a stand-in batch plugin that answers the one status query (no threads, no scheduler;
the real plugins are tested against their schedulers in the batch tests)."""
import datetime
import json
import os

import pytest

from harvester import db, models
from harvester.agents.monitor import FAILED_IN_A_ROW, PILOT_NO_JOB, Monitor
from harvester.batch.base import OK, RETRY, BatchStatus, QueryResult
from harvester.context import Context, Settings
from harvester.states import WorkerError, WorkerStatus
from pilot.outbox import Outbox
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)
GRACE = Settings().missing_grace_s


class Plugin:
    """The batch plugin's status query: ``answer(batch_ids)`` gives the QueryResult; every call is recorded."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def status(self, batch_ids):
        self.calls.append(sorted(batch_ids))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(batch_ids)


class FakeContext(Context):
    def __init__(self, home, plugin):
        super().__init__(str(home), None, Settings(), "h1")
        self.fake_plugin = plugin
        self.wake = lambda name: None

    def plugin(self, queue):
        return self.fake_plugin


def all_say(state, **fields):
    return lambda ids: QueryResult(OK, {batch_id: BatchStatus(state, **fields) for batch_id in ids})


@pytest.fixture
def home(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield tmp_path
    db.close_database()


def monitor(home, answer, mode="pull"):
    queue = loads(json.dumps({"queues": {"Q": {"mode": mode}}}), "q.json").queues["Q"]
    ctx = FakeContext(home, Plugin(answer))
    ctx.set_queues({"Q": queue}, {})
    return Monitor(ctx), ctx


def worker(ctx, status="running", batch_id=None, **columns):
    row = models.Worker.create(queue="Q", status=status, submit_phase="done", modification_time=NOW,
                               status_changed=NOW, **columns)
    access_point = ctx.access_point(ctx.queues["Q"], row.worker_id)
    os.makedirs(access_point)
    models.Worker.update(access_point=access_point, batch_id=batch_id or str(1000 + row.worker_id)).where(
        models.Worker.worker_id == row.worker_id).execute()
    return models.Worker.get_by_id(row.worker_id)


def reload(row):
    return models.Worker.get_by_id(row.worker_id)


def test_the_monitor_makes_one_status_call_per_queue_with_all_its_workers(home):
    agent, ctx = monitor(home, all_say("running"))
    workers = [worker(ctx) for _ in range(5)]
    agent.run_once(NOW)
    assert ctx.fake_plugin.calls == [sorted(w.batch_id for w in workers)]


def test_a_cycle_with_news_wakes_the_agents_that_act_on_it_and_one_without_counts_none(home):
    """What the runner backs off on: a cycle that saw nothing change returns 0 and wakes nobody; a worker that
    ended is news for the adjuster (room for a new one), the propagator (the server must hear) and the sweeper
    (its pilot token is revoked)."""
    agent, ctx = monitor(home, all_say("running"))
    woken = []
    ctx.wake = woken.append
    row = worker(ctx)
    assert agent.run_once(NOW) == 0 and woken == []
    ctx.fake_plugin.answer = all_say("finished")
    assert agent.run_once(NOW) == 1
    assert reload(row).status == "finished"
    assert sorted(woken) == ["adjuster", "propagator", "sweeper"]


@pytest.mark.parametrize("answer", [lambda ids: QueryResult(RETRY, {}, "slurmctld not responding"),
                                    RuntimeError("ssh connection dropped")], ids=["retry", "raises"])
def test_a_failing_status_query_is_a_retry_that_changes_no_worker(home, answer):
    """A scheduler that does not answer says nothing about the jobs: never 'all gone'."""
    agent, ctx = monitor(home, answer)
    workers = [worker(ctx, status) for status in ("submitted", "running", "idle")]
    agent.run_once(NOW)
    assert [reload(w).status for w in workers] == ["submitted", "running", "idle"]
    assert not models.WorkerStatusLog.select().exists()
    assert db.queue_state("Q").failures == 1  # the queue's failure, recorded and backed off


def test_a_pilot_exiting_82_ends_its_worker_finished_and_does_not_back_the_queue_off(home):
    """The pilot found no job: that is no failure, however many pilots in a row find none."""
    agent, ctx = monitor(home, all_say("failed", exit_code=PILOT_NO_JOB, diag="exit 82"))
    workers = [worker(ctx) for _ in range(FAILED_IN_A_ROW + 1)]
    agent.run_once(NOW)
    assert {reload(w).status for w in workers} == {"finished"}
    assert {reload(w).error_code for w in workers} == {WorkerError.NONE}
    state = db.queue_state("Q")
    assert (state.failures, state.backoff_until) == (0, None)


def test_workers_failing_in_a_row_back_the_queue_off(home):
    """The other side of the rule above: a pilot that exits 1 again and again does back its queue off."""
    agent, ctx = monitor(home, all_say("failed", exit_code=1, diag="exit 1"))
    workers = [worker(ctx) for _ in range(FAILED_IN_A_ROW)]
    agent.run_once(NOW)
    assert {(reload(w).status, reload(w).error_code) for w in workers} == {("failed", WorkerError.BATCH_JOB_FAILED)}
    assert db.queue_state("Q").backoff_until is not None


def test_walltime_expiry_is_told_apart_from_a_payload_failure(home):
    """Slurm TIMEOUT (the plugin says walltime_exceeded) ends the worker failed with error WALLTIME; an exit 1
    with BATCH_JOB_FAILED."""
    def answer(ids):
        timeout, broken = sorted(ids)
        return QueryResult(OK, {timeout: BatchStatus("failed", "TIMEOUT", 143, "TIMEOUT", walltime_exceeded=True),
                                broken: BatchStatus("failed", "FAILED exit 1", 1, "FAILED")})
    agent, ctx = monitor(home, answer)
    timed_out, broken = worker(ctx, batch_id="1"), worker(ctx, batch_id="2")
    agent.run_once(NOW)
    assert (reload(timed_out).status, reload(timed_out).error_code) == ("failed", WorkerError.WALLTIME)
    assert (reload(broken).status, reload(broken).error_code) == ("failed", WorkerError.BATCH_JOB_FAILED)


def test_a_batch_job_the_scheduler_no_longer_knows_is_missing_for_a_grace_period_then_failed(home):
    """Missing, not failed at once: looked up again each cycle; found again it goes on; still unknown after the
    grace period it fails (VANISHED) and its held jobs are harvester's no more."""
    known = set()
    agent, ctx = monitor(home, lambda ids: QueryResult(OK, {i: BatchStatus("running") for i in ids if i in known}))
    lost, back = worker(ctx), worker(ctx)
    models.HeldJob.create(panda_id=7, queue="Q", definition="{}", status="fed", worker_id=lost.worker_id,
                          fetched_time=NOW)
    agent.run_once(NOW)
    assert reload(lost).status == reload(back).status == "missing"
    known.add(back.batch_id)
    later = NOW + datetime.timedelta(seconds=GRACE - 1)
    agent.run_once(later)
    assert (reload(lost).status, reload(back).status) == ("missing", "running")
    assert ctx.fake_plugin.calls[-1] == sorted([lost.batch_id, back.batch_id])  # looked up again
    agent.run_once(NOW + datetime.timedelta(seconds=GRACE))
    row = reload(lost)
    assert (row.status, row.error_code) == ("failed", WorkerError.VANISHED) and "vanished" in row.diag
    assert models.HeldJob.get_by_id(7).status == "done"
    reasons = [r.new_status for r in models.WorkerStatusLog.select().where(
        models.WorkerStatusLog.worker_id == back.worker_id).order_by(models.WorkerStatusLog.id)]
    assert reasons == ["missing", "running"]


def test_a_missing_job_found_still_queued_is_submitted_again(home):
    agent, ctx = monitor(home, lambda ids: QueryResult(OK, {}))
    row = worker(ctx, status="submitted")
    agent.run_once(NOW)
    assert reload(row).status == WorkerStatus.MISSING.value
    ctx.fake_plugin.answer = all_say("submitted")
    agent.run_once(NOW + datetime.timedelta(seconds=10))
    assert reload(row).status == WorkerStatus.SUBMITTED.value


def test_a_final_report_is_queued_once_per_job_and_attempt(home):
    """A pilot's spooled final report, claimed again after a crash (the claim is this harvester's), is queued
    once; the same job's next attempt is a report of its own."""
    agent, ctx = monitor(home, all_say("running"))
    row = worker(ctx)
    outbox = Outbox(os.path.join(row.access_point, "outbox"))
    outbox.put({"jobId": 5, "attemptNr": 1, "state": "failed"})
    agent.run_once(NOW)
    agent.run_once(NOW + datetime.timedelta(seconds=10))  # the claimed entry is found again: not queued twice
    outbox.put({"jobId": 5, "attemptNr": 2, "state": "finished"})
    agent.run_once(NOW + datetime.timedelta(seconds=20))
    assert sorted(r.key for r in models.Outbox.select()) == ["job:5:1:final", "job:5:2:final"]
