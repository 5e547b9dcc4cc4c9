"""Faults, with real processes: `minipanda serve`, `harvester run` (daemon or --once), the local batch system and
the pilot zipapp. Nothing of ours is mocked; each fault is made for real (a signal, a stopped server, a file
overwritten, a spool directory that cannot be made, an invalid queue file).

Nothing here asserts on timing: every wait is a safety net with a generous limit.
"""
import collections
import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests
import yaml

from conftest import free_port
from harvesterhelp import FAST, QUEUE, QueueServer, Testbed, queue_config
from testbed.processes import children, descendants

ECHO = '#!/bin/sh\necho "payload ran with: $*"\n'
# waits (at most 2 min) until the file named by its first argument exists
WAIT_FOR_FILE = '#!/bin/sh\ni=0\nwhile [ ! -e "$1" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done\necho "go"\n'
SERVER_FAST = {"period.generator": 0.5, "period.settle": 0.5, "period.watchdog": 1}
FINAL = {"finished", "failed", "cancelled", "missed"}


class SettingsServer(QueueServer):
    """The testbed's server with task-side settings (short duty periods), restartable on its port and database."""

    def __init__(self, home, db_url, queues_path, settings):
        self.settings = dict(settings)
        super().__init__(home, db_url, queues_path)

    def argv(self):
        return super().argv() + [arg for key, value in self.settings.items()
                                 for arg in ("--setting", f"{key}={value}")]

    def restart(self):
        """Start again after stop(): same port, home and database."""
        assert self.proc.poll() is not None, "stop the server first"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()[-3000:]}")
            try:
                requests.get(self.url + "/api/v1/system/is_alive", timeout=1)
                return
            except (requests.ConnectionError, requests.Timeout):  # a loaded machine: not up yet
                time.sleep(0.2)
        raise RuntimeError("restarted server did not answer within 60 s")


