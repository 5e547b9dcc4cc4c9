"""The adjuster's numbers for a table of situations: decide() directly, and Adjuster.run_once(now) on a real
harvester database with a fixed now."""
import datetime
import json
import threading

import pytest

from harvester import db, models
from harvester.agents import adjuster as adjuster_module
from harvester.agents.adjuster import Adjuster, decide
from harvester.agents.submitter import Submitter
from harvester.context import Context, Settings
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)


def queue(**over):
    raw = {"mode": "pull", "limits": {"maxWorkers": 10, "nQueueLimitWorker": 4, "maxNewWorkersPerCycle": 3}}
    for key, value in over.items():
        if key == "limits":
            raw["limits"] = {**raw["limits"], **value}
        else:
            raw[key] = value
    return loads(json.dumps({"queues": {"Q": raw}}), "q.json").queues["Q"]


# (description, queue overrides, queued, running, activated, unbound, override, blocked, expected n, winner prefix)
TABLE = [
    ("empty queue, many jobs: per-cycle cap", {}, 0, 0, 100, 0, None, None, 3, "maxNewWorkersPerCycle"),
    ("queued limit nearly reached", {}, 3, 0, 100, 0, None, None, 1, "nQueueLimitWorker"),
    ("queued limit reached", {}, 4, 0, 100, 0, None, None, 0, "nQueueLimitWorker"),
    ("total limit", {}, 1, 8, 100, 0, None, None, 1, "maxWorkers"),
    ("over every limit never negative", {}, 6, 8, 100, 0, None, None, 0, "maxWorkers"),
    ("no activated jobs: no pilots", {}, 0, 0, 0, 0, None, None, 0, "(1 + extraPilotFraction)"),
    ("pilots already waiting for the jobs", {}, 2, 0, 2, 0, None, None, 0, "(1 + extraPilotFraction)"),
    ("extra pilots", {"limits": {"extraPilots": 1}}, 0, 0, 1, 0, None, None, 2, "(1 + extraPilotFraction)"),
    ("running pilots without a job yet count as waiting", {}, 0, 3, 3, 0, None, None, 0, "(1 + extraPilotFraction)"),
    ("extra fraction", {"limits": {"extraPilotFraction": 0.5, "maxNewWorkersPerCycle": 10}}, 0, 0, 2, 0, None,
     None, 3, "(1 + extraPilotFraction)"),
    ("demand unknown", {}, 0, 0, None, 0, None, None, 0, "activated jobs unknown"),
    ("SET_N_WORKERS caps the total", {}, 0, 2, 100, 0, 3, None, 1, "maxWorkers"),
    ("blocked (offline)", {}, 0, 0, 100, 0, None, "queue offline", 0, "queue offline"),
    ("maxWorkers 0 stops submission", {"limits": {"maxWorkers": 0, "nQueueLimitWorker": 0,
     "maxNewWorkersPerCycle": 0}}, 0, 0, 100, 0, None, None, 0, "nQueueLimitWorker"),
    ("push: one worker per fetched job", {"mode": "push", "limits": {"maxNewWorkersPerCycle": 10}}, 0, 0, None,
     2, None, None, 2, "ceil("),
    ("push many-to-one: ceil(jobs / jobsPerWorker)", {"mode": "push", "mapType": "ManyToOne", "jobsPerWorker": 3,
     "limits": {"maxNewWorkersPerCycle": 10}}, 0, 0, None, 7, None, None, 3, "ceil("),
    ("push: no fetched jobs", {"mode": "push"}, 0, 0, None, 0, None, None, 0, "ceil("),
    ("queued-worker ratio", {"limits": {"nQueueLimitWorkerRatio": 50, "nQueueLimitWorkerMin": 1}}, 0, 4, 100, 0,
     None, None, 2, "nQueueLimitWorker"),
    ("per-minute cap", {"limits": {"maxNewWorkersPerMinute": 5}}, 0, 0, 100, 0, None, None, 1,
     "maxNewWorkersPerMinute"),
    ("queued cores", {"resources": {"corecount": 4}, "limits": {"nQueueLimitWorkerCores": 8}}, 1, 0, 100, 0, None,
     None, 1, "(nQueueLimitWorkerCores"),
    ("several pilots per worker: ceil(pilots wanted / per_worker)", {"pilot": {"per_worker": 4},
     "limits": {"maxNewWorkersPerCycle": 10}}, 0, 0, 10, 0, None, None, 3, "ceil(((1 + extraPilotFraction)"),
    ("the pilots of a queued worker count as waiting", {"pilot": {"per_worker": 4}}, 1, 0, 4, 0, None, None, 0,
     "ceil(((1 + extraPilotFraction)"),
    ("queued cores of several-pilot workers", {"pilot": {"per_worker": 2}, "resources": {"corecount": 2},
     "limits": {"nQueueLimitWorkerCores": 12}}, 1, 0, 100, 0, None, None, 2, "(nQueueLimitWorkerCores"),
]


