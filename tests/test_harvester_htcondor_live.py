"""Harvester on a real HTCondor pool (tests/condorhelp.py): a real `minipanda serve`, `harvester run` as a daemon,
and our pilot zipapp running as HTCondor jobs in the pool's Debian 13 root file system (its python3).

Three harvesters start together (module fixture ``beds``) and the tests below each wait for their own part, so the
pool runs them side by side:

- ``local``: queues on the local schedd (FS authentication): one that runs jobs; one whose pilot is removed with
  condor_rm; one whose access points the pool cannot see (HTCondor holds its jobs); one whose pilot command
  outlives its walltime.
- ``remote``: a remote-style queue (``pool``, ``schedd``, IDTOKENS from ``token_file``) with ``file_transfer`` and
  access points the pool cannot see, on a host whose HTCondor configuration is empty.
- ``wrong``: the same queue with a token the pool did not sign.

Each harvester is a process of its own: the bindings keep one security session per schedd and process, so queues
of one harvester that reach the same schedd authenticate once (see docs/harvester.md). The schedd is killed last,
under a fourth harvester. Nothing here asserts on timing: every wait is a safety net with a generous limit.
"""
import contextlib
import os
import re
import signal

import pytest

from conftest import eventually
from harvesterhelp import Testbed, queue_config

pytestmark = pytest.mark.htcondor
ECHO = '#!/bin/sh\necho "payload ran with: $*"\n'
LONG_SLEEP = "#!/bin/sh\nsleep 600\n"
FINAL = {"finished", "failed", "cancelled", "missed"}
PILOT_PYTHON = "pilot_python=/usr/bin/python3"  # the pool's own interpreter: the pilot runs in its root file system


def condor(**over):
    batch = {"system": "htcondor", **over.pop("batch", {})}
    limits = {"maxWorkers": 2, "nQueueLimitWorker": 2, "maxNewWorkersPerCycle": 2, **over.pop("limits", {})}
    return queue_config(batch=batch, limits=limits, **over)