class FaultBed(Testbed):
    """A :class:`Testbed` whose server runs duties fast, and whose harvester may read its own queue file."""

    def __init__(self, base, queues, harvester_queues=None):
        super().__init__(base, queues)
        self.harvester_queues_path = self.queues_path
        if harvester_queues is not None:
            self.harvester_queues_path = os.path.join(self.base, "harvester-queues.yaml")
            self.write_harvester_queues(harvester_queues)
        self.strays = []  # (pid, start ticks) of processes a test orphaned on purpose

    def make_server(self, home, db_url):
        return SettingsServer(home, db_url, self.queues_path, SERVER_FAST)

    def write_harvester_queues(self, queues):
        with open(self.harvester_queues_path, "w") as handle:
            yaml.safe_dump({"queues": queues}, handle)

    def argv(self, *extra, server=None):
        argv = super().argv(*extra)
        argv[argv.index("--queues") + 1] = self.harvester_queues_path
        if server:
            argv[argv.index("--server") + 1] = server
        return argv

    def workers(self):
        if not os.path.exists(os.path.join(self.home, "harvester.db")):
            return []  # not started yet
        return super().workers()

    def status(self):
        proc = self.cli("status", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def worker(self, worker_id):
        return next(w for w in self.workers() if w["workerID"] == worker_id)

    def all_finished(self, ids):
        return set(self.statuses(ids).values()) == {"finished"}

    def settled(self):
        """Every worker final and reported, nothing left in the outbox: the state to inspect after a run."""
        workers = self.workers()
        with self.db() as conn:
            pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE rejected = 0").fetchone()[0]
        return workers if workers and all(w["status"] in FINAL and w["reported"] for w in workers) and not pending \
            else None

    def status_log(self, panda_id):
        return self.v1("job/get_status_log", job_id=panda_id)

    def close(self):
        super().close()
        for pid, start in self.strays:
            if start_ticks(pid) == start:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def testbed_factory(tmp_path):
    beds = []

    def make(queues=None, harvester_queues=None, **queue_over):
        bed = FaultBed(tmp_path / f"bed{len(beds)}", queues or {QUEUE: queue_config(**queue_over)}, harvester_queues)
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()


# ---- processes, from /proc ------------------------------------------------------------------------------------
def start_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def spool_records(bed, queue=QUEUE):
    """Every pilot the local batch system started for ``queue``: its spool records, {batch id: record}."""
    return spool_records_in(os.path.join(bed.home, "workers", queue, ".batch"))


def spool_records_in(spool):
    records = {}
    for path in glob.glob(os.path.join(spool, "*.json")):
        with open(path) as handle:
            records[os.path.basename(path)[:-len(".json")]] = json.load(handle)
    return records


def count_workers(bed):
    if not os.path.exists(os.path.join(bed.home, "harvester.db")):
        return 0
    conn = bed.db()
    try:
        return conn.execute("SELECT COUNT(*) FROM worker").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not made yet
        return 0
    finally:
        conn.close()


def sent_count(bed, panda_id):
    return sum(1 for row in bed.status_log(panda_id) if row["to"] == "sent")


# ---- 1. kill -9 of the harvester ------------------------------------------------------------------------------
def test_kill_9_mid_run_then_restart_reconciles_every_worker(testbed_factory):
    bed = testbed_factory()
    trf = bed.script("wait.sh", WAIT_FOR_FILE)
    go = os.path.join(bed.base, "go")
    ids = bed.submit(4, transformation=trf, jobParameters=go)
    at_kill = []
    # killed twice: as soon as the first worker exists (being submitted), then while pilots run (being monitored)
    for moment, what in ((lambda: count_workers(bed) > 0, "the first worker"),
                         (lambda: set(bed.statuses(ids).values()) <= {"starting", "running"}, "every payload running")):
        daemon = bed.start()
        bed.wait_for(moment, what)
        bed.stop(signal.SIGKILL)
        assert daemon.returncode == -signal.SIGKILL
        conn = bed.db()
        at_kill += [dict(row) for row in conn.execute("SELECT worker_id, status, submit_phase, batch_id FROM worker")]
        conn.close()
    bed.start()
    open(go, "w").close()  # the payloads end while the restarted harvester follows their workers
    bed.wait_for(lambda: bed.all_finished(ids), "every job finished after the restart")
    workers = bed.wait_for(bed.settled, "every worker final and reported")
    bed.stop()
    assert "took over from" in bed.log(), bed.log()[-3000:]
    # every worker reconciled: final; a worker the kill caught while submitting is adopted if it was launched, else
    # missed; never resubmitted
    by_id = {w["workerID"]: w for w in workers}
    for row in at_kill:
        assert by_id[row["worker_id"]]["status"] in FINAL, (row, by_id[row["worker_id"]])
    # none submitted twice: one spool record per pilot started, one per worker, and the worker's batch id is it
    records = spool_records(bed)
    launches = collections.Counter(record["worker_id"] for record in records.values())
    assert launches and max(launches.values()) == 1, launches
    for worker in workers:
        if worker["batchID"]:
            assert records[worker["batchID"]]["worker_id"] == worker["workerID"]
            assert worker["submissionAttempts"] == 1
        else:  # only a worker the kill caught before its launch may have no batch id: a launched one is adopted
            assert worker["status"] == "missed", (worker, at_kill)
            assert not (worker["accessPoint"] and os.path.exists(os.path.join(worker["accessPoint"], "job.out"))), \
                ("a launched worker was given up as missed", worker, at_kill)
    assert {w["batchID"] for w in workers if w["batchID"]} <= set(records)
    # each pilot ran once in its access point (one exit status written by its job script)
    for worker in workers:
        if worker["batchID"]:
            with open(os.path.join(worker["accessPoint"], "job.exit")) as handle:
                assert handle.read().strip() == "0"
    # no job dispatched twice, no update lost
    for panda_id in ids:
        assert sent_count(bed, panda_id) == 1, bed.status_log(panda_id)
        assert bed.job(panda_id)["attemptNr"] in (0, 1)
    server_workers = {r["workerID"]: r["status"] for r in bed.v1("harvester/list_workers", queue=QUEUE)}
    assert server_workers == {w["workerID"]: w["status"] for w in workers}


def test_jobs_the_server_sent_before_a_crash_are_adopted_not_lost(testbed_factory):
    """The server handed jobs to this harvester (acquire_jobs) and harvester died before recording them: after the
    restart it adopts them from the server's list of jobs sent to it, and they run, each dispatched once."""
    bed = testbed_factory(mode="push")
    ids = bed.submit(2, transformation=bed.script("echo.sh", "#!/bin/sh\necho adopted\n"))
    with open(bed.token_file) as handle:
        token = handle.read().strip()
    # exactly what the killed harvester left: the jobs sent to its id, nothing in its database
    reply = requests.post(f"{bed.server.url}/api/v1/pilot/acquire_jobs", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"site_name": QUEUE, "computing_element": QUEUE, "prod_source_label": "managed",
                                "n_jobs": 5, "harvester_id": "h1", "node": "harvester-host"})  # the token's
    assert sorted(int(job["PandaID"]) for job in reply.json()["data"]) == sorted(ids)
    assert set(bed.statuses(ids).values()) == {"sent"}
    settings = [arg for setting in FAST for arg in ("--setting", setting)]
    bed.daemon = subprocess.Popen(bed.argv("--harvester-id", "h1", *settings), stdout=subprocess.DEVNULL,
                                  stderr=open(bed.daemon_log, "ab"))
    bed.wait_for(lambda: bed.all_finished(ids), "both jobs finished after the restart")
    assert "adopted 2 jobs the server had sent to this harvester" in bed.log()
    for panda_id in ids:
        assert sent_count(bed, panda_id) == 1, bed.status_log(panda_id)