@pytest.mark.parametrize("title,over,queued,running,activated,unbound,override,blocked,expected,winner", TABLE,
                         ids=[row[0] for row in TABLE])
def test_decide(title, over, queued, running, activated, unbound, override, blocked, expected, winner):
    q = queue(**over)
    jobless = running if title.startswith("running pilots without a job") else 0
    recent = 4 if title == "per-minute cap" else 0
    decision = decide(q, queued, running, queued * q.resources.corecount * q.pilot.per_worker, 0, activated,
                      unbound, override, blocked, jobless, recent)
    assert decision["n"] == expected
    assert decision["winner"].startswith(winner), decision
    assert dict((name, value) for name, value in decision["limits"])[decision["winner"]] == min(
        value for _, value in decision["limits"])


class DemandOnly:
    """The one server call the adjuster makes (the HTTP boundary; the real client is tested end to end)."""

    url = "http://127.0.0.1:9"

    def __init__(self, demand=None, error=None):
        self.demand, self.error, self.calls = demand or {}, error, []

    def queue_demand(self, queues):
        self.calls.append(list(queues))
        if self.error:
            raise self.error
        return {name: self.demand[name] for name in queues if name in self.demand}


@pytest.fixture
def home(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield tmp_path
    db.close_database()


def context(home, server, queues, errors=None):
    ctx = Context(str(home), server, Settings(), "test-harvester")
    ctx.set_queues(queues, errors or {})
    woken = []
    ctx.wake = woken.append
    return ctx, woken


def add_workers(name, status, n):
    for _ in range(n):
        models.Worker.create(queue=name, status=status, submit_phase="done", modification_time=NOW)


def test_run_once_counts_workers_and_records_the_decision(home):
    q = queue()
    add_workers("Q", "submitted", 1)
    add_workers("Q", "running", 7)
    add_workers("Q", "finished", 30)  # ended workers count for nothing
    server = DemandOnly({"Q": {"activated": 50}})
    ctx, woken = context(home, server, {"Q": q})
    assert Adjuster(ctx).run_once(NOW) == 2  # maxWorkers 10 - (1 + 7)
    state = models.QueueState.get_by_id("Q")
    assert state.to_submit == 2 and state.decision_time == NOW
    decision = json.loads(state.decision)
    assert decision["winner"].startswith("maxWorkers") and decision["inputs"]["running"] == 7
    assert woken == ["submitter"]
    assert server.calls == [["Q"]]  # one demand call for all pull queues


def test_run_once_offline_backoff_paused_and_server_down(home):
    online, offline = queue(), queue(status="offline")
    models.QueueState.create(queue="B", backoff_until=NOW + datetime.timedelta(seconds=60), last_error="boom")
    ctx, woken = context(home, DemandOnly({"A": {"activated": 5}, "B": {"activated": 5}, "O": {"activated": 5}}),
                         {"A": online, "B": online, "O": offline}, {"P": ["limits.maxWorkers: bad"]})
    assert Adjuster(ctx).run_once(NOW) == 3
    decisions = {row.queue: json.loads(row.decision) for row in models.QueueState.select()}
    assert decisions["A"]["n"] == 3
    assert decisions["B"]["n"] == 0 and decisions["B"]["winner"].startswith("backing off")
    assert decisions["O"]["n"] == 0 and decisions["O"]["winner"] == "queue offline"
    assert decisions["P"]["n"] == 0 and "paused" in decisions["P"]["winner"]
    from harvester.errors import ServerError

    ctx.server = DemandOnly(error=ServerError("unreachable"))
    assert Adjuster(ctx).run_once(NOW) == 0
    assert json.loads(models.QueueState.get_by_id("A").decision)["winner"].startswith("server unreachable")


def test_run_once_counts_workers_made_in_the_last_minute(home):
    q = queue(limits={"maxNewWorkersPerMinute": 3, "maxWorkers": 20, "nQueueLimitWorker": 20,
                      "maxNewWorkersPerCycle": 20})
    for age in (30, 50, 120):  # two inside the minute, one outside
        worker = models.Worker.create(queue="Q", status="finished", submit_phase="done")
        models.WorkerStatusLog.create(worker_id=worker.worker_id, old_status=None, new_status="submitted",
                                      time=NOW - datetime.timedelta(seconds=age), reason="created")
    ctx, _ = context(home, DemandOnly({"Q": {"activated": 50}}), {"Q": q})
    assert Adjuster(ctx).run_once(NOW) == 1
    assert json.loads(models.QueueState.get_by_id("Q").decision)["winner"].startswith("maxNewWorkersPerMinute")


def test_run_once_counts_the_pilots_of_several_pilot_workers(home):
    """A queued worker of 4 pilots waits for 4 jobs; a running one that has seen 1 job still has 3 pilots without
    one: with 10 activated jobs, 10 - 4 - 3 = 3 pilots are missing, one more worker of 4."""
    q = queue(pilot={"per_worker": 4}, limits={"maxNewWorkersPerCycle": 10})
    models.Worker.create(queue="Q", status="submitted", submit_phase="done", n_pilots=4, modification_time=NOW)
    running = models.Worker.create(queue="Q", status="running", submit_phase="done", n_pilots=4,
                                   modification_time=NOW)
    models.JobWorker.create(panda_id=1, worker_id=running.worker_id, time=NOW)
    ctx, _ = context(home, DemandOnly({"Q": {"activated": 10}}), {"Q": q})
    assert Adjuster(ctx).run_once(NOW) == 1
    decision = json.loads(models.QueueState.get_by_id("Q").decision)
    assert decision["inputs"]["jobless_pilots"] == 3 and decision["inputs"]["pilots_per_worker"] == 4
    assert decision["winner"].startswith("ceil(((1 + extraPilotFraction)")


def test_pilots_the_monitor_saw_end_without_a_job_are_not_waiting(home):
    """A worker of 4 pilots of which the monitor saw 1 still waiting (the others ran jobs or ended): with 3
    activated jobs, 2 pilots are missing, one more worker."""
    q = queue(pilot={"per_worker": 4}, limits={"maxNewWorkersPerCycle": 10})
    models.Worker.create(queue="Q", status="running", submit_phase="done", n_pilots=4, waiting_pilots=1,
                         modification_time=NOW)
    ctx, _ = context(home, DemandOnly({"Q": {"activated": 3}}), {"Q": q})
    assert Adjuster(ctx).run_once(NOW) == 1
    assert json.loads(models.QueueState.get_by_id("Q").decision)["inputs"]["jobless_pilots"] == 1


def test_a_worker_of_several_nodes_counts_as_nodes_x_per_node_pilot_slots():
    """2 nodes x 2 pilots per node: 9 activated jobs need ceil(9 / 4) = 3 workers; a queued one holds 4 of the
    slots; the decision names the shape, as harvester explain prints it."""
    q = queue(resources={"nodes_per_worker": 2}, pilot={"per_node": 2}, batch={"system": "slurm"},
              limits={"maxNewWorkersPerCycle": 10})
    decision = decide(q, 0, 0, activated=9)
    assert decision["n"] == 3 and decision["inputs"]["pilots_per_worker"] == 4
    assert decision["inputs"]["nodes_per_worker"] == 2
    assert decision["winner"] == ("ceil(((1 + extraPilotFraction) x activated + extraPilots - waiting pilots) / "
                                  "pilots per worker (2 nodes x 2 per node))")
    assert decide(q, 1, 0, activated=9, queued_pilots=4)["n"] == 2


class ContendedLock:
    """The harvester database's writer lock, telling ``on_wait`` when a thread has to wait for it."""

    def __init__(self, on_wait):
        self.lock, self.on_wait = threading.RLock(), on_wait

    def acquire(self):
        if not self.lock.acquire(blocking=False):
            self.on_wait()
            self.lock.acquire()
        return True

    def release(self):
        self.lock.release()


def test_a_second_cycle_never_decides_again_the_workers_the_submitter_is_making(home, monkeypatch):
    """Two adjuster cycles close together (a wake-up right after a cycle) and the submitter between them: the
    second one's count and its number are one transaction, so the workers made from the first number are either
    counted by it or made from its number instead, never made twice (a testbed run of 6 pilots started 12)."""
    q = queue()  # an empty queue with work: 3 new workers a cycle (maxNewWorkersPerCycle)
    ctx, _ = context(home, DemandOnly({"Q": {"activated": 100}}), {"Q": q})
    assert Adjuster(ctx).run_once(NOW) == 3  # the first cycle; the submitter has not yet taken its number
    counted, go, submitter_settled = threading.Event(), threading.Event(), threading.Event()
    real_counts = adjuster_module.counts

    def counts_then_wait(name):
        found = real_counts(name)
        counted.set()
        assert go.wait(60), "the test never let the adjuster go on"
        return found

    monkeypatch.setattr(adjuster_module, "counts", counts_then_wait)
    models.database.obj._writer = ContendedLock(submitter_settled.set)
    second = threading.Thread(target=Adjuster(ctx).run_once, args=(NOW,))
    second.start()
    assert counted.wait(60), "the second cycle never counted"
    made = []

    def submit():
        made.append(Submitter(ctx).create_workers(q, NOW))
        submitter_settled.set()

    making = threading.Thread(target=submit)
    making.start()  # makes the first cycle's workers, or waits for the second cycle's transaction to end
    assert submitter_settled.wait(60), "the submitter neither made the workers nor waited for the adjuster"
    go.set()
    second.join(60)
    making.join(60)
    assert not second.is_alive() and not making.is_alive()
    made.append(Submitter(ctx).create_workers(q, NOW))  # whatever number is left
    assert sum(made) == 3 and models.Worker.select().count() == 3
    state = models.QueueState.get_by_id("Q")
    assert state.to_submit == 0
