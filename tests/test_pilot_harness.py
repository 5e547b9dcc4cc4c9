"""Shared helpers for the pilot tests (no tests here): the zipapp, a pilot's view of a live server, orphans.

Every end-to-end test runs the pilot as ``python3 pilot.pyz ...`` (the zipapp harvester ships), against the
``sqlite_server`` fixture (a real ``minipanda serve``), with queuedata from a file so limits can be tiny.
Nothing here asserts on timing: the subprocess timeouts are only a safety net against a hung pilot.
"""
import json
import shutil
import os
import subprocess
import sys
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = "TEST_PQ"
TRF_URL = "http://pandaserver-doma.cern.ch:25080/trf/user/"
# Small limits so every scenario ends within seconds; each test overrides what it exercises.
FAST_QUEUEDATA = {
    "pilot_monitor_interval": 0.2, "pilot_heartbeat_interval": 600, "pilot_min_disk_getjob_mb": 1,
    "pilot_min_disk_running_mb": 1, "pilot_getjob_tries": 1, "pilot_getjob_interval": 0.1,
    "pilot_update_tries": 2, "pilot_update_backoff": 0.1, "pilot_kill_grace": 2, "pilot_stageout_reserve": 5,
    "pilot_http_timeout": 10, "pilot_handoff_poll": 0.05, "pilot_handoff_wait": 2,
}


@pytest.fixture(scope="session")
def zipapp_path(tmp_path_factory):
    """The pilot built once per test session with ``pilot build-zipapp``."""
    out = str(tmp_path_factory.mktemp("zipapp") / "pilot.pyz")
    subprocess.run([sys.executable, "-m", "pilot", "build-zipapp", out], cwd=ROOT, check=True,
                   capture_output=True)
    return out


class PilotSite:
    """A worker node's view of one live server: token, trf scripts, job submission, pilot runs."""

    def __init__(self, server, zipapp, base):
        self.server, self.zipapp, self.base = server, zipapp, str(base)
        self.procs = []
        self.workdir = os.path.join(self.base, "work")
        self.token_file = os.path.join(self.base, "pilot.token")
        with open(self.token_file, "w") as handle:
            handle.write(server.token("pilot", "pilot1"))
        os.makedirs(os.path.join(server.home, "trf"), exist_ok=True)

    def script(self, name, text):
        """A payload script served by the server at /trf/user/<name>; returns its transformation URL."""
        path = os.path.join(self.server.home, "trf", name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o755)
        return TRF_URL + name

    def submit(self, **overrides):
        """Submit one job (conftest.make_job plus overrides); return its PandaID."""
        from conftest import make_job

        spec = make_job(QUEUE, **overrides)
        reply = requests.post(self.server.url + "/api/v1/job/submit", json={"jobs": [spec]},
                              headers=self.server.headers(), timeout=30)
        reply.raise_for_status()
        return reply.json()["data"][0][0]

    def v1(self, path, **params):
        reply = requests.post(self.server.url + "/api/v1/" + path, json=params, headers=self.server.headers(),
                              timeout=30)
        reply.raise_for_status()
        return reply.json()["data"]

    def status(self, panda_id):
        return self.v1("job/get_status", job_ids=[panda_id])[0]["status"]

    def job(self, panda_id):
        return self.v1("job/get_description", job_ids=[panda_id])[0]

    def history(self, panda_id):
        return self.v1("job/get_status_log", job_id=panda_id)

    def queuedata(self, **overrides):
        path = os.path.join(self.base, "queuedata.json")
        with open(path, "w") as handle:
            json.dump(dict(FAST_QUEUEDATA, **overrides), handle)
        return path

    def argv(self, *extra, qd=None, lifetime=3600, url=None):
        return [sys.executable, self.zipapp, "-q", QUEUE, "--url", url or self.server.url, "--token-file",
                self.token_file, "--queuedata", qd or self.queuedata(), "-a", self.workdir, "-l", str(lifetime),
                *extra]

    def start(self, *extra, **kwargs):
        """Start a pilot subprocess (stderr to a file in the site directory)."""
        self.stderr_path = os.path.join(self.base, f"pilot-{time.time_ns()}.err")
        proc = subprocess.Popen(self.argv(*extra, **kwargs), stdout=subprocess.DEVNULL,
                                stderr=open(self.stderr_path, "wb"), cwd=self.base)
        self.procs.append(proc)
        return proc

    def stop_pilots(self):
        """After a failed test: SIGTERM makes a pilot kill its payload; SIGKILL only if it does not end."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def run(self, *extra, timeout=120, **kwargs):
        """Run a pilot to its end; return (exit code, its log text)."""
        proc = self.start(*extra, **kwargs)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("pilot did not end: " + self.log())
        return code, self.log()

    def log(self):
        with open(self.stderr_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def wait_for(self, predicate, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen; pilot log:\n{self.log()}")

    def outputs(self):
        return os.path.join(self.workdir, "outputs")


@pytest.fixture
def site(sqlite_server, zipapp_path, tmp_path):
    site = PilotSite(sqlite_server, zipapp_path, tmp_path)
    yield site
    site.stop_pilots()


def processes_with(marker):
    """Pids of live (non-zombie) processes whose program name (argv[0]) contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline.split(b"\0")[0] and state != b"Z":
            found.append(int(entry))
    return found


def marked_sleep(directory, marker):
    """A path that runs /bin/sleep under a name containing ``marker`` (to find its processes by cmdline)."""
    path = os.path.join(str(directory), f"sleep-{marker}")
    os.symlink(shutil.which("sleep"), path)
    return path