@pytest.fixture
def push_context(tmp_path):
    """A harvester's context over its own database with one push queue (QUEUE, OneToOne) and the local batch system,
    its server never reached: the submitter's recovery as a restarted harvester runs it."""
    from harvester import db
    from harvester.context import Context, Settings
    from harvester.client import ServerClient
    from queueconfig.loader import load_partial

    queues_path = tmp_path / "queues.yaml"
    queues_path.write_text(yaml.safe_dump({"queues": {QUEUE: queue_config(mode="push", mapType="OneToOne")}}))
    config, errors, file_errors = load_partial(str(queues_path))
    assert not errors and not file_errors, (errors, file_errors)
    home = str(tmp_path / "home")
    db.open_database(os.path.join(home, "harvester.db"))
    server = ServerClient(f"http://127.0.0.1:{free_port()}", None, "faults-test", timeout=2)
    ctx = Context(home, server, Settings(), "faults-test")
    try:
        ctx.set_queues(dict(config.queues), {})
        yield ctx
    finally:
        ctx.close()
        server.close()
        db.close_database()


def test_recover_interrupted_never_resubmits(push_context):
    """Two workers a killed harvester left in submit_phase 'submitting': one whose batch job really runs (the plugin
    launched it, the kill came before its answer was recorded) and one the plugin never launched. The local plugin's
    find() gives the first back (adopted with its batch id); the second is given up as missed, its job released.
    Neither is ever launched again."""
    from harvester import models
    from harvester.agents.submitter import Submitter, recover_interrupted
    from harvester.batch.base import OK, WorkerSpec
    from harvester.states import utcnow

    launched = None
    ctx = push_context
    try:
        queue = ctx.queues[QUEUE]
        plugin = ctx.plugin(queue)
        assert getattr(plugin, "find", None) is not None, "the local plugin is expected to have find()"
        now = utcnow()
        rows = []
        for panda_id in (4241, 4242):
            worker = models.Worker.create(queue=QUEUE, status="submitted", submit_phase="pending",
                                          map_type="OneToOne", modification_time=now, status_changed=now)
            models.HeldJob.create(panda_id=panda_id, queue=QUEUE, definition="{}", status="fed",
                                  worker_id=worker.worker_id, fetched_time=now)
            models.JobWorker.create(panda_id=panda_id, worker_id=worker.worker_id, time=now)
            rows.append(worker)
        specs = []
        for worker in rows:  # the submitter's steps up to the plugin call, for real: script, phase submitting
            ap = ctx.access_point(queue, worker.worker_id)
            spec = WorkerSpec(worker_id=worker.worker_id, access_point=ap, argv=("sleep", "60"),
                              environment={}, cores=1, memory_mb=0, walltime_s=60)
            plugin.write_script(spec)
            models.Worker.update(submit_phase="submitting", submission_attempts=1, access_point=ap,
                                 submit_time=now).where(models.Worker.worker_id == worker.worker_id).execute()
            specs.append(spec)
        [result] = plugin.submit(specs[:1])  # the first is launched; harvester dies before recording either
        assert result.status == OK, result
        with open(os.path.join(ctx.spool_dir(queue), result.batch_id + ".json")) as handle:
            launched = json.load(handle)
        assert recover_interrupted(ctx, utcnow()) == 2
        adopted, given_up = (models.Worker.get_by_id(w.worker_id) for w in rows)
        assert adopted.status == "submitted" and adopted.batch_id == result.batch_id
        assert adopted.submit_phase == "done" and adopted.submission_attempts == 1
        assert models.HeldJob.get_by_id(4241).worker_id == adopted.worker_id
        assert given_up.status == "missed" and given_up.batch_id is None and given_up.submit_phase == "done"
        reason = models.WorkerStatusLog.select().where(models.WorkerStatusLog.worker_id == given_up.worker_id) \
            .order_by(models.WorkerStatusLog.id.desc()).first().reason
        assert "not resubmitted" in reason, reason
        held = models.HeldJob.get_by_id(4242)
        assert held.worker_id is None and held.status == "fetched"  # back to the queue, for another worker
        # later cycles never launch either of them again
        Submitter(ctx).run_once(utcnow())
        assert recover_interrupted(ctx, utcnow()) == 0
        assert [os.path.basename(p) for p in glob.glob(os.path.join(ctx.spool_dir(queue), "*.json"))] == \
            [result.batch_id + ".json"]
        assert [models.Worker.get_by_id(w.worker_id).submission_attempts for w in rows] == [1, 1]
    finally:
        if launched and start_ticks(launched["pid"]) == launched["start"]:
            os.killpg(launched["pid"], signal.SIGKILL)

