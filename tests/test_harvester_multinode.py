"""HPC allocations on a real two-node Slurm (tests/nethosts.py, tests/hpchelp.py): workers of several nodes with
pilots on each, their warm stop on scancel and at the walltime, jobs that need several nodes, backfill-shaped
submissions, and what an allocation delivered against Slurm's own accounting.

One site, one server and one harvester for the whole module (each scenario has its own queue), so the cluster
starts once. Nothing here asserts on timing: every wait is a safety net with a generous limit.
"""
import json
import os
import re
import sys

import pytest

from harvesterhelp import queue_config
from hpchelp import HpcSite, LoginBed

pytestmark = [pytest.mark.multinode, pytest.mark.netns, pytest.mark.slurm]

FINAL = {"finished", "failed", "cancelled", "missed"}
LONG_SLEEP = "#!/bin/sh\nsleep 600\n"


def hpc_queue(**over):
    """A pull queue of 2-node workers with 2 one-core pilots per node, one worker at a time."""
    queue = queue_config(batch={"system": "slurm"}, resources={"corecount": 1, "maxrss": 1000, "cores_per_node": 4,
                                                                "nodes_per_worker": 2},
                         limits={"maxWorkers": 1, "nQueueLimitWorker": 1, "maxNewWorkersPerCycle": 1},
                         pilot={"per_node": 2, "timefloor": 10, "lifetime": 600, "heartbeat": 30,
                                "lost_heartbeat": 3600, "getjob_tries": 1, "getjob_interval": 1})
    for key, value in over.items():
        queue[key] = {**queue.get(key, {}), **value} if isinstance(value, dict) else value
    return queue


def jobs_queue(**over):
    """A push queue of jobs up to 2 whole nodes of 4 cores: each job gets one worker of its size."""
    return queue_config(mode="push", mapType="OneToOne", batch={"system": "slurm"},
                        resources={"corecount": 1, "maxrss": 1000, "cores_per_node": 4, "max_job_nodes": 2},
                        limits={"maxWorkers": 2, "nQueueLimitWorker": 2, "maxNewWorkersPerCycle": 2},
                        pilot={"lifetime": 600, "heartbeat": 30, "lost_heartbeat": 3600, "getjob_tries": 1,
                               "getjob_interval": 1}, **over)


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    hpc = HpcSite(tmp_path_factory.mktemp("hpc"))
    try:
        workdir = os.path.join(hpc.shared, "workers")
        queues = {"MN_PULL": hpc_queue(transport={"workdir": workdir}),
                  "MN_STOP": hpc_queue(transport={"workdir": workdir}),
                  "MN_WARN": hpc_queue(transport={"workdir": workdir}),
                  "MN_WALL": hpc_queue(transport={"workdir": workdir}, batch={"walltime": 120},
                                       pilot={"lifetime": 60, "stageout_reserve": 10, "timefloor": 0}),
                  "MN_JOBS": jobs_queue(transport={"workdir": workdir}),
                  "MN_FILL": hpc_queue(transport={"workdir": workdir}, batch={"shape": "backfill", "walltime": 900,
                                                                              "min_walltime": 400},
                                       limits={"maxWorkers": 2, "nQueueLimitWorker": 2},
                                       pilot={"stageout_reserve": 60, "timefloor": 0})}
        testbed = LoginBed(hpc, os.path.join(hpc.shared, "bed"), queues)
        try:
            testbed.start()
            yield testbed
        finally:
            testbed.close()
    finally:
        hpc.close()


def workers_of(bed, queue):
    if not os.path.exists(os.path.join(bed.home, "harvester.db")):
        return []
    return [w for w in bed.workers() if w["queue"] == queue]


def ended(bed, queue, n=1):
    """The queue's workers once at least ``n`` exist and all are final, else None."""
    now = workers_of(bed, queue)
    return now if len(now) >= n and all(w["status"] in FINAL for w in now) else None


def pilots_and_jobs(worker):
    """{pilot directory: PandaIDs its pilot ran}."""
    found = {}
    for index in range(1, worker["pilots"] + 1):
        path = os.path.join(worker["accessPoint"], f"pilot-{index}", "worker_pandaids.json")
        if os.path.exists(path):
            with open(path) as handle:
                found[f"pilot-{index}"] = json.load(handle)
    return found


