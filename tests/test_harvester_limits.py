"""harvester.limits: every queue-config limit key changes the limit it names (as Harvester works them out), on a
table; and the fetcher and the adjuster use them (run_once on a real harvester database)."""
import datetime
import json

import pytest

from harvester import db, limits, models
from harvester.agents.adjuster import Adjuster
from harvester.agents.fetcher import Fetcher
from harvester.context import Context, Settings
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)


def lim(mode="pull", **keys):
    raw = {"mode": mode, "limits": {"maxWorkers": 1000, **keys}}
    return loads(json.dumps({"queues": {"Q": raw}}), "q.json").queues["Q"].limits


# (function, limit keys, what runs, expected limit, words it starts with)
TABLE = [
    (limits.queued_workers, {"nQueueLimitWorker": 50}, 100, 50, "nQueueLimitWorker"),
    (limits.queued_workers, {"nQueueLimitWorkerRatio": 20}, 100, 20, "nQueueLimitWorkerRatio 20% of 100"),
    (limits.queued_workers, {"nQueueLimitWorkerRatio": 20, "nQueueLimitWorker": 10}, 100, 10, "nQueueLimitWorker"),
    (limits.queued_workers, {"nQueueLimitWorkerRatio": 20, "nQueueLimitWorkerMin": 30}, 100, 30,
     "nQueueLimitWorkerRatio 20% of 100 running workers, raised to the floor 30"),
    (limits.queued_workers, {"nQueueLimitWorkerRatio": 20, "nQueueLimitWorkerMax": 5}, 100, 5,
     "nQueueLimitWorkerMax"),
    (limits.queued_cores, {}, 800, None, "no limit"),
    (limits.queued_cores, {"nQueueLimitWorkerCores": 64}, 800, 64, "nQueueLimitWorkerCores"),
    (limits.queued_cores, {"nQueueLimitWorkerCoresRatio": 25}, 800, 200, "nQueueLimitWorkerCoresRatio 25%"),
    (limits.queued_cores, {"nQueueLimitWorkerCoresRatio": 25, "nQueueLimitWorkerCores": 64}, 800, 64,
     "nQueueLimitWorkerCores"),
    (limits.queued_cores, {"nQueueLimitWorkerCoresRatio": 25, "nQueueLimitWorkerCoresMin": 300}, 800, 300,
     "nQueueLimitWorkerCoresRatio 25% of 800 running cores, raised to the floor 300"),
    (limits.queued_cores, {"nQueueLimitWorkerCoresRatio": 25, "nQueueLimitWorkerMin": 400}, 800, 400,
     "nQueueLimitWorkerCoresRatio"),  # one core per worker of nQueueLimitWorkerMin
    (limits.queued_memory, {"nQueueLimitWorkerMemory": 64000}, 10 ** 6, 64000, "nQueueLimitWorkerMemory"),
    (limits.queued_memory, {"nQueueLimitWorkerMemoryRatio": 10}, 10 ** 6, 10 ** 5, "nQueueLimitWorkerMemoryRatio"),
    (limits.queued_memory, {"nQueueLimitWorkerMemoryRatio": 10, "nQueueLimitWorkerMemoryMin": 2 * 10 ** 5}, 10 ** 6,
     2 * 10 ** 5, "nQueueLimitWorkerMemoryRatio 10% of 1000000 running MB, raised"),
    (limits.queued_memory, {"nQueueLimitWorkerMemoryRatio": 10, "nQueueLimitWorkerMin": 300}, 10 ** 6, 3 * 10 ** 5,
     "nQueueLimitWorkerMemoryRatio"),  # 1000 MB per worker of nQueueLimitWorkerMin
    (limits.held_jobs, {"nQueueLimitJob": 40}, 100, 40, "nQueueLimitJob"),
    (limits.held_jobs, {"nQueueLimitJob": 40, "nQueueLimitJobRatio": 10}, 100, 10, "nQueueLimitJobRatio 10%"),
    (limits.held_jobs, {"nQueueLimitJob": 40, "nQueueLimitJobRatio": 10}, 0, 1, "nQueueLimitJobRatio"),  # floor 1
    (limits.held_jobs, {"nQueueLimitJob": 40, "nQueueLimitJobRatio": 10, "nQueueLimitJobMin": 15}, 100, 15,
     "nQueueLimitJobRatio 10% of 100 running jobs, raised to the floor 15"),
    (limits.held_jobs, {"nQueueLimitJob": 40, "nQueueLimitJobMax": 25}, 100, 25, "nQueueLimitJobMax"),
    (limits.held_job_cores, {"nQueueLimitJobCores": 96}, 800, 96, "nQueueLimitJobCores"),
    (limits.held_job_cores, {"nQueueLimitJobCoresRatio": 10}, 800, 80, "nQueueLimitJobCoresRatio 10%"),
    (limits.held_job_cores, {"nQueueLimitJobCoresRatio": 10, "nQueueLimitJobCoresMin": 120}, 800, 120,
     "nQueueLimitJobCoresRatio 10% of 800 running job cores, raised to the floor 120"),
    (limits.held_job_cores, {"nQueueLimitJobCoresRatio": 10, "nQueueLimitJobMin": 200}, 800, 200,
     "nQueueLimitJobCoresRatio"),  # one core per job of nQueueLimitJobMin
]