# a submitting harvester, killed (SIGKILL, for real) after the local plugin launched the job script and before it
# wrote the spool record: argv[1] is {"spool", "spec"}
KILLED_AFTER_LAUNCH = """
import json, os, signal, sys
from harvester.batch import local
from harvester.batch.base import WorkerSpec
from harvester.transport import LocalTransport
from queueconfig import Queue

args = json.loads(sys.argv[1])
local.Spool.write = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
local.LocalBatch(Queue.model_validate({"name": "Q"}), LocalTransport(), args["spool"]).submit(
    [WorkerSpec(**args["spec"])])
"""


def test_kill_9_between_launch_and_record_adopts_the_launched_job(push_context):
    """The race of the kill test above, made every time: harvester dies by SIGKILL right after the local plugin
    launched a worker's job script, before its spool record (and so its batch id) exists. The restarted harvester
    must adopt that job, never call it missed (its pilot runs on and takes a job) nor launch it again: one worker
    whose pilot still runs, one whose pilot already ended before the restart (its exit status decides its end)."""
    from harvester import models
    from harvester.agents.submitter import Submitter, recover_interrupted
    from harvester.batch.base import WorkerSpec
    from harvester.states import utcnow

    running = None
    ctx = push_context
    try:
        queue = ctx.queues[QUEUE]
        plugin, spool = ctx.plugin(queue), ctx.spool_dir(queue)
        now = utcnow()
        rows = []
        for panda_id, argv in ((4251, ("sleep", "60")), (4252, ("true",))):
            worker = models.Worker.create(queue=QUEUE, status="submitted", submit_phase="submitting",
                                          submission_attempts=1, map_type="OneToOne", modification_time=now,
                                          status_changed=now, submit_time=now)
            models.HeldJob.create(panda_id=panda_id, queue=QUEUE, definition="{}", status="fed",
                                  worker_id=worker.worker_id, fetched_time=now)
            models.JobWorker.create(panda_id=panda_id, worker_id=worker.worker_id, time=now)
            ap = ctx.access_point(queue, worker.worker_id)
            models.Worker.update(access_point=ap).where(models.Worker.worker_id == worker.worker_id).execute()
            spec = WorkerSpec(worker_id=worker.worker_id, access_point=ap, argv=argv, environment={}, cores=1,
                              memory_mb=0, walltime_s=60)
            plugin.write_script(spec)
            killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_LAUNCH, json.dumps(
                {"spool": spool, "spec": {**vars(spec), "argv": list(argv)}})], capture_output=True, text=True,
                timeout=120)
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            rows.append(worker)
        assert spool_records_in(spool) == {}  # the kill came before any record
        ended_ap = rows[1].access_point or ctx.access_point(queue, rows[1].worker_id)
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(ended_ap, "job.exit")) and time.time() < deadline:
            time.sleep(0.05)
        # the restarted harvester
        assert recover_interrupted(ctx, utcnow()) == 2
        live, ended = (models.Worker.get_by_id(w.worker_id) for w in rows)
        records = spool_records_in(spool)
        running = records.get(live.batch_id)
        assert live.status == "submitted" and live.submit_phase == "done", (live.status, live.diag)
        assert running and running["worker_id"] == live.worker_id and start_ticks(running["pid"]) == running["start"]
        assert cmdline(running["pid"]).split() == ["/bin/sh", os.path.join(live.access_point, "job.sh")]
        assert ended.status == "submitted" and ended.submit_phase == "done", (ended.status, ended.diag)
        assert ended.batch_id == f"0-{ended.worker_id}" and records[ended.batch_id]["worker_id"] == ended.worker_id
        assert [models.HeldJob.get_by_id(p).worker_id for p in (4251, 4252)] == [w.worker_id for w in rows]
        states = ctx.plugin(queue).status([live.batch_id, ended.batch_id])
        assert states.states[live.batch_id].state == "running", states
        assert states.states[ended.batch_id].state == "finished", states
        # never launched again: later cycles add no record and no attempt
        Submitter(ctx).run_once(utcnow())
        assert recover_interrupted(ctx, utcnow()) == 0
        assert sorted(spool_records_in(spool)) == sorted([live.batch_id, ended.batch_id])
        assert [models.Worker.get_by_id(w.worker_id).submission_attempts for w in rows] == [1, 1]
    finally:
        if running and start_ticks(running["pid"]) == running["start"]:
            os.killpg(running["pid"], signal.SIGKILL)


