"""Brokerage over real HTTP: which queue, why the others were skipped, weights and fullness, and ``why``."""
import subprocess
import sys

from conftest import make_job
from minipanda.core import models
from minipanda.tasks import brokerage
from taskhelp import task_server  # noqa: F401 (a fixture)
from taskhelp import TaskServer, acquire, jobs_of, open_db, set_queue, submit, update, wait_for, wait_jobs


def why(server, panda_id):
    return server.call("job/why", {"job_id": panda_id}, method="GET")["data"]


def test_choice_and_recorded_reasons(task_server):
    roomy = {"corecount": 8, "maxrss": 8000}  # each queue below lacks one thing only
    set_queue("A_OFF", status="offline", **roomy)
    set_queue("B_SMALL", **dict(roomy, maxrss=1000))
    set_queue("C_SHORT", maxtime=60, **roomy)
    set_queue("D_NONET", wnconnectivity="none", **roomy)
    set_queue("E_FITS", **roomy)
    set_queue("F_FEWCORES", **dict(roomy, corecount=2))
    tid = submit(task_server, {"taskName": "b", "exec": "true", "nJobs": 1, "nScouts": 0, "ramCount": 3000,
                               "walltime": 600, "coreCount": 4, "excludedSite": ["D_NONET"]})
    (job,) = wait_jobs(task_server, tid, 1)
    assert job["computingSite"] == "E_FITS"
    verdicts = {c["queue"]: c for c in why(task_server, job["PandaID"])["brokerage"]}
    assert verdicts["E_FITS"]["kept"] and verdicts["E_FITS"]["reasons"] == []
    assert verdicts["A_OFF"]["reasons"] == ["queue is offline, not online"]
    assert verdicts["B_SMALL"]["reasons"] == ["job needs memory 3000 MB, queue allows 1000 MB"]
    assert verdicts["C_SHORT"]["reasons"] == ["job needs walltime 600 s, queue allows 60 s"]
    assert verdicts["D_NONET"]["reasons"] == ["excluded by the task (excludedSite)"]
    assert verdicts["F_FEWCORES"]["reasons"] == ["job needs 4 cores, queue has 2"]
    lines = why(task_server, job["PandaID"])["lines"]
    assert any(line.startswith("  B_SMALL: skipped: job needs memory 3000 MB") for line in lines)
    assert any("E_FITS: kept" in line and "<- this job" in line for line in lines)


def test_a_job_larger_than_a_node_goes_only_where_multi_node_jobs_are_allowed(task_server):
    """coreCount 8 on nodes of 4 cores is a 2-node job: the single-node queue is skipped (``why`` says so), the
    queue whose harvester gives each job a worker of its size takes it, and one allowing fewer nodes does not."""
    set_queue("M_SINGLE", corecount=4, corepernode=4, maxrss=8000)
    set_queue("M_ONE_NODE", corecount=1, corepernode=4, maxjobnodes=1, maxrss=8000)
    set_queue("M_TWO_NODES", corecount=1, corepernode=4, maxjobnodes=2, maxrss=4000)
    set_queue("M_TOO_FEW", corecount=1, corepernode=2, maxjobnodes=2, maxrss=8000)
    tid = submit(task_server, {"taskName": "mpi", "exec": "srun -N 2 hostname", "nJobs": 2, "nScouts": 0,
                               "coreCount": 8, "ramCount": 6000, "site": ["M_SINGLE", "M_ONE_NODE", "M_TWO_NODES",
                                                                         "M_TOO_FEW"]})
    jobs = wait_jobs(task_server, tid, 2)
    assert {job["computingSite"] for job in jobs} == {"M_TWO_NODES"}
    answer = why(task_server, jobs[0]["PandaID"])
    verdicts = {c["queue"]: c for c in answer["brokerage"]}
    assert verdicts["M_TWO_NODES"]["kept"]  # 6000 MB over 2 nodes of 4000 MB fits
    assert verdicts["M_SINGLE"]["reasons"] == ["job needs 8 cores, 2 nodes of 4; queue takes single-node jobs of "
                                               "at most 4 cores (no resources.max_job_nodes)"]
    assert verdicts["M_ONE_NODE"]["kinds"] == ["nodes"]
    assert verdicts["M_TOO_FEW"]["reasons"] == ["job needs 4 nodes of 2 cores (8 cores), queue allows 2 nodes per job"]
    text = "\n".join(answer["lines"])
    assert "M_SINGLE: skipped: job needs 8 cores, 2 nodes of 4" in text
    assert "it needs 2 nodes of 4 cores: harvester gives it one worker of 2 nodes" in text


