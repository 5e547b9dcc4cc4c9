"""The submitter's rules, one test each: Submitter.run_once(now) with a fixed now on a real harvester database,
real access points (local transport), a stand-in batch plugin and a stand-in for the one server call it makes
(minting the pilot token). No threads; the real plugins and a real server are in the batch and e2e tests."""
import datetime
import json
import os
import sqlite3
import stat

import pytest

from harvester import db, models
from harvester.handoff import pilots
from harvester.agents.submitter import TOKEN_MARGIN_S, Submitter
from harvester.batch.base import FATAL, OK, RETRY, SubmitResult
from harvester.context import Context, Settings
from harvester.errors import TransitionError
from harvester.states import SubmitPhase, change_submit_phase
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)
HOUR = datetime.timedelta(hours=1)


class Plugin:
    """Writes no script and answers submit() with ``answer(specs)``; records what it was given."""

    def __init__(self, answer):
        self.answer, self.submitted = answer, []

    def write_script(self, spec):
        return os.path.join(spec.access_point, "job.sh")

    def submit(self, specs):
        self.submitted.append([spec.worker_id for spec in specs])
        return self.answer(specs)

    def find(self, access_point):
        return None


class Server:
    url = "http://127.0.0.1:9"

    def __init__(self):
        self.minted, self.minted_for_jobs = [], []

    def mint_pilot_token(self, worker_id, queue, lifetime, panda_ids=()):
        self.minted.append((worker_id, queue, lifetime))
        self.minted_for_jobs.append(list(panda_ids))
        return {"token": f"token-of-{worker_id}", "jti": f"jti-{worker_id}"}


class FakeContext(Context):
    def __init__(self, home, plugin):
        super().__init__(str(home), Server(), Settings(), "h1")
        self.fake_plugin = plugin
        self.wake = lambda name: None

    def plugin(self, queue):
        return self.fake_plugin


def all_ok(specs):
    return [SubmitResult(spec.worker_id, OK, f"batch-{spec.worker_id}") for spec in specs]