@pytest.mark.parametrize("function,keys,running,expected,words", TABLE,
                         ids=[f"{row[0].__name__}-{'-'.join(row[1])}-{row[2]}" for row in TABLE])
def test_each_limit_key_changes_its_limit(function, keys, running, expected, words):
    result = function(lim("push" if function in (limits.held_jobs, limits.held_job_cores) else "pull", **keys),
                      running)
    assert result.value == expected
    assert result.words.startswith(words), result.words


@pytest.fixture
def home(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield tmp_path
    db.close_database()


class Server:
    url = "http://127.0.0.1:9"

    def __init__(self):
        self.asked = []

    def sent_jobs(self, queue, after=0):
        return []

    def acquire_jobs(self, queue, n_jobs, label, **kwargs):
        self.asked.append(n_jobs)
        return []

    def queue_demand(self, queues):
        return {name: {"activated": 1000} for name in queues}


def context(home, raw):
    queue = loads(json.dumps({"queues": {"Q": raw}}), "q.json").queues["Q"]
    ctx = Context(str(home), Server(), Settings(), "h1")
    ctx.set_queues({"Q": queue}, {})
    ctx.wake = lambda name: None
    return ctx


def running_jobs(n, cores=1, fetched=0):
    """n held jobs in running workers (each its own worker), and ``fetched`` more waiting for a worker."""
    for panda_id in range(1, n + 1):
        worker = models.Worker.create(queue="Q", status="running", submit_phase="done", cores=cores)
        models.HeldJob.create(panda_id=panda_id, queue="Q", definition="{}", status="fed", cores=cores,
                              worker_id=worker.worker_id, fetched_time=NOW)
    for panda_id in range(n + 1, n + fetched + 1):
        models.HeldJob.create(panda_id=panda_id, queue="Q", definition="{}", cores=cores, fetched_time=NOW)


@pytest.mark.parametrize("keys,corecount,running,fetched,asked", [
    ({"nQueueLimitJob": 40}, 1, 20, 5, 35),
    ({"nQueueLimitJob": 40, "nQueueLimitJobRatio": 50}, 1, 20, 5, 5),
    ({"nQueueLimitJob": 40, "nQueueLimitJobRatio": 50, "nQueueLimitJobMin": 12}, 1, 20, 5, 7),
    ({"nQueueLimitJob": 40, "nQueueLimitJobMax": 8}, 1, 20, 5, 3),
    ({"nQueueLimitJob": 40, "nQueueLimitJobCores": 48}, 8, 20, 2, 4),
    ({"nQueueLimitJob": 40, "nQueueLimitJobCoresRatio": 25}, 8, 20, 2, 3),
    ({"nQueueLimitJob": 40, "nQueueLimitJobCoresRatio": 25, "nQueueLimitJobCoresMin": 80}, 8, 20, 2, 8),
], ids=["fixed", "ratio", "ratio-min", "max", "cores", "cores-ratio", "cores-ratio-min"])
def test_the_fetcher_asks_for_what_the_job_limits_leave(home, keys, corecount, running, fetched, asked):
    ctx = context(home, {"mode": "push", "resources": {"corecount": corecount},
                         "limits": {"maxWorkers": 100, **keys}})
    running_jobs(running, corecount, fetched)
    Fetcher(ctx).run_once(NOW)
    assert ctx.server.asked == [asked]


def test_the_adjuster_takes_the_queued_core_ratio_from_the_running_cores(home):
    ctx = context(home, {"resources": {"corecount": 4}, "limits": {
        "maxWorkers": 100, "nQueueLimitWorker": 100, "maxNewWorkersPerCycle": 100,
        "nQueueLimitWorkerCoresRatio": 50, "nQueueLimitWorkerMemoryRatio": 100}})
    for status in ["running"] * 10 + ["submitted"] * 2:  # 40 running cores: 20 may be queued, 8 are
        models.Worker.create(queue="Q", status=status, submit_phase="done", cores=4, memory_mb=2000)
    Adjuster(ctx).run_once(NOW)
    decision = json.loads(db.queue_state("Q").decision)
    assert decision["n"] == 3 and decision["winner"].startswith("(nQueueLimitWorkerCoresRatio 50% of 40 running")
    assert ["(nQueueLimitWorkerMemoryRatio 100% of 20000 running MB - queued memory) / (maxrss)", 8] in \
        decision["limits"]