def rendezvous(directory, n):
    """A payload that goes on only once ``n`` payloads run at the same time (a file each, on the shared
    directory; it fails after 2 minutes alone), then names its node."""
    return (f"#!/bin/sh\ntouch {directory}/$(hostname)-$$\ni=0\n"
            f"while [ \"$(ls {directory} | wc -l)\" -lt {n} ]; do\n"
            "  i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.1\ndone\nhostname\n")


def test_a_two_node_worker_runs_two_pilots_on_each_node(bed):
    """8 short jobs, ONE worker of 2 nodes x 2 pilots: the first four payloads wait for each other (4 pilots at
    once), each pilot in its own directory, pilot-1 and -2 on the first node, -3 and -4 on the second."""
    meeting = os.path.join(bed.hpc.shared, "meeting")
    os.makedirs(meeting)
    ids = bed.submit(8, queue="MN_PULL", transformation=bed.script("meet.sh", rendezvous(meeting, 4)))
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "8 jobs finished", timeout=300)
    (worker,) = bed.wait_for(lambda: ended(bed, "MN_PULL"), "the worker ended")
    assert (worker["status"], worker["nodes"], worker["pilots"], worker["cores"]) == ("finished", 2, 4, 4)
    with open(os.path.join(worker["accessPoint"], "job.sh")) as handle:
        script = handle.read()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "#SBATCH --cpus-per-task=2" in script and "srun --nodes=2" in script
    ran = pilots_and_jobs(worker)
    assert sorted(ran) == ["pilot-1", "pilot-2", "pilot-3", "pilot-4"] and all(ran.values())
    assert sorted(sum(ran.values(), [])) == sorted(ids)
    node_of = {pid: bed.job(pid)["modificationHost"] for pid in ids}
    for name, jobs in ran.items():
        expected = "node1" if name in ("pilot-1", "pilot-2") else "node2"
        assert {node_of[pid] for pid in jobs} == {expected}, (name, node_of)
    assert len(os.listdir(meeting)) == 8
    # the time charged: Slurm's own record of the job (its completion log: no accounting database here)
    record = bed.hpc.run("sacct", "--completion", "--noheader", "--parsable2", "--format=JobID,ElapsedRaw,NNodes",
                         f"--jobs={worker['batchID']}")
    rows = [line.split("|") for line in record.stdout.split() if line.startswith(worker["batchID"] + "|")]
    assert record.returncode == 0 and len(rows) == 1, record
    assert worker["chargeSource"] == "squeue TimeUsed" and worker["elapsed"] > 0, worker
    assert abs(worker["elapsed"] * worker["nodes"] - int(rows[0][1]) * int(rows[0][2])) <= 2 * 3, (worker, rows)
    explained = bed.cli("explain", "--worker", str(worker["workerID"])).stdout
    assert f"charged: 2 nodes x {worker['elapsed']:.0f} s = " in explained, explained
    delivered(bed, worker, int(rows[0][1]) * int(rows[0][2]))