# ---- 2. the server stops mid-run ------------------------------------------------------------------------------
def test_server_stopped_mid_run_and_restarted(testbed_factory):
    bed = testbed_factory()
    trf = bed.script("wait.sh", WAIT_FOR_FILE)
    go = os.path.join(bed.base, "go")
    ids = bed.submit(2, transformation=trf, jobParameters=go)
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) <= {"starting", "running"}, "both jobs dispatched")
    bed.server.stop()
    # down: harvester keeps running, says so, and keeps the pilots' reports (their heartbeats, then final updates)
    bed.wait_for(lambda: bed.status()["outbox"]["pending"] > 0, "reports held in harvester's outbox")
    status = bed.wait_for(lambda: (lambda s: s if any("unreachable" in a["last_error"] for a in s["agents"].values())
                                   else None)(bed.status()), "an agent error naming the unreachable server")
    assert status["outbox"]["pending"] > 0
    text = bed.cli("status").stdout
    assert "unreachable" in text and "reports waiting for the server" in text, text
    assert bed.daemon.poll() is None
    # the payloads end while the server is down, and it comes back at once after that: each pilot retries its
    # final update for ~30 s (then spools it and exits 79, failing its worker), which the checks above can take
    # on a loaded machine
    open(go, "w").close()
    bed.wait_for(lambda: pilots_reported(bed, "finished") == len(ids), "both payloads ended, the server still down")
    bed.server.restart()
    bed.wait_for(lambda: bed.all_finished(ids), "every job finished after the server came back")
    workers = bed.wait_for(bed.settled, "every worker final and reported")
    assert all(w["status"] == "finished" for w in workers), workers
    with bed.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    for panda_id in ids:
        assert sent_count(bed, panda_id) == 1