@contextlib.contextmanager
def environment(**values):
    """os.environ with ``values`` while harvester starts (it keeps what it was started with)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def workers_of(bed, queue):
    if not os.path.exists(os.path.join(bed.home, "harvester.db")):
        return []
    return [w for w in bed.workers() if w["queue"] == queue]


def first_final(bed, queue):
    """The first worker of ``queue`` once it is final."""
    def ended():
        found = sorted(workers_of(bed, queue), key=lambda w: w["workerID"])
        return found[0] if found and found[0]["status"] in FINAL else None
    return bed.wait_for(ended, f"the first worker of {queue} final", timeout=300)


def queue_state(bed, queue):
    with bed.db() as conn:
        row = conn.execute("SELECT failures, last_error, backoff_until FROM queue_state WHERE queue = ?",
                           (queue,)).fetchone()
    return dict(row) if row else {}


class Beds:
    def __init__(self, pool, base):
        self.pool, self.base = pool, base
        unseen = pool.unseen
        (base / "empty_config").write_text("")  # a harvester host without any HTCondor configuration
        good, bad = base / "condor.token", base / "wrong.token"
        good.write_text(pool.token() + "\n")
        bad.write_text(pool.token()[:-8] + "AAAAAAAA\n")
        good.chmod(0o600)
        bad.chmod(0o600)
        remote = {"pool": pool.collector, "schedd": pool.schedd_name(), "file_transfer": True}
        self.local = Testbed(base / "local", {
            "CONDOR_PULL": condor(),
            "CONDOR_RM": condor(),
            "CONDOR_HELD": condor(batch={"held_timeout": 5}, transport={"workdir": f"{unseen}/held-workers"}),
            # a pilot that outlives any walltime (ours would stop asking for jobs well before the limit)
            "CONDOR_WALL": condor(batch={"walltime": 30}, pilot={"lifetime": 30, "command": ["/bin/sleep", "600"]})})
        self.remote = Testbed(base / "remote", {"CONDOR_FT": condor(
            batch={**remote, "token_file": str(good)}, transport={"workdir": f"{unseen}/ft-workers"})})
        self.wrong = Testbed(base / "wrong", {"CONDOR_WRONG": condor(
            batch={**remote, "token_file": str(bad)}, transport={"workdir": f"{unseen}/wrong-workers"})})
        self.jobs = {
            "CONDOR_PULL": self.local.submit(3, queue="CONDOR_PULL", transformation=self.local.script("echo.sh", ECHO)),
            "CONDOR_RM": self.local.submit(1, queue="CONDOR_RM",
                                           transformation=self.local.script("sleep.sh", LONG_SLEEP)),
            "CONDOR_HELD": self.local.submit(1, queue="CONDOR_HELD", transformation=self.local.script("echo.sh", ECHO)),
            "CONDOR_WALL": self.local.submit(1, queue="CONDOR_WALL", transformation=self.local.script("echo.sh", ECHO)),
            "CONDOR_FT": self.remote.submit(2, queue="CONDOR_FT",
                                            transformation=self.remote.script("echo.sh", ECHO)),
            "CONDOR_WRONG": self.wrong.submit(1, queue="CONDOR_WRONG",
                                              transformation=self.wrong.script("echo.sh", ECHO))}
        with environment(CONDOR_CONFIG=pool.client_config):
            self.local.start(PILOT_PYTHON)
        with environment(CONDOR_CONFIG=str(base / "empty_config")):
            self.remote.start(PILOT_PYTHON)
            self.wrong.start(PILOT_PYTHON)

    def close(self):
        for bed in (self.local, self.remote, self.wrong):
            bed.close()


@pytest.fixture(scope="module")
def beds(condor_pool, tmp_path_factory):
    running = Beds(condor_pool, tmp_path_factory.mktemp("condor-beds"))
    yield running
    running.close()


def test_pilots_run_as_htcondor_jobs_of_the_local_schedd(beds):
    bed, ids = beds.local, beds.jobs["CONDOR_PULL"]
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "3 jobs finished", timeout=300)
    workers = bed.wait_for(lambda: [w for w in workers_of(bed, "CONDOR_PULL") if w["status"] in FINAL] or None,
                           "the pilots' workers final")
    for worker in workers:
        assert worker["status"] == "finished" and re.fullmatch(r"\d+\.\d+", worker["batchID"]), worker
        known = beds.pool.jobs(f'MinipandaAccessPoint == "{worker["accessPoint"]}"',
                               ("ClusterId", "ProcId", "JobStatus", "MinipandaWorker", "Owner"))
        assert known == {worker["batchID"]: {  # condor_history knows the job harvester says ran the pilot
            "ClusterId": worker["batchID"].split(".")[0], "ProcId": worker["batchID"].split(".")[1],
            "JobStatus": "4", "MinipandaWorker": str(worker["workerID"]), "Owner": "pilot"}}
    ran = [w for w in workers if os.path.exists(os.path.join(w["accessPoint"], "worker_pandaids.json"))]
    assert len(ran) >= 1 and all("Job terminated" in open(os.path.join(w["accessPoint"], "job.log")).read()
                                 for w in workers)


def test_condor_rm_of_a_pilot_cancels_its_worker(beds):
    bed = beds.local
    running = bed.wait_for(lambda: next((w for w in workers_of(bed, "CONDOR_RM") if w["status"] == "running"),
                                        None), "the pilot of CONDOR_RM running", timeout=300)
    beds.pool.run("condor_rm", running["batchID"], user="pilot")
    ended = first_final(bed, "CONDOR_RM")
    assert (ended["workerID"], ended["status"]) == (running["workerID"], "cancelled"), ended
    assert "JobStatus 3 (removed)" in ended["diag"]


def test_a_held_job_is_removed_after_held_timeout_and_its_worker_fails_with_the_hold_reason(beds):
    ended = first_final(beds.local, "CONDOR_HELD")
    assert ended["status"] == "failed", ended
    diag = ended["diag"]
    assert "(limit 5 s) and removed" in diag and "HoldReason" in diag and beds.pool.unseen in diag


def test_walltime_exceeded_has_its_own_diag(beds):
    bed = beds.local
    running = bed.wait_for(lambda: next((w for w in workers_of(bed, "CONDOR_WALL") if w["status"] == "running"),
                                        None), "the pilot of CONDOR_WALL running", timeout=300)
    ended = bed.wait_for(lambda: next((w for w in workers_of(bed, "CONDOR_WALL") if w["workerID"] ==
                                       running["workerID"] and w["status"] in FINAL), None),
                         "the running pilot's worker final", timeout=300)
    assert ended["status"] == "failed" and "walltime exceeded" in ended["diag"], ended


def test_file_transfer_with_an_idtoken_and_an_access_point_the_pool_cannot_see(beds):
    bed, ids = beds.remote, beds.jobs["CONDOR_FT"]
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "2 jobs finished", timeout=300)
    workers = bed.wait_for(lambda: [w for w in workers_of(bed, "CONDOR_FT") if w["status"] in FINAL] or None,
                           "the pilots' workers final")
    for worker in workers:
        ap = worker["accessPoint"]
        assert worker["status"] == "finished" and ap.startswith(beds.pool.unseen), worker
        assert beds.pool.run("ls", ap, check=False).returncode != 0  # the pool cannot see the access point
        with open(os.path.join(ap, "job.sh")) as handle:
            assert "cd . ||" in handle.read()  # the script runs in HTCondor's scratch directory
        with open(os.path.join(ap, "job.err")) as handle:  # the pilot's log, brought back by output transfer
            log = handle.read()
        assert f"queue CONDOR_FT, work area {'/'}" in log and "/execute/dir_" in log, log[-2000:]
        assert beds.pool.jobs(f'MinipandaAccessPoint == "{ap}"', ("ClusterId", "ProcId", "JobStatus"))[
            worker["batchID"]]["JobStatus"] == "4"


def test_a_wrong_token_is_a_clear_error_the_queue_backs_off_and_nothing_is_submitted(beds):
    bed = beds.wrong
    state = bed.wait_for(lambda: queue_state(bed, "CONDOR_WRONG").get("failures") or None, "a submission failure")
    state = queue_state(bed, "CONDOR_WRONG")
    error = state["last_error"]
    assert state["backoff_until"] and "queue CONDOR_WRONG" in error, state
    assert f"schedd {beds.pool.schedd_name()}" in error and "IDTOKENS authentication with token file" in error
    assert all(w["batchID"] in (None, "") and w["status"] in ("submitted", "missed")
               for w in workers_of(bed, "CONDOR_WRONG"))
    assert not beds.pool.jobs(f'regexp("^{re.escape(beds.pool.unseen)}/wrong-workers", MinipandaAccessPoint)')


def test_the_schedd_killed_mid_cycle_loses_nothing_and_submits_nothing_twice(condor_pool, tmp_path):
    """SIGKILL of the schedd while harvester submits and follows workers; condor_master starts it again. Every job
    still finishes, each worker is exactly one HTCondor job, and no job is without its worker. (Last in this
    module: the other harvesters, done with their tests by now, ride the outage out too.)"""
    pool, workdir = condor_pool, str(tmp_path / "workers")
    bed = Testbed(tmp_path / "bed", {"CONDOR_KILL": condor(transport={"workdir": workdir}, limits={
        "maxWorkers": 4, "nQueueLimitWorker": 4, "maxNewWorkersPerCycle": 1})})
    try:
        ids = bed.submit(4, queue="CONDOR_KILL", transformation=bed.script("echo.sh", ECHO))
        with environment(CONDOR_CONFIG=pool.client_config):
            bed.start(PILOT_PYTHON)
        bed.wait_for(lambda: any(w["batchID"] for w in workers_of(bed, "CONDOR_KILL")), "a first submission")
        killed = pool.daemon_pid("condor_schedd")
        os.kill(killed, signal.SIGKILL)
        assert eventually(lambda: pool.daemon_pid("condor_schedd") not in (None, killed), timeout=120), \
            pool.log("MasterLog")
        bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "4 jobs finished", timeout=400)
        workers = bed.wait_for(lambda: (lambda ws: ws if ws and all(w["status"] in FINAL for w in ws) else None)(
            workers_of(bed, "CONDOR_KILL")), "every worker final", timeout=300)
        jobs = pool.jobs(f'regexp("^{workdir}/", MinipandaAccessPoint)',
                         ("ClusterId", "ProcId", "JobStatus", "MinipandaWorker"))
        per_worker = {}
        for batch_id, job in jobs.items():
            per_worker.setdefault(int(job["MinipandaWorker"]), []).append(batch_id)
        submitted = {w["workerID"]: w["batchID"] for w in workers if w["batchID"]}
        assert {wid: [b] for wid, b in submitted.items()} == per_worker  # one job each, none without a worker
        assert not [w for w in workers if w["status"] == "failed"], [(w["workerID"], w["diag"]) for w in workers]
        assert pool.log("MasterLog", tail=None).count('process "/usr/sbin/condor_schedd"') >= 2  # restarted
    finally:
        bed.close()