def delivered(bed, worker, node_seconds):
    """What the allocation delivered against Slurm's record: the four pilot slots (payload + waiting + no pilot)
    add up to sacct's elapsed x nodes x 2 pilots per node, within a few seconds; every pilot's own time up fits in
    Slurm's elapsed time; the payload figures are the sum of the pilots' records; the server has the same figures
    (monitor worker page, /metrics)."""
    records = []
    for index in range(1, 5):
        with open(os.path.join(worker["accessPoint"], f"pilot-{index}", "worker_usage.json")) as handle:
            records.append(json.load(handle))
    assert [r["ended"] for r in records] == [True] * 4 and sum(r["jobs_run"] for r in records) == 8 == \
        worker["jobsRun"], (records, worker)
    assert abs(worker["payloadWall"] - sum(r["payload_wall_s"] for r in records)) <= 0.01, (records, worker)
    assert abs(worker["payloadCpu"] - sum(r["payload_cpu_s"] for r in records)) <= 0.01, (records, worker)
    assert worker["payloadWall"] > 0 and worker["pilotWait"] > 0 and worker["pilotDrain"] > 0, worker
    assert max(r["up_s"] for r in records) <= node_seconds / 2 + 2, (records, node_seconds)
    slots = worker["payloadWall"] + worker["pilotWait"] + worker["pilotDrain"]
    assert abs(slots - 2 * node_seconds) <= 4 * 3, (worker, node_seconds)
    assert f"useful: {worker['usefulPercent']:.1f}% of 4 pilot slots x {worker['elapsed']:.0f} s" in bed.cli(
        "explain", "--worker", str(worker["workerID"])).stdout

    def on_server():
        delivered = json.loads(bed.get(f"/monitor/workers/h1/{worker['workerID']}?json=1"))["delivered"]
        return delivered if delivered and delivered["jobsRun"] else None

    shown = bed.wait_for(on_server, "the worker's figures on the server")
    assert (shown["nodes"], shown["elapsedSeconds"], shown["payloadWallSeconds"], shown["pilotDrainSeconds"],
            shown["jobsRun"]) == (2, worker["elapsed"], worker["payloadWall"], worker["pilotDrain"], 8), shown
    metrics = bed.get("/metrics")
    charged = [line for line in metrics.splitlines()
               if line.startswith('minipanda_allocation_charged_node_seconds_total{queue="MN_PULL"}')]
    assert len(charged) == 1 and abs(float(charged[0].split()[-1]) - 2 * worker["elapsed"]) < 0.01, charged


def warm_codes(bed, ids, *signals):
    """Each job's (pilotErrorCode, transExitCode) is the pilot's own report of the stop by one of ``signals``
    ((pilot code, signal number) pairs): that signal's code, or its payload's end by that signal (1305) when the
    payload went first; and the jobs ran on both nodes."""
    nodes = set()
    for job in (bed.job(pid) for pid in ids):
        code = (int(job["pilotErrorCode"]), int(job["transExitCode"] or 0))
        assert any(code[0] == signal_code or code == (1305, 128 + number) for signal_code, number in signals), job
        nodes.add(job["modificationHost"])
    assert nodes == {"node1", "node2"}


def test_every_pilot_of_a_two_node_worker_stops_warmly_on_scancel_and_on_slurm_s_warning(bed):
    """Two 2-node workers side by side, 4 long jobs each. scancel of one: Slurm signals every process of every
    step, and each of its 4 pilots kills its payload and reports its job failed itself (1201 for SIGTERM, or the
    payload's end by it, 1305 with exit 143; or the same for the USR1 its batch shell passes on: 1207, 138), never the server's 1008 for jobs a dead worker left behind. The
    other gets what Slurm's --signal=B:USR1@60 sends before the time limit, USR1 to the batch shell alone: the
    script passes it to srun as USR1 (a TERM would make srun SIGKILL the step), srun to each node's launcher,
    each launcher to its pilots (1207)."""
    trf = bed.script("long.sh", LONG_SLEEP)
    cancelled, warned = (bed.submit(4, queue=queue, transformation=trf) for queue in ("MN_STOP", "MN_WARN"))
    bed.wait_for(lambda: set(bed.statuses(cancelled + warned).values()) == {"running"}, "8 jobs running",
                 timeout=300)
    (stop,), (warn,) = workers_of(bed, "MN_STOP"), workers_of(bed, "MN_WARN")
    assert bed.hpc.run("scancel", stop["batchID"]).returncode == 0
    assert bed.hpc.run("scancel", "--batch", "--signal=USR1", warn["batchID"]).returncode == 0
    bed.wait_for(lambda: set(bed.statuses(cancelled + warned).values()) == {"failed"}, "8 jobs reported failed")
    # scancel signals every process of the steps (TERM) and the batch shell, which passes a USR1 to srun and so
    # to every process of the steps too: whichever reaches a pilot or its payload first stops it
    warm_codes(bed, cancelled, (1201, 15), (1207, 10))
    warm_codes(bed, warned, (1207, 10))
    (stopped,), (ended_warned,) = (bed.wait_for(lambda: ended(bed, q), f"{q}'s worker ended")
                                   for q in ("MN_STOP", "MN_WARN"))
    assert stopped["status"] == "cancelled" and "CANCELLED" in stopped["diag"]
    assert "COMPLETED" in ended_warned["diag"] or "FAILED" in ended_warned["diag"]  # it ended, not Slurm's kill
    for worker in (stopped, ended_warned):
        accounted(worker, 4)


