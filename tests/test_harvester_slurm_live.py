"""Harvester on a real Slurm behind a real sshd, all on loopback: munged + slurmctld + slurmd + sshd started here
with throw-away configs and keys, a real `minipanda serve`, `harvester run` as a daemon, and the pilot zipapp
running as Slurm jobs. Then the faults: sshd restarted mid-cycle, slurmctld stopped, an unknown host key.

Without root or the Debian packages these tests skip, except under CI=true, where that is a failure.
Nothing here asserts on timing: every wait is a safety net with a generous limit.
"""
import json
import os
import subprocess
import sys

import pytest
import yaml

from harvesterhelp import QUEUE, Testbed, queue_config
from slurmhelp import Slurm, Sshd

pytestmark = [pytest.mark.slurm, pytest.mark.ssh]

ECHO = '#!/bin/sh\necho "payload ran with: $*"\n'
WAIT_FOR_FILE = '#!/bin/sh\ni=0\nwhile [ ! -e "$1" ] && [ $i -lt 1500 ]; do sleep 0.2; i=$((i+1)); done\necho "go"\n'
LONG_SLEEP = '#!/bin/sh\nsleep 600\n'
FINAL = {"finished", "failed", "cancelled", "missed"}


class Cluster:
    """A Slurm reached through an sshd whose sessions know where the Slurm config is, as on a login node."""

    def __init__(self, base):
        self.slurm = Slurm(os.path.join(base, "slurm"))
        self.sshd = Sshd(os.path.join(base, "sshd"), {"SLURM_CONF": self.slurm.conf})

    def start(self):
        self.slurm.start()
        self.sshd.start()
        return self

    def stop(self):
        self.sshd.stop()
        self.slurm.stop()

    def jobs(self):
        """{job id: (state, comment)} of every job slurmctld holds."""
        out = self.slurm.run("squeue", "--noheader", "--states=all", "--Format=JobID:|,State:|,Comment:|").stdout
        return {f[0]: (f[1], f[2]) for f in (line.split("|") for line in out.splitlines()) if len(f) > 2}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(str(tmp_path_factory.mktemp("cluster"))).start()
    yield running
    running.stop()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster for one test that stops and starts its daemons."""
    running = Cluster(str(tmp_path / "cluster")).start()
    yield running
    running.stop()


@pytest.fixture
def beds(tmp_path):
    made = []

    def make(cluster, transport=None, **over):
        queue = queue_config(batch={"system": "slurm"},
                             transport=cluster.sshd.queue_transport(workdir=str(tmp_path / "workers"),
                                                                   **(transport or {})), **over)
        bed = Testbed(tmp_path / f"bed{len(made)}", {QUEUE: queue})
        made.append((bed, cluster))
        return bed

    yield make
    for bed, cluster in made:
        bed.close()
        if cluster.slurm.slurmctld is not None and cluster.slurm.slurmctld.running:
            cluster.slurm.run("scancel", "--user=root")


def workers_of(bed):
    """The workers harvester has, [] before its database exists."""
    return bed.workers() if os.path.exists(os.path.join(bed.home, "harvester.db")) else []


def settled(bed, n=None):
    """The workers when all are final (and at least ``n``), else None."""
    now = workers_of(bed)
    if now and all(w["status"] in FINAL for w in now) and (n is None or len(now) >= n):
        return now
    return None


def history(bed, worker_id):
    with bed.db() as conn:
        return [tuple(row) for row in conn.execute(
            "SELECT old_status, new_status, reason FROM worker_status_log WHERE worker_id = ? ORDER BY id",
            (worker_id,))]


def test_pilots_run_as_slurm_jobs_over_ssh(cluster, beds):
    bed = beds(cluster)
    ids = bed.submit(3, transformation=bed.script("echo.sh", ECHO))
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "3 jobs finished")
    workers = bed.wait_for(lambda: settled(bed), "every worker final")
    assert {w["status"] for w in workers} == {"finished"}
    slurm_jobs = cluster.jobs()
    for worker in workers:
        assert worker["batchID"].isdigit()
        assert slurm_jobs[worker["batchID"]] == ("COMPLETED", worker["accessPoint"])  # ran as a Slurm job
        with open(os.path.join(worker["accessPoint"], "job.sh")) as handle:
            script = handle.read()
        assert f"#SBATCH --comment={worker['accessPoint']}" in script and "#SBATCH --mem=2000M" in script
        assert os.path.exists(os.path.join(worker["accessPoint"], f"slurm-{worker['batchID']}.out"))
        reasons = [reason for _, _, reason in history(bed, worker["workerID"])]
        assert any(f"accepted by slurm as batch job {worker['batchID']}" in r for r in reasons)
        assert any("COMPLETED" in r for r in reasons)  # the worker's end is Slurm's word


def test_several_pilots_of_one_worker_run_side_by_side_in_one_slurm_job(cluster, beds, tmp_path):
    """pilot.per_worker 2: one Slurm job with both pilots' cores, two pilots in it taking a job each and running
    them at the same time (the payloads wait for each other)."""
    from test_harvester_e2e import rendezvous

    meeting = tmp_path / "meeting"
    meeting.mkdir()
    bed = beds(cluster, pilot={"timefloor": 10, "per_worker": 2},
               limits={"maxWorkers": 1, "nQueueLimitWorker": 1, "maxNewWorkersPerCycle": 1})
    ids = bed.submit(2, transformation=bed.script("meet.sh", rendezvous(meeting, 2)))
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "2 jobs finished")
    (ended,) = bed.wait_for(lambda: settled(bed), "the worker final")
    assert ended["status"] == "finished" and ended["cores"] == 2
    assert cluster.jobs()[ended["batchID"]] == ("COMPLETED", ended["accessPoint"])
    with open(os.path.join(ended["accessPoint"], "job.sh")) as handle:
        script = handle.read()
    assert "#SBATCH --ntasks=1" in script and "#SBATCH --cpus-per-task=2" in script
    ran = []
    for index in (1, 2):
        with open(os.path.join(ended["accessPoint"], f"pilot-{index}", "worker_pandaids.json")) as handle:
            ran.append(json.load(handle))
    assert sorted(ran[0] + ran[1]) == sorted(ids) and all(ran)  # each pilot ran one of the two jobs


def test_scancel_of_a_several_pilot_worker_stops_each_pilot_warmly(cluster, beds):
    """scancel sends SIGTERM to every process of the batch step: the job script forwards it too, and each pilot
    counts the two as one warm stop and reports its job failed itself, at once: with the signal's code (1201), or
    the payload's exit by that same SIGTERM (1305, exit code 143) when the payload ended first. Pilots killed
    before reporting would leave the server to fail the jobs with 1008 when harvester reports the worker ended."""
    bed = beds(cluster, pilot={"timefloor": 10, "per_worker": 2, "heartbeat": 60, "lost_heartbeat": 3600},
               limits={"maxWorkers": 1, "nQueueLimitWorker": 1, "maxNewWorkersPerCycle": 1})
    ids = bed.submit(2, transformation=bed.script("long.sh", LONG_SLEEP))
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"running"}, "both jobs running")
    (worker,) = workers_of(bed)
    assert cluster.slurm.run("scancel", worker["batchID"]).returncode == 0
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"failed"}, "both jobs reported failed")
    for job in (bed.job(pid) for pid in ids):
        code = (int(job["pilotErrorCode"]), int(job["transExitCode"] or 0))
        assert code[0] == 1201 or code == (1305, 143), job
    (ended,) = bed.wait_for(lambda: settled(bed), "the worker final")
    assert ended["status"] == "cancelled" and "CANCELLED" in ended["diag"]


def test_scancel_ends_cancelled_and_timeout_ends_failed(cluster, beds):
    bed = beds(cluster)
    trf = bed.script("long.sh", LONG_SLEEP)
    bed.submit(2, transformation=trf)
    bed.start()
    running = bed.wait_for(lambda: (lambda ws: ws if len(ws) == 2 else None)(
        [w for w in workers_of(bed) if w["status"] == "running"]), "2 running workers")
    cancelled, timed_out = sorted(running, key=lambda w: w["workerID"])
    assert cluster.slurm.run("scancel", cancelled["batchID"]).returncode == 0
    update = cluster.slurm.run("scontrol", "update", f"JobId={timed_out['batchID']}", "TimeLimit=0")
    assert update.returncode == 0, update.stderr
    ended = {w["workerID"]: w for w in bed.wait_for(
        lambda: (lambda ws: ws if all(ws.get(w["workerID"], {}).get("status") in FINAL for w in running) else None)(
            {w["workerID"]: w for w in workers_of(bed)}), "both workers ended").values()}
    assert ended[cancelled["workerID"]]["status"] == "cancelled"
    assert "CANCELLED" in ended[cancelled["workerID"]]["diag"]
    assert ended[timed_out["workerID"]]["status"] == "failed"
    assert "TIMEOUT (TimeLimit)" in ended[timed_out["workerID"]]["diag"]


def test_sshd_restarted_mid_cycle_loses_nothing(own_cluster, beds):
    bed = beds(own_cluster)
    go = os.path.join(bed.base, "go")  # the payloads run until the test says so: no race with their end
    ids = bed.submit(4, transformation=bed.script("wait.sh", WAIT_FOR_FILE), jobParameters=go)
    bed.start()
    bed.wait_for(lambda: any(w["batchID"] for w in workers_of(bed)), "a worker submitted")
    own_cluster.sshd.restart()  # every kept connection is cut while harvester works
    # a worker seen running (its start time), which it may have left again before a loaded machine polls
    bed.wait_for(lambda: any(w["startTime"] for w in workers_of(bed)), "a worker running")
    own_cluster.sshd.restart()
    open(go, "w").close()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "4 jobs finished")
    workers = bed.wait_for(lambda: settled(bed), "every worker final")
    assert {w["status"] for w in workers} == {"finished"}, workers
    ours = {job: comment for job, (_, comment) in own_cluster.jobs().items()}
    assert sorted(ours) == sorted(w["batchID"] for w in workers)  # no job submitted twice or left untracked
    assert "connected" in bed.log()  # harvester's log shows the reconnections


def test_slurmctld_stopped_then_back(own_cluster, beds):
    bed = beds(own_cluster, limits={"maxSubmissionAttempts": 10})
    own_cluster.slurm.stop_controller()
    ids = bed.submit(2, transformation=bed.script("echo.sh", ECHO))
    bed.start()

    def refused():
        if not workers_of(bed):
            return []
        with bed.db() as conn:
            return conn.execute("SELECT worker_id, diag FROM worker WHERE diag LIKE '%Unable to contact slurm "
                                "controller%'").fetchall()
    bed.wait_for(refused, "a submission refused with sbatch's error as the worker's diag")
    status = json.loads(bed.cli("status", "--json").stdout)
    assert "Unable to contact slurm controller" in (status["queues"][QUEUE]["last_error"] or "")
    with bed.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM worker WHERE batch_id IS NOT NULL").fetchone()[0] == 0
    own_cluster.slurm.start_controller()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "2 jobs finished once slurmctld is back")
    workers = bed.wait_for(lambda: settled(bed), "every worker final")
    with bed.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM worker WHERE submit_phase != 'done'").fetchone()[0] == 0
    submitted = sorted(w["batchID"] for w in workers if w["batchID"])
    assert sorted(own_cluster.jobs()) == submitted  # every Slurm job belongs to a recorded worker


def test_an_unknown_host_key_is_refused(cluster, beds, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    bed = beds(cluster, transport={"known_hosts": str(empty)})
    bed.submit(1, transformation=bed.script("echo.sh", ECHO))
    bed.once(check=False)
    workers = bed.workers()
    assert workers and not any(w["batchID"] for w in workers)
    assert all("is not in" in w["diag"] and "accept_unknown_host" in w["diag"] for w in workers)
    assert empty.read_text() == ""  # nothing trusted behind the admin's back


def test_discover_writes_a_config_that_lints_clean(cluster, tmp_path):
    sshd = cluster.sshd
    argv = [sys.executable, "-m", "harvester", "discover", "--ssh", "root@127.0.0.1", "--port", str(sshd.port),
            "--key", sshd.user_key, "--known-hosts", sshd.known_hosts, "--home", str(tmp_path / "home")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    queue = next(iter(config["queues"].values()))
    assert queue["batch"]["system"] == "slurm" and queue["batch"]["partition"] == "debug"
    assert queue["transport"]["host"] == "127.0.0.1" and queue["transport"]["port"] == sshd.port
    path = tmp_path / "discovered.yaml"
    path.write_text(proc.stdout)
    lint = subprocess.run([sys.executable, "-m", "queueconfig", "lint", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert lint.returncode == 0 and "warning" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_find_reconciles_a_submission_a_crash_left_unrecorded(cluster, tmp_path):
    """The submitter records 'submitting' before sbatch; if harvester dies before it records the job id, recovery
    asks find(access point), which recognises the Slurm job by its comment (and working directory)."""
    from harvester.batch import plugin_for
    from harvester.batch.base import WorkerSpec
    from harvester.context import transport_for
    from queueconfig import Queue

    queue = Queue.model_validate({"name": QUEUE, "batch": {"system": "slurm"},
                                  "transport": cluster.sshd.queue_transport(workdir=str(tmp_path))})
    with transport_for(queue) as transport:
        plugin = plugin_for(queue, transport, None)
        workers = [WorkerSpec(n, str(tmp_path / str(n)), ("sleep", "60"), {}, 1, 100, 600) for n in (1, 2)]
        for worker in workers:
            plugin.write_script(worker)
        [first, second] = plugin.submit(workers)
        assert plugin.find(workers[0].access_point) == first.batch_id
        assert plugin.find(workers[1].access_point) == second.batch_id
        assert plugin.find(str(tmp_path / "3")) is None  # never submitted: recovery gives it up, no resubmission
        assert set(plugin.cancel([first.batch_id, second.batch_id]).results.values()) == {("ok", "scancel accepted")}