def pilots_reported(bed, job_status):
    """How many pilots of the bed told harvester (worker_attributes.json) that their job reached ``job_status``."""
    count = 0
    for path in glob.glob(os.path.join(bed.home, "workers", QUEUE, "*", "worker_attributes.json")):
        try:
            with open(path) as handle:
                count += json.load(handle).get("jobStatus") == job_status
        except (OSError, ValueError):
            continue  # being replaced: read next time
    return count


# ---- 3. a pilot killed while its payload runs -----------------------------------------------------------------
def test_pilot_sigkill_fails_worker_and_task_job_is_retried(testbed_factory, tmp_path):
    bed = testbed_factory()
    marker = str(tmp_path / "first-attempt-ran")
    command = f"test -e {marker} || {{ touch {marker}; exec sleep 300; }}"  # only the first attempt hangs
    out = subprocess.run([sys.executable, "-m", "minipanda", "task", "submit", "--exec", command, "--nJobs", "1",
                          "--nScouts", "0", "--maxAttempt", "3", "--site", QUEUE, "--prodSourceLabel", "managed",
                          "--ramCount", "500", "--coreCount", "1", "--taskName", "faults.sigkill",
                          "--url", bed.server.url, "--home", bed.server.home],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    task_id = int(out.split("jediTaskID=")[1].split()[0])
    bed.start()
    bed.wait_for(lambda: os.path.exists(marker), "the first attempt's payload to start")
    # the worker whose pilot runs the hanging payload, and that pilot (the job script's child)
    [(worker, pilot)] = [(w, pid) for w in bed.workers() if w["batchID"]
                         for pid in children(int(w["batchID"].split("-")[0])) if "pilot.pyz" in cmdline(pid)
                         and any("sleep 300" in cmdline(p) for p in descendants(pid))]
    payload = descendants(pilot)
    bed.strays += [(pid, start_ticks(pid)) for pid in payload]  # orphaned by the kill: stopped at the end
    os.kill(pilot, signal.SIGKILL)
    failed = bed.wait_for(lambda: (lambda w: w if w["status"] in FINAL else None)(bed.worker(worker["workerID"])),
                          "the killed pilot's worker to end")
    assert failed["status"] == "failed" and "signal 9" in failed["diag"], failed
    # the server failed the job (1008), made a new attempt, and another pilot finished it
    jobs = bed.wait_for(lambda: (lambda js: js if any(j["jobStatus"] == "finished" for j in js) else None)(
        task_jobs(bed, task_id)), "a retried job of the task to finish", timeout=240)
    first = min(jobs, key=lambda j: j["PandaID"])
    assert first["jobStatus"] == "failed" and int(first["pilotErrorCode"]) == 1008, first
    assert str(worker["workerID"]) in first["pilotErrorDiag"], first["pilotErrorDiag"]
    retry = [j for j in jobs if j["jobStatus"] == "finished"]
    assert len(retry) == 1 and retry[0]["attemptNr"] > first["attemptNr"]
    bed.wait_for(lambda: bed.v1("task/get_status", task_id=task_id) in ("done", "finished"), "the task done")
    workers = bed.wait_for(bed.settled, "every worker final and reported")
    assert sorted(w["status"] for w in workers).count("finished") >= 1


def task_jobs(bed, task_id):
    ids = bed.v1("task/get_job_ids", task_id=task_id)
    return bed.v1("job/get_description", job_ids=ids) if ids else []


# ---- 4. malformed pilot files ---------------------------------------------------------------------------------
def test_malformed_pilot_attributes_file(testbed_factory):
    bed = testbed_factory(mode="push", wnconnectivity="none")
    trf = bed.script("wait.sh", WAIT_FOR_FILE)
    go = [os.path.join(bed.base, f"go{i}") for i in range(2)]
    ids = [bed.submit(1, transformation=trf, jobParameters=path)[0] for path in go]
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"running"}, "both payloads running")
    ap_of = {}
    for worker in bed.workers():
        with open(os.path.join(worker["accessPoint"], "worker_pandaids.json")) as handle:
            ap_of[json.load(handle)[0]] = worker
    bad, good = ap_of[ids[0]], ap_of[ids[1]]
    path = os.path.join(bad["accessPoint"], "worker_attributes.json")

    def corrupted():  # the pilot rewrites the file at each heartbeat: write the garbage again until it is seen
        with open(path, "w") as handle:
            handle.write("{this is not json")
        return path in (bed.worker(bad["workerID"])["diag"] or "")

    bed.wait_for(corrupted, "the garbage noticed on the worker")
    assert path in bed.log() and "not valid JSON" in bed.log()
    open(go[1], "w").close()  # the other worker goes on to its end
    bed.wait_for(lambda: bed.statuses([ids[1]])[ids[1]] == "finished", "the other job finished")
    bed.wait_for(lambda: bed.worker(good["workerID"])["status"] == "finished", "the other worker finished")
    assert bed.daemon.poll() is None and bed.worker(bad["workerID"])["status"] not in FINAL
    open(go[0], "w").close()  # the pilot's final attributes replace the garbage
    bed.wait_for(lambda: bed.all_finished(ids), "the job of the worker with the bad file finished too")
    workers = bed.wait_for(bed.settled, "every worker final and reported")
    assert all(w["status"] == "finished" for w in workers), workers