def accounted(worker, jobs):
    """A stopped worker's figures: every pilot wrote its final usage record on its way out, and the four pilot
    slots are each second payload, waiting or drain."""
    for index in range(1, 5):
        with open(os.path.join(worker["accessPoint"], f"pilot-{index}", "worker_usage.json")) as handle:
            assert json.load(handle)["ended"] is True, (index, worker)
    assert worker["jobsRun"] == jobs and worker["payloadWall"] > 0, worker
    slots = worker["payloadWall"] + worker["pilotWait"] + worker["pilotDrain"]
    assert abs(slots - 4 * worker["elapsed"]) <= 0.05, worker


def test_every_pilot_of_a_two_node_worker_reports_before_its_walltime_ends(bed):
    """A worker of 120 s: its pilots know it (-l 60, no job starts in the last 10 s of that), Slurm warns the batch
    shell 60 s before the limit (--signal=B:USR1@60); whichever comes first, each of the 4 pilots stops its long
    job and reports it failed itself (the end of its lifetime, 1213, or the warning's USR1, 1207), before Slurm's
    own TERM at the limit. The jobs set no maxWalltime (0): no limit of their own ends them first, and any pilot
    takes them (a pilot offers the time it has left; a job of 600 s would fit none of this worker)."""
    ids = bed.submit(4, queue="MN_WALL", transformation=bed.script("long.sh", LONG_SLEEP), maxWalltime=0)
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"running"}, "4 jobs running", timeout=300)
    (worker,) = workers_of(bed, "MN_WALL")
    with open(os.path.join(worker["accessPoint"], "job.sh")) as handle:
        script = handle.read()
    assert "#SBATCH --time=0-00:02:00" in script and "#SBATCH --signal=B:USR1@60" in script
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"failed"}, "4 jobs reported failed", timeout=300)
    nodes = set()
    for job in (bed.job(pid) for pid in ids):
        code = (int(job["pilotErrorCode"]), int(job["transExitCode"] or 0))
        assert code[0] in (1213, 1207) or code in ((1305, 138), (1305, 143)), job
        nodes.add(job["modificationHost"])
    assert nodes == {"node1", "node2"}
    (done,) = bed.wait_for(lambda: ended(bed, "MN_WALL"), "the worker ended", timeout=300)
    assert "TIMEOUT" not in done["diag"], done  # the pilots were done before the limit
    accounted(done, 4)


