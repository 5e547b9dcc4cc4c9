"""``minipanda testbed`` end to end, as a user runs it: a subprocess, real pilots, the real file store.

Every run gets an environment marker that each process below it inherits (harvester's local batch, the pilots'
job scripts, the pilots, their payloads); after the testbed exits, no process on the machine may carry it, and no
pilot's process group (from harvester's spool records) may still exist. Nothing here asserts on timing: waits
have generous limits only as a safety net.
"""
import datetime
import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from testbed.processes import children, descendants

MARKER = "MINIPANDA_TESTBED_TEST_RUN"


class Run:
    """One ``minipanda testbed`` subprocess with its own home."""

    def __init__(self, tmp_path, *args):
        tmp_path.mkdir(parents=True)
        self.home = str(tmp_path / "home")
        self.marker = uuid.uuid4().hex
        self.out_path = str(tmp_path / "testbed.out")
        env = dict(os.environ, **{MARKER: self.marker})
        env.pop("MINIPANDA_HOME", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "minipanda", "testbed", "--home", self.home,
                                      "--port", "0", *args], stdout=open(self.out_path, "wb"),
                                     stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout=300):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)
            raise AssertionError(f"testbed did not end within {timeout} s:\n{self.output()[-4000:]}") from None

    def output(self):
        with open(self.out_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def log(self):
        try:
            with open(os.path.join(self.home, "testbed.log"), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def summary(self):
        with open(os.path.join(self.home, "summary.json")) as handle:
            return json.load(handle)

    def db(self):
        conn = sqlite3.connect(os.path.join(self.home, "server", "minipanda.db"), timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def spool(self):
        """The local batch plugin's records of the pilots harvester started: [(pid, start ticks)]."""
        found = []
        for path in glob.glob(os.path.join(self.home, "harvester", "workers", "*", ".batch", "*.json")):
            try:
                with open(path) as handle:
                    record = json.load(handle)
                found.append((record["pid"], record["start"]))
            except (OSError, ValueError, KeyError):
                pass
        return found

    def marked_processes(self):
        """Live processes (not zombies) that inherited this run's marker: everything the testbed started."""
        found = []
        needle = f"{MARKER}={self.marker}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if needle not in handle.read().split(b"\0"):
                        continue
                if stat(int(entry))[0] not in ("Z", "X"):
                    found.append((int(entry), cmdline(int(entry))))
            except (OSError, TypeError, IndexError):
                pass
        return found

    def assert_nothing_left(self):
        assert self.proc.poll() is not None
        deadline = time.time() + 10  # a process may take a moment to be gone from /proc after SIGKILL
        while self.marked_processes() and time.time() < deadline:
            time.sleep(0.2)
        assert self.marked_processes() == [], self.marked_processes()
        for pid, _ in self.spool():  # each pilot led its own process group: none may be left
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)

    def kill_all(self):
        """Safety net after a failed test: SIGKILL whatever carries the marker."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid, _ in self.marked_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(condition, what, run, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if run.proc.poll() is not None:
            raise AssertionError(f"testbed exited ({run.proc.returncode}) while waiting for {what}:\n"
                                 f"{run.output()[-3000:]}\n{run.log()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{run.output()[-3000:]}")


@pytest.fixture
def testbed(tmp_path):
    runs = []

    def start(*args):
        run = Run(tmp_path / f"run{len(runs)}", *args)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill_all()


def expected_output(content):
    return content.upper()


def check_outputs(run, n_jobs):
    """Every input's output is in the file store, the input upper-cased; the server registered it."""
    summary = run.summary()
    inputs = sorted(glob.glob(os.path.join(run.home, "data", "in.*.txt")))
    assert len(inputs) == n_jobs
    outputs = sorted(glob.glob(os.path.join(summary["outputs_dir"], "*.out.txt")))
    assert len(outputs) == n_jobs, (len(outputs), run.output()[-2000:])
    wanted = sorted(expected_output(open(path).read()) for path in inputs)
    assert sorted(open(path).read() for path in outputs) == wanted
    with run.db() as conn:
        registered = conn.execute("SELECT f.lfn, f.status FROM job_file f JOIN job j ON j.panda_id = f.panda_id "
                                  "WHERE f.type = 'output' AND j.status = 'finished'").fetchall()
    assert sorted(row["lfn"] for row in registered) == sorted(os.path.basename(p) for p in outputs)


NO_PSUTIL = """
import sys
from testbed import bed, config, processes
import minipanda.server.process, harvester.runner, harvester.client  # the rest of the testbed's process
started = processes.process_start_time()
config.queue_config(2, 6, 600)
assert "psutil" not in sys.modules, "psutil was imported"
import psutil
assert abs(started - psutil.Process().create_time()) < 0.02, (started, psutil.Process().create_time())
assert config.machine_memory_mb() == psutil.virtual_memory().total // (1024 * 1024)
print("ok")
"""


def test_the_testbed_process_reads_its_start_and_the_memory_without_psutil():
    """psutil cost every testbed start ~12 ms of CPU to import for two numbers; they are read as psutil reads them.
    A fresh interpreter (this one may have psutil loaded)."""
    out = subprocess.run([sys.executable, "-c", NO_PSUTIL], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "minipanda", "testbed", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--jobs", "--cores", "--home", "--port", "--keep-running", "--fail-some", "--pilots",
                   "--job-seconds", "--auth", "--lost-heartbeat", "--setting", "--harvester-setting"):
        assert option in out.stdout
    assert "Ctrl-C" in out.stdout and "Exit code 0 only when every job finished" in out.stdout


def test_200_jobs_finish_with_correct_outputs_and_nothing_left(testbed):
    run = testbed("--jobs", "200")
    assert run.wait() == 0, run.output()[-3000:] + run.log()[-3000:]
    summary = run.summary()
    assert summary["complete"] and summary["task_status"] == "done"
    assert summary["jobs_by_state"]["finished"] == 200
    check_outputs(run, 200)
    out = run.output()
    assert "200 of 200 jobs finished" in out and "makespan" in out and "jobs/s" in out
    assert f"monitor: {summary['url']}/monitor/" in out and summary["outputs_dir"] in out and run.home in out
    assert "jobs finished;" in out  # the progress, as plain lines: the output is not a terminal
    assert run.spool()  # pilots did run, as local batch workers
    # no warm-up: one makespan, from the demo task's submission, when no pilot was up
    assert summary["warm_up"] is False and summary["makespan_warm_s"] is None and summary["makespan_s"] > 0
    run.assert_nothing_left()


def test_warm_up_pilots_up_before_the_demo_task_and_both_makespans(testbed):
    """--warm-up: a task of one no-op job per pilot goes first; the demo task is submitted once every pilot is up
    and those jobs are done; its jobs are all counted, once; the warm makespan starts at the demo's submission (not
    at the warm-up's), the cold one at the warm-up's; the pilots that waited for work leave when the wait ends."""
    run = testbed("--jobs", "30", "--files", "none", "--job-seconds", "0", "--pilots", "3", "--warm-up")
    assert run.wait() == 0, run.output()[-3000:] + run.log()[-3000:]
    summary = run.summary()
    assert summary["complete"] and summary["warm_up"] and summary["pilots_up_at_submission"] == 3
    assert summary["attempts"] == 30 and summary["jobs_by_state"] == {"finished": 30} and summary["logs"] == 30
    with run.db() as conn:
        tasks = {row["task_name"]: row for row in conn.execute("SELECT jedi_task_id, task_name, creation_time "
                                                                "FROM task")}
        warm, demo = tasks["testbed.warm-up"], tasks["testbed.demo"]
        assert summary["warm_up_task_id"] == warm["jedi_task_id"] and summary["task_id"] == demo["jedi_task_id"]
        jobs = conn.execute("SELECT task_id, status, end_time FROM job").fetchall()
    warm_jobs = [j for j in jobs if j["task_id"] == warm["jedi_task_id"]]
    demo_jobs = [j for j in jobs if j["task_id"] == demo["jedi_task_id"]]
    assert [j["status"] for j in warm_jobs] == ["finished"] * 3 and len(demo_jobs) == 30

    def epoch(text):
        return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()

    last_end = max(epoch(j["end_time"]) for j in demo_jobs)
    warm_started = last_end - summary["makespan_warm_s"]  # when the warm makespan's clock started
    cold_started = last_end - summary["makespan_s"]
    # the warm clock starts after the warm-up's jobs ended and no later than the demo task's submission...
    assert max(epoch(j["end_time"]) for j in warm_jobs) <= warm_started <= epoch(demo["creation_time"])
    # ...the cold one no later than the warm-up's submission, which it includes
    assert cold_started <= epoch(warm["creation_time"])
    assert abs(summary["makespan_s"] - summary["makespan_warm_s"] - summary["warm_up_s"]) < 1e-6
    assert "warm (demo task submitted, 3 pilots up" in run.output() and "cold (warm-up task submitted" in run.output()
    # the pilots asked for work until the wait ended, found none and left on their own, none was stopped: exit 0,
    # or 82 (pilot3's "no job") for a pilot whose getJobs all came too late (the others took every job)
    with open(os.path.join(run.home, "queues.yaml")) as handle:
        tries = yaml.safe_load(handle)["queues"]["TESTBED"]["pilot"]["getjob_tries"]
    logs = glob.glob(os.path.join(run.home, "harvester", "workers", "*", "*", "PanDA_Pilot-*", "pilotlog.txt"))
    assert len(logs) == summary["pilots_started"] == 3
    for path in logs:
        with open(path) as handle:
            assert f"no job for this pilot (getJob {tries} of {tries})" in handle.read(), path
    exits = glob.glob(os.path.join(run.home, "harvester", "workers", "*", "*", "job.exit"))
    assert len(exits) == 3 and all(open(path).read().strip() in ("0", "82") for path in exits)
    run.assert_nothing_left()


def test_files_1mb_jobs_read_and_write_a_megabyte_each(testbed):
    """--files 1mb: every input in the file store (and data/) is 1 MiB, and so is every output (the demo's figures
    for a files job are about that size)."""
    run = testbed("--jobs", "4", "--files", "1mb", "--job-seconds", "0", "--pilots", "2")
    assert run.wait() == 0, run.output()[-3000:] + run.log()[-3000:]
    inputs = glob.glob(os.path.join(run.home, "data", "in.*.txt"))
    stored = glob.glob(os.path.join(run.home, "server", "files", "testbed.demo.in", "in.*.txt"))
    outputs = glob.glob(os.path.join(run.summary()["outputs_dir"], "*.out.txt"))
    assert len(inputs) == len(stored) == len(outputs) == 4
    assert {os.path.getsize(path) for path in inputs + stored + outputs} == {1 << 20}
    with run.db() as conn:
        assert {row[0] for row in conn.execute("SELECT fsize FROM file WHERE lfn LIKE 'in.%'")} == {1 << 20}
    check_outputs(run, 4)
    run.assert_nothing_left()


def test_fail_some_payloads_fail_once_and_their_retries_finish(testbed):
    run = testbed("--jobs", "20", "--fail-some")
    assert run.wait() == 0, run.output()[-3000:] + run.log()[-3000:]
    summary = run.summary()
    assert summary["complete"]
    assert summary["jobs_by_state"]["finished"] == 20 and summary["retries"] >= 2
    with run.db() as conn:
        failed = conn.execute("SELECT panda_id, exe_error_code, attempt_nr FROM job WHERE status = 'failed'").fetchall()
        assert sum(row["exe_error_code"] == 3 for row in failed) == 2, [dict(r) for r in failed]  # inputs 0 and 10
        for row in failed:
            [retry] = conn.execute("SELECT status, attempt_nr FROM job WHERE json_extract(attributes, '$.parentID') "
                                   "= ?", (row["panda_id"],)).fetchall()
            assert retry["status"] == "finished" and retry["attempt_nr"] > row["attempt_nr"]
    check_outputs(run, 20)
    run.assert_nothing_left()


def test_pilot_killed_with_sigkill_is_found_by_lost_heartbeat_and_its_job_retried(testbed):
    # harvester's monitor is slowed right down, so only the server's watchdog (no heartbeat for 8 s; pilots beat
    # every 2 s) can notice the killed pilot; the other pilot is still busy with its jobs and takes the retry. The
    # pilot is killed as soon as its payload runs: its job (a small input, so no starting) is most often still sent
    run = testbed("--jobs", "6", "--job-seconds", "4", "--pilots", "2", "--lost-heartbeat", "8",
                  "--setting", "period.watchdog=0.5", "--harvester-setting", "monitor_period=3600")

    def a_pilot_running_a_payload():
        for pid, _ in run.spool():
            for child in children(pid):
                if "pilot.pyz" in cmdline(child) and any("sleep 4" in cmdline(p) for p in descendants(child)):
                    return child
        return None

    pilot = wait_for(a_pilot_running_a_payload, "a pilot running its payload", run)
    os.kill(pilot, signal.SIGKILL)
    assert run.wait() == 0, run.output()[-3000:] + run.log()[-3000:]
    with run.db() as conn:
        lost = conn.execute("SELECT panda_id, sup_error_code, sup_error_diag, pilot_error_code, attempt_nr FROM job "
                            "WHERE status = 'failed'").fetchall()
        assert lost and all(row["sup_error_code"] == 100 for row in lost), [dict(r) for r in lost]
        assert all(row["pilot_error_code"] != 1008 for row in lost)  # not harvester: its monitor never looked
        for row in lost:
            # a job the pilot had not reported yet (no starting before a quick stage-in, no running before 2 s)
            # is lost with its pilot's silence; one it had reported running, with its own heartbeat's
            reported = conn.execute("SELECT COUNT(*) FROM status_log WHERE panda_id = ? AND new_status IN "
                                    "('starting', 'running')", (row["panda_id"],)).fetchone()[0]
            assert row["sup_error_diag"].startswith("lost heartbeat: no update" if reported else
                                                    "lost heartbeat: sent to a pilot"), dict(row)
            [retry] = conn.execute("SELECT status, attempt_nr FROM job WHERE json_extract(attributes, '$.parentID') "
                                   "= ?", (row["panda_id"],)).fetchall()
            assert retry["status"] == "finished" and retry["attempt_nr"] > row["attempt_nr"]
    assert run.summary()["complete"]
    check_outputs(run, 6)
    run.assert_nothing_left()


def test_ctrl_c_stops_everything(testbed):
    """Ctrl-C, then more stop signals during the clean-up and up to the exit: they are noted (the handler only
    records) or ignored once the clean-up is over, never raised, and everything stops with 130."""
    run = testbed("--jobs", "200", "--job-seconds", "5")

    def payloads_running():
        return [p for pid, _ in run.spool() for p in descendants(pid) if "sleep 5" in cmdline(p)]

    wait_for(payloads_running, "payloads running", run)
    assert run.marked_processes()
    run.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping (Ctrl-C/SIGTERM)" in run.output(), "the stop", run)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):  # impatient: the clean-up still goes on
        run.proc.send_signal(signum)
    deadline = time.monotonic() + 120
    while run.proc.poll() is None and time.monotonic() < deadline:  # and on, up to the exit itself
        run.proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    assert run.wait(120) == 130, run.output()[-3000:]
    assert "stopped; nothing left running" in run.output()
    run.assert_nothing_left()
    with open(os.path.join(run.home, "testbed.log")) as log:  # noted by the main thread, not by the handler
        assert "while stopping: the clean-up went on" in log.read()


def test_keep_running_leaves_the_services_up_until_sigterm(testbed):
    import requests

    run = testbed("--jobs", "5", "--keep-running")
    summary = wait_for(lambda: os.path.exists(os.path.join(run.home, "summary.json")) and run.summary(),
                       "the demo task to end", run)
    assert summary["complete"]
    wait_for(lambda: "keeping the services up" in run.output(), "the keep-running notice", run)
    reply = requests.post(f"{summary['url']}/api/v1/job/get_status", json={"job_ids": [1]}, timeout=30)
    assert reply.status_code == 200 and reply.json()["data"][0]["status"] == "finished"
    assert run.proc.poll() is None
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(120) == 0, run.output()[-3000:]  # every job finished: stopping is the normal end
    assert "stopped; nothing left running" in run.output()
    run.assert_nothing_left()


def test_a_home_that_is_not_empty_is_one_line_of_error_and_exit_2(tmp_path):
    """A usage mistake (--home names a directory with files in it) is said in one line, without a traceback, and
    nothing is made in it."""
    (tmp_path / "mine.txt").write_text("a user's file")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "minipanda", "testbed", "--home", str(tmp_path)], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"minipanda testbed: error: --home {tmp_path}: not empty; the testbed starts from a fresh home (give a new "
        "directory, or leave --home out for a new temporary one)"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]