@pytest.fixture
def home(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield tmp_path
    db.close_database()


def submitter(home, answer, mode=None, **limits):
    raw = {"limits": {"maxWorkers": 4, **limits}, "pilot": {"command": ["sleep", "1"], "lifetime": 3000}}
    if mode:
        raw["mode"] = mode
    queue = loads(json.dumps({"queues": {"Q": raw}}), "q.json").queues["Q"]
    ctx = FakeContext(home, Plugin(answer))
    ctx.set_queues({"Q": queue}, {})
    return Submitter(ctx), ctx


def decide(n):
    """What the adjuster leaves for the submitter."""
    db.queue_state("Q")
    models.QueueState.update(to_submit=n).where(models.QueueState.queue == "Q").execute()


def only_worker():
    return models.Worker.get()


def test_the_submitting_phase_is_committed_before_the_plugin_is_called(home):
    """What a crash during plugin.submit leaves behind must say 'submitting' (never submit it again), so the phase
    is committed, as another connection sees it, before the batch system hears of the worker."""
    seen = []

    def answer(specs):
        with sqlite3.connect(str(home / "harvester.db")) as other:  # another process's view: committed rows only
            seen.extend(other.execute("SELECT submit_phase, submission_attempts FROM worker WHERE worker_id = ?",
                                      (spec.worker_id,)).fetchone() for spec in specs)
        return all_ok(specs)

    agent, _ = submitter(home, answer)
    decide(2)
    assert agent.run_once(NOW) == 2
    assert seen == [("submitting", 1), ("submitting", 1)]
    assert {(w.submit_phase, w.batch_id) for w in models.Worker.select()} == {("done", "batch-1"),
                                                                             ("done", "batch-2")}


def test_a_plugin_raising_mid_submit_leaves_the_worker_to_retry_never_submitted_twice_at_once(home):
    def answer(specs):
        raise RuntimeError("connection to the submit host dropped")

    agent, ctx = submitter(home, answer)
    decide(1)
    agent.run_once(NOW)
    worker = only_worker()
    assert (worker.status, worker.submit_phase, worker.submission_attempts) == ("submitted", "pending", 1)
    assert "plugin raised RuntimeError" in worker.diag and worker.next_attempt > NOW
    agent.run_once(NOW + datetime.timedelta(seconds=1))  # before next_attempt: left alone
    assert ctx.fake_plugin.submitted == [[worker.worker_id]]


def test_max_submission_attempts_missed_after_exactly_n_attempts(home):
    agent, ctx = submitter(home, lambda specs: [SubmitResult(s.worker_id, RETRY, message="busy") for s in specs],
                           maxSubmissionAttempts=3)
    decide(1)
    for attempt in (1, 2):
        agent.run_once(NOW + (attempt - 1) * HOUR)  # later than the retry wait and the queue's backoff
        worker = only_worker()
        assert (worker.status, worker.submit_phase, worker.submission_attempts) == ("submitted", "pending", attempt)
    agent.run_once(NOW + 2 * HOUR)
    worker = only_worker()
    assert (worker.status, worker.submit_phase, worker.submission_attempts) == ("missed", "done", 3)
    assert "3 of 3 attempts used" in models.WorkerStatusLog.select().order_by(
        models.WorkerStatusLog.id.desc()).get().reason
    agent.run_once(NOW + 3 * HOUR)
    assert len(ctx.fake_plugin.submitted) == 3


def test_a_fatal_answer_is_missed_at_once(home):
    agent, _ = submitter(home, lambda specs: [SubmitResult(s.worker_id, FATAL, message="invalid partition")
                                              for s in specs])
    decide(1)
    agent.run_once(NOW)
    worker = only_worker()
    assert (worker.status, worker.submit_phase, worker.submission_attempts) == ("missed", "done", 1)
    assert worker.diag.endswith("invalid partition")


def test_a_minted_pilot_token_lives_walltime_plus_an_hour_and_is_written_0600(home):
    agent, ctx = submitter(home, all_ok)
    decide(1)
    agent.run_once(NOW)
    worker = only_worker()
    walltime = pilots.worker_walltime(ctx.queues["Q"])
    assert worker.walltime_s == walltime and TOKEN_MARGIN_S == 3600
    assert ctx.server.minted == [(worker.worker_id, "Q", walltime + 3600)]
    path = os.path.join(worker.access_point, pilots.TOKEN_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        assert handle.read() == f"token-of-{worker.worker_id}"
    assert worker.pilot_token_jti == f"jti-{worker.worker_id}"


def test_a_push_workers_token_is_minted_for_the_jobs_it_holds(home):
    """The server binds a minted pilot token to its worker's jobs at once (no other worker's pilot may update them),
    so harvester asks for the token with the PandaIDs the worker was given."""
    agent, ctx = submitter(home, all_ok, mode="push")
    models.HeldJob.create(panda_id=7, queue="Q", definition="{}", status="fed", fetched_time=NOW)
    decide(1)
    agent.run_once(NOW)
    assert ctx.server.minted_for_jobs == [[7]] and models.HeldJob.get_by_id(7).worker_id == only_worker().worker_id


def test_every_worker_starts_with_one_status_log_row_and_a_note_per_submission_step(home):
    agent, _ = submitter(home, all_ok)
    decide(1)
    agent.run_once(NOW)
    worker = only_worker()
    rows = [(r.old_status, r.new_status, r.kind) for r in models.WorkerStatusLog.select().where(
        models.WorkerStatusLog.worker_id == worker.worker_id).order_by(models.WorkerStatusLog.id)]
    assert rows == [(None, "submitted", "transition"), ("submitted", "submitted", "note"),
                    ("submitted", "submitted", "note")]
    with pytest.raises(TransitionError):  # done is the end of the submission: nothing moves it back
        change_submit_phase(worker, SubmitPhase.PENDING, "try", NOW)