# ---- 5. the batch plugin fails --------------------------------------------------------------------------------
def test_batch_plugin_failure_recorded_and_queue_backs_off(testbed_factory):
    queues = {QUEUE: queue_config(), "BAD_PQ": queue_config()}
    bed = testbed_factory(queues=queues)
    spool = os.path.join(bed.home, "workers", "BAD_PQ", ".batch")
    os.makedirs(os.path.dirname(spool))
    open(spool, "w").close()  # a file where the local plugin keeps its pid records: every launch fails
    trf = bed.script("echo.sh", ECHO)
    bad_ids = bed.submit(1, queue="BAD_PQ", transformation=trf)
    good_ids = bed.submit(2, transformation=trf)
    bed.start("backoff_base_s=60", "backoff_max_s=120")
    worker = bed.wait_for(lambda: next((w for w in bed.workers() if w["queue"] == "BAD_PQ"
                                        and "submission failed" in (w["diag"] or "")), None), "a failed submission")
    assert spool in worker["diag"] and worker["batchID"] is None, worker
    explain = bed.cli("explain", "--worker", str(worker["workerID"]))
    assert explain.returncode == 0 and "submission failed" in explain.stdout and spool in explain.stdout, \
        explain.stdout
    queue = bed.status()["queues"]["BAD_PQ"]
    assert queue["backoff_until"] and "submi" in queue["last_error"], queue
    assert "backing off until" in bed.cli("status").stdout
    decision = bed.wait_for(lambda: "backing off" in bed.cli("explain", "BAD_PQ").stdout and
                            bed.cli("explain", "BAD_PQ").stdout, "the adjuster to hold the queue back")
    assert "backing off" in decision
    # the other queue goes on
    bed.wait_for(lambda: bed.all_finished(good_ids), "the good queue's jobs finished")
    assert bed.statuses(bad_ids)[bad_ids[0]] == "activated"
    assert not spool_records(bed, "BAD_PQ") and os.path.isfile(spool)