def login_cli(bed, *argv):
    """``minipanda ARGV`` on login, against the bed's server (its admin token)."""
    proc = bed.hpc.site.login.run([sys.executable, "-m", "minipanda", *argv, "--url", bed.server.url, "--home",
                                   bed.server.home], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_job_that_needs_two_nodes_gets_one_worker_of_two_nodes_and_srun_reaches_both(bed):
    """A task of one job of 8 cores (2 nodes of 4) offered MN_PULL, whose jobs fit one node, and MN_JOBS, which
    takes jobs of up to 2 nodes: brokerage picks MN_JOBS (``minipanda why`` says why not MN_PULL), harvester gives
    the job ONE worker of 2 nodes, and its payload's ``srun -N 2 hostname`` prints both nodes' names."""
    out = os.path.join(bed.hpc.shared, "mpi-hosts")
    command = (f'echo "nodelist=$SLURM_JOB_NODELIST"; srun -N 2 hostname | sort > {out}.part; rc=$?; cat {out}.part; '
               f'mv {out}.part {out}; exit $rc')
    submitted = login_cli(bed, "task", "submit", "--exec", command, "--nJobs", "1", "--nScouts", "0",
                          "--coreCount", "8", "--ramCount", "1000", "--walltime", "600", "--site", "MN_PULL,MN_JOBS",
                          "--prodSourceLabel", "managed", "--taskName", "mpi.hostname")
    task_id = int(submitted.split("jediTaskID=")[1].split()[0])

    def the_job():
        rows = bed.v1("job/list", task_id=task_id)
        return rows[0]["PandaID"] if rows else None
    panda_id = bed.wait_for(the_job, "the task's job")
    bed.wait_for(lambda: bed.statuses([panda_id])[panda_id] in ("finished", "failed"), "the job ended",
                 timeout=300)
    job = bed.job(panda_id)
    assert job["jobStatus"] == "finished" and job["computingSite"] == "MN_JOBS", job
    with open(out) as handle:
        assert handle.read().split() == ["node1", "node2"]
    (worker,) = bed.wait_for(lambda: ended(bed, "MN_JOBS"), "the job's worker ended")
    assert (worker["nodes"], worker["pilots"], worker["cores"], worker["status"]) == (2, 1, 8, "finished"), worker
    assert worker["diag"].endswith("COMPLETED, exit code 0 on node[1-2]"), worker
    why = login_cli(bed, "why", str(panda_id))
    assert "MN_PULL: skipped: job needs 8 cores, 2 nodes of 4; queue takes single-node jobs" in why, why
    assert "MN_JOBS: kept" in why, why


def test_a_backfill_queue_takes_the_free_node_now_over_two_nodes_later(bed):
    """node1 is busy for 30 minutes; 4 jobs wait on MN_FILL (2 nodes x 2 pilots, batch.shape backfill, walltime
    900 s or down to 400 s). sbatch --test-only says 2 nodes start when node1 frees and 1 node now: harvester makes
    1-node workers (of 900 s: at the same start the longer walltime wins), on node2, and explain shows the
    candidates and the choice."""
    blocker = bed.hpc.run("sbatch", "--parsable", "--nodelist=node1", "--nodes=1", "--exclusive", "--time=30",
                          "--output=/dev/null", "--wrap=sleep 1800")
    assert blocker.returncode == 0, blocker.stderr
    blocker_id = blocker.stdout.strip().split(";")[0]
    try:
        bed.wait_for(lambda: "RUNNING" in bed.hpc.run("squeue", "-h", "-j", blocker_id, "-o", "%T").stdout,
                     "the blocker running on node1")
        ids = bed.submit(4, queue="MN_FILL", transformation=bed.script("short.sh", "#!/bin/sh\nsleep 1\nhostname\n"))
        bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "4 jobs finished", timeout=300)
        workers = workers_of(bed, "MN_FILL")
        assert workers and {(w["nodes"], w["pilots"], w["cores"], w["walltime"]) for w in workers} == {
            (1, 2, 2, 900)}, workers
        assert {bed.job(pid)["modificationHost"] for pid in ids} == {"node2"}
        with open(os.path.join(workers[-1]["accessPoint"], "job.sh")) as handle:
            script = handle.read()
        assert "#SBATCH --nodes=1" in script and "#SBATCH --time=0-00:15:00" in script
        explain = bed.cli("explain", "MN_FILL")
        assert explain.returncode == 0, explain.stderr
        text = explain.stdout
        assert "chosen: 1 node x 900 s: the soonest start among the shapes that fit the waiting work, the largest " \
               "of those starting within 60 s of it" in text, text
        lines = {line.split("starts")[0].strip(): line for line in text.splitlines() if " starts " in line}
        assert {"1 node x 900 s", "1 node x 400 s"} <= set(lines), text
        assert lines["1 node x 900 s"].endswith("<- chosen"), text
        # explain shows the last decision, which may have been made once the work left needed one node only (the
        # 2-node shapes then not asked); the first, with 4 jobs (2 nodes of pilots) waiting, is in harvester's log
        first = next(line for line in bed.log().splitlines() if "queue MN_FILL: backfill shape" in line)
        assert "backfill shape 1 node x 900 s (" in first and "the waiting work needs 2 node(s)" in first, first
        start = dict(re.findall(r"(\d nodes? x \d+ s) starts (\S+?)(?:;|$)", first))
        assert set(start) == {"2 nodes x 900 s", "2 nodes x 400 s", "1 node x 900 s", "1 node x 400 s"}, first
        assert max(start["1 node x 900 s"], start["1 node x 400 s"]) < start["2 nodes x 400 s"] <= start[
            "2 nodes x 900 s"], first
    finally:
        bed.hpc.run("scancel", blocker_id)