def test_no_queue_takes_a_multi_node_job(task_server):
    set_queue("N_SINGLE", corecount=4, corepernode=8, maxrss=8000)
    tid = submit(task_server, {"taskName": "wide", "exec": "true", "nJobs": 1, "nScouts": 0, "coreCount": 16,
                               "site": ["N_SINGLE"]})
    (job,) = wait_jobs(task_server, tid, 1, status="defined")
    assert "no queue fits 16 cores on several nodes" in "\n".join(why(task_server, job["PandaID"])["lines"])


def test_no_queue_fits_memory_then_rebrokered(task_server):
    set_queue("Q1", maxrss=2000)
    set_queue("Q2", maxrss=4000)
    tid = submit(task_server, {"taskName": "big", "exec": "true", "nJobs": 3, "nScouts": 0, "ramCount": 8000})
    (job,) = wait_jobs(task_server, tid, 1, status="defined")
    answer = why(task_server, job["PandaID"])
    assert "it is not running because no queue fits memory 8000 MB" in "\n".join(answer["lines"])
    assert answer["status"] == "defined" and job["computingSite"] == ""
    cli = subprocess.run([sys.executable, "-m", "minipanda", "why", str(job["PandaID"]), "--url", task_server.url,
                          "--home", task_server.home], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "no queue fits memory 8000 MB" in cli.stdout
    assert len(jobs_of(task_server, tid)) == 1  # no more jobs while the first fits nowhere
    set_queue("Q2", maxrss=16000)
    placed = wait_jobs(task_server, tid, 3, status="activated")
    assert {j["computingSite"] for j in placed} == {"Q2"}


def test_weights_and_full_queues(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url, {"brokerage.bootstrap_queued": 4})
    try:
        open_db(server)
        set_queue("QA")
        set_queue("QB")
        body = server.call("job/submit", {"jobs": [make_job("QA", prodSourceLabel="user") for _ in range(3)]})
        for job in acquire(server, "QA", n=3):
            update(server, job["PandaID"], "running")
        tid = submit(server, {"taskName": "w", "exec": "true", "nJobs": 12, "nScouts": 0})
        jobs = wait_jobs(server, tid, 10)
        sites = [j["computingSite"] for j in jobs]
        # QA: 3 running, weight 4/(q+10), takes jobs up to max(2 x 3, 4) = 6 queued; QB (idle) up to 4.
        assert (sites.count("QA"), sites.count("QB")) == (6, 4) and len(body["data"]) == 3
        assert len(jobs_of(server, tid)) == 10  # the last 2 wait for room
        details = server.call("task/get_details", {"task_id": tid}, method="GET")["data"]
        assert "every fitting queue is full" in details["errorDialog"]
        for job in acquire(server, "QB", n=2):
            update(server, job["PandaID"], "running")
        wait_for(lambda: len(jobs_of(server, tid)) == 12, "the throttled jobs once QB runs jobs")
    finally:
        server.stop()


def test_waiting_behind_higher_priority_jobs(task_server):
    set_queue("Q1")
    tid = submit(task_server, {"taskName": "line", "exec": "true", "nJobs": 3, "nScouts": 0})
    jobs = wait_jobs(task_server, tid, 3)
    assert [j["currentPriority"] for j in jobs] == [1000, 1000, 1000]
    lines = why(task_server, jobs[2]["PandaID"])["lines"]
    assert "waiting behind 2 higher-priority jobs on queue Q1" in lines
    assert "no pilot has taken a job from Q1 yet" in lines
    first = why(task_server, jobs[0]["PandaID"])["lines"]
    assert "first in line on queue Q1: waiting for a pilot to ask for a job" in first
    set_queue("Q1", status="offline")
    assert "queue Q1 is offline: pilots get no jobs from it" in why(task_server, jobs[0]["PandaID"])["lines"]


def test_connectivity_and_label_rules(database):
    set_queue("NONET", wnconnectivity="none")
    set_queue("HTTP", wnconnectivity="http#ipv4")
    set_queue("PROD", prodsourcelabels=["managed"])
    req = brokerage.Requirements(connectivity="http", label="user")
    found = {c["queue"]: c["reasons"] for c in brokerage.evaluate(req, 100)}
    assert found["NONET"] == ["worker nodes have none connectivity, the job needs http"]
    assert found["HTTP"] == [] and found["PROD"] == ["runs managed jobs, not user"]
    assert brokerage.assign([{"queue": q, "kept": True, "running": 0, "queued": 0} for q in ("B", "A")], 3, 100) \
        == ["A", "B", "A"]
    assert models.Brokerage.select().count() == 0
