"""A real testbed for harvester tests (no tests here): a `minipanda serve` with a queue file, a harvester token,
`harvester run` as a subprocess (once, or as a daemon with short periods), and cleanup of every pilot it started.

Nothing here asserts on timing: waits have generous limits only as a safety net.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import requests
import yaml

from conftest import LiveServer

QUEUE = "TEST_PQ"
FAST = ["monitor_period=0.5", "propagator_period=0.5", "adjuster_period=0.5", "submitter_period=0.5",
        "fetcher_period=0.5", "sweeper_period=1", "commands_period=1", "backoff_base_s=1", "backoff_max_s=2"]


def queue_config(**over):
    """One local queue with limits fit for a test; overrides are merged one level deep."""
    queue = {"mode": "pull", "prodSourceLabels": ["managed"], "resources": {"corecount": 1, "maxrss": 2000},
             "limits": {"maxWorkers": 4, "nQueueLimitWorker": 4, "maxNewWorkersPerCycle": 4},
             "pilot": {"lifetime": 600, "heartbeat": 5, "getjob_tries": 1, "getjob_interval": 1},
             "sweeper": {"keep_finished": 86400, "keep_failed": 86400}}
    for key, value in over.items():
        queue[key] = {**queue.get(key, {}), **value} if isinstance(value, dict) else value
    return queue


class QueueServer(LiveServer):
    def __init__(self, home, db_url, queues_path):
        self.queues_path = queues_path
        super().__init__(home, db_url)

    def argv(self):
        return super().argv() + ["--queues", self.queues_path]


class Testbed:
    """Server + harvester home + queue file under ``base``."""

    __test__ = False

    def __init__(self, base, queues):
        self.base = str(base)
        os.makedirs(self.base, exist_ok=True)
        self.queues_path = os.path.join(self.base, "queues.yaml")
        self.write_queues(queues)
        self.server = self.make_server(os.path.join(self.base, "server"),
                                       "sqlite:///" + os.path.join(self.base, "server", "minipanda.db"))
        self.home = os.path.join(self.base, "harvester")
        os.makedirs(self.home, exist_ok=True)
        self.token_file = os.path.join(self.base, "harvester.token")
        with open(self.token_file, "w") as handle:
            handle.write(self.server.token("harvester", "h1"))
        os.makedirs(os.path.join(self.server.home, "trf"), exist_ok=True)
        self.daemon = None
        self.daemon_log = os.path.join(self.base, "harvester.log")

    def make_server(self, home, db_url):
        """The server this testbed runs; subclasses start it with other options."""
        return QueueServer(home, db_url, self.queues_path)

    def write_queues(self, queues):
        with open(self.queues_path, "w") as handle:
            yaml.safe_dump({"queues": queues}, handle)

    # ---- server side ----------------------------------------------------------------------------------------
    def script(self, name, text):
        path = os.path.join(self.server.home, "trf", name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o755)
        return f"{self.server.url}/trf/user/{name}"

    def v1(self, path, **params):
        reply = requests.post(f"{self.server.url}/api/v1/{path}", json=params, headers=self.server.headers(),
                              timeout=30)
        reply.raise_for_status()
        body = reply.json()
        assert body["success"], body
        return body["data"]

    def submit(self, n=1, queue=QUEUE, **overrides):
        from conftest import make_job

        specs = []
        for _ in range(n):  # each job its own log file name, as real jobs have
            spec = make_job(queue, **overrides)
            if "Files" not in overrides:
                spec["Files"] = [{"type": "log", "lfn": f"log.{uuid.uuid4().hex[:12]}.tgz", "scope": "test"}]
            specs.append(spec)
        return [row[0] for row in self.v1("job/submit", jobs=specs)]

    def statuses(self, panda_ids):
        return {row["PandaID"] if "PandaID" in row else pid: row["status"]
                for pid, row in zip(panda_ids, self.v1("job/get_status", job_ids=list(panda_ids)))}

    def job(self, panda_id):
        return self.v1("job/get_description", job_ids=[panda_id])[0]

    # ---- harvester ------------------------------------------------------------------------------------------
    def argv(self, *extra):
        return [sys.executable, "-m", "harvester", "run", "--home", self.home, "--queues", self.queues_path,
                "--server", self.server.url, "--token-file", self.token_file, *extra]

    def once(self, check=True):
        proc = subprocess.run(self.argv("--once"), capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def start(self, *settings):
        args = [arg for s in (*FAST, *settings) for arg in ("--setting", s)]
        self.daemon = subprocess.Popen(self.argv(*args), stdout=subprocess.DEVNULL,
                                       stderr=open(self.daemon_log, "ab"))
        return self.daemon

    def stop(self, sig=signal.SIGTERM):
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(sig)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None

    def cli(self, *args):
        proc = subprocess.run([sys.executable, "-m", "harvester", *args, "--home", self.home], capture_output=True,
                              text=True, timeout=60)
        return proc

    def workers(self):
        proc = self.cli("workers", "--json", "--limit", "100000")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def db(self):
        conn = sqlite3.connect(os.path.join(self.home, "harvester.db"), timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def log(self):
        try:
            with open(self.daemon_log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def wait_for(self, condition, what, timeout=180, poll=0.5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = condition()
            if value:
                return value
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError(f"harvester exited ({self.daemon.returncode}) while waiting for {what}:\n"
                                     + self.log()[-5000:])
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what}\nharvester log:\n{self.log()[-5000:]}\n"
                             f"workers: {self.workers() if os.path.exists(self.home + '/harvester.db') else '-'}")

    def kill_pilots(self):
        """Stop every pilot (process group) this harvester started; only those, by the pid in its spool."""
        spool_root = os.path.join(self.home, "workers")
        for root, _, files in os.walk(spool_root):
            for name in files:
                if root.endswith(".batch") and name.endswith(".json"):
                    try:
                        with open(os.path.join(root, name)) as handle:
                            pid = json.load(handle)["pid"]
                        os.killpg(pid, signal.SIGKILL)
                    except (OSError, ValueError, KeyError):
                        pass

    def close(self):
        self.stop()
        self.kill_pilots()
        self.server.stop()