def test_pilots_that_keep_failing_back_their_queue_off(testbed_factory):
    """A pilot that dies at once (here: a broken pilot command) is not replaced every cycle: after 3 failed workers
    in a row the queue backs off, with the reason in `harvester status`."""
    bed = testbed_factory(pilot={"command": ["/bin/sh", "-c", "exit 3"]},
                          limits={"maxWorkers": 1, "nQueueLimitWorker": 1, "maxNewWorkersPerCycle": 1})
    bed.submit(3, transformation=bed.script("echo.sh", ECHO))
    bed.start("backoff_base_s=120", "backoff_max_s=240")
    bed.wait_for(lambda: os.path.exists(os.path.join(bed.home, "harvester.db")) and "workers in a row failed" in (
        bed.status()["queues"].get(QUEUE, {}).get("last_error") or ""), "the queue to back off after failed workers")
    queue = bed.status()["queues"][QUEUE]
    assert queue["backoff_until"], queue
    failed = [w for w in bed.workers() if w["status"] == "failed"]
    assert len(failed) >= 3 and all(w["diag"] == "pilot exit code 3" for w in failed)
    made = len(bed.workers())
    bed.wait_for(lambda: bed.status()["agents"]["adjuster"]["runs"] >= 10, "ten more adjuster cycles")
    assert len(bed.workers()) == made  # backing off: no replacements
    assert "backing off" in bed.cli("explain", QUEUE).stdout


# ---- 6. a queue config error ----------------------------------------------------------------------------------
def test_queue_config_error_pauses_one_queue_until_fixed(testbed_factory):
    good = {QUEUE: queue_config(), "OTHER_PQ": queue_config()}
    broken = {QUEUE: queue_config(), "OTHER_PQ": queue_config(limits={"maxWorkers": "lots"})}
    bed = testbed_factory(queues=good, harvester_queues=broken)
    trf = bed.script("echo.sh", ECHO)
    other_ids = bed.submit(1, queue="OTHER_PQ", transformation=trf)
    ids = bed.submit(2, transformation=trf)
    bed.start()
    bed.wait_for(lambda: bed.all_finished(ids), "the valid queue's jobs finished")
    queue = bed.status()["queues"]["OTHER_PQ"]
    assert queue["paused"] and "maxWorkers" in queue["config_error"], queue
    status = bed.cli("status").stdout
    assert "PAUSED" in status and "maxWorkers" in status, status
    explain = bed.cli("explain", "OTHER_PQ").stdout
    assert "PAUSED" in explain and "maxWorkers" in explain, explain
    assert bed.statuses(other_ids)[other_ids[0]] == "activated"
    assert not [w for w in bed.workers() if w["queue"] == "OTHER_PQ"]
    bed.write_harvester_queues(good)  # fixed: reloaded on change, the queue works again
    bed.wait_for(lambda: bed.all_finished(other_ids), "the fixed queue's job finished")
    assert not bed.status()["queues"]["OTHER_PQ"]["paused"]
    assert "PAUSED" not in bed.cli("explain", "OTHER_PQ").stdout
    assert bed.daemon.poll() is None


# ---- 7. a second harvester on the same home -------------------------------------------------------------------
def test_second_harvester_on_same_home_refused_unless_first_dead(testbed_factory):
    bed = testbed_factory()
    first = bed.start()
    bed.wait_for(lambda: "started on" in bed.log(), "the first harvester to start")
    for extra in ([], ["--once"]):
        proc = subprocess.run(bed.argv(*extra), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"another harvester (pid {first.pid}" in proc.stderr and "uses this home" in proc.stderr, proc.stderr
    assert first.poll() is None
    bed.stop(signal.SIGKILL)
    proc = bed.once(check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f":{first.pid}" in proc.stderr and "took over from" in proc.stderr, proc.stderr[-3000:]


# ---- 8. the server unreachable from the start -----------------------------------------------------------------
def test_server_unreachable_from_the_start(testbed_factory):
    bed = testbed_factory()
    trf = bed.script("echo.sh", ECHO)
    ids = bed.submit(2, transformation=trf)
    dead = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(bed.argv("--once", server=dead), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert "unreachable" in proc.stderr and dead in proc.stderr, proc.stderr[-3000:]
    # nothing was given up: no worker made (demand unknown), none missed, the jobs still wait on the server
    assert bed.workers() == []
    assert set(bed.statuses(ids).values()) == {"activated"}
    assert any("unreachable" in a["last_error"] for a in bed.status()["agents"].values())
    bed.start()
    bed.wait_for(lambda: bed.all_finished(ids), "the jobs finished once the server was reachable")
    workers = bed.wait_for(bed.settled, "every worker final and reported")
    assert all(w["status"] == "finished" for w in workers), workers
