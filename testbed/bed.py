"""One testbed run: a fresh home, the server and harvester on threads, the demo task, the stop."""
import contextlib
import io
import json
import logging
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid

from testbed.processes import (adler32, become_subreaper, children, count_files, descendants, free_port,
                               proc_stat, process_start_time, reap, utc_epoch)
from testbed.progress import Progress


log = logging.getLogger("minipanda.testbed")

QUEUE = "TESTBED"
DATASET = "testbed.demo.in"
TASK_NAME = "testbed.demo"
OUTPUT = "out.txt"
OUT_SCOPE = "testbed.demo.out"  # file store directory of the outputs and logs
PREFERRED_PORT = 25080
PILOTS_PER_CORE = 3  # the demo payload sleeps; see --pilots


class Interrupted(Exception):
    """Ctrl-C or SIGTERM."""



class Testbed:
    def __init__(self, args):
        self.args = args
        self.started = process_start_time()
        self.cores = args.cores or os.cpu_count() or 1
        self.pilots = args.pilots or PILOTS_PER_CORE * self.cores
        self.home = None
        self.server_thread = self.http_server = None
        self.server_error = []
        self.runner = self.harvester_context = self.harvester_client = None
        self.harvester_thread = None
        self.url = None
        self.task_id = None
        self.submitted_at = None
        self.out = sys.stdout
        self.interrupted = False
        self.subreaper = False
        self._pilot_records = {}

    # -- run --------------------------------------------------------------------------------------------------
    def run(self):
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        code, summary = 1, None
        try:
            self.subreaper = become_subreaper()
            self._make_home()
            self._logging()
            self.say(f"minipanda testbed: home {self.home} (log: {os.path.join(self.home, 'testbed.log')})")
            self._write_queues()
            self._start_server()
            self._start_harvester()
            self.say(f"server {self.url} (auth {self.args.auth}), harvester with up to {self.pilots} pilots on "
                     f"{self.cores} cores, queue {QUEUE}")
            self._submit_demo()
            state = self._follow()
            self._let_pilots_end()
            summary = self._summary(state)
            self._print_summary(summary)
            code = 0 if summary["complete"] else 1
            if self.args.keep_running:
                self.say(f"\nkeeping the services up (--keep-running): monitor {self.monitor_url()}, "
                         f"MINIPANDA_URL={self.url}; Ctrl-C or SIGTERM stops everything")
                while True:
                    time.sleep(1)
                    self._reap_orphans()
        except Interrupted:
            self.say("\nstopping (Ctrl-C/SIGTERM): harvester, pilots, server ...")
            # after --keep-running the stop is the normal end: the code still says whether every job finished
            code = 130 if summary is None else (0 if summary["complete"] else 1)
        except Exception as exc:  # noqa: BLE001 - say what failed, stop everything, exit 1
            log.exception("testbed failed")
            print(f"minipanda testbed: error: {exc}", file=sys.stderr)
            code = 1
        finally:
            # a second Ctrl-C must not cut the clean-up short: it is noted, not raised
            signal.signal(signal.SIGINT, lambda *_: log.warning("stopping already"))
            signal.signal(signal.SIGTERM, lambda *_: log.warning("stopping already"))
            try:
                self.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        if self.home:
            left = self.leftovers()
            self.say("stopped; nothing left running" if not left else
                     f"stopped, but these processes are still running: {', '.join(map(str, left))}")
        return code

    def _on_signal(self, signum, frame):
        self.interrupted = True
        raise Interrupted(signal.Signals(signum).name)

    def say(self, text):
        print(text, file=self.out, flush=True)

    def monitor_url(self):
        return f"{self.url}/monitor/"

    # -- home and configuration -----------------------------------------------------------------------------------
    def _make_home(self):
        if self.args.home:
            home = os.path.abspath(os.path.expanduser(self.args.home))
            if os.path.isdir(home) and os.listdir(home):
                raise ValueError(f"--home {home}: not empty; the testbed starts from a fresh home (give a new "
                                 "directory, or leave --home out for a new temporary one)")
            os.makedirs(home, exist_ok=True)
        else:
            home = tempfile.mkdtemp(prefix="minipanda-testbed-")
        self.home = home
        self.server_home = os.path.join(home, "server")
        self.harvester_home = os.path.join(home, "harvester")
        self.queues_path = os.path.join(home, "queues.yaml")
        self.data_dir = os.path.join(home, "data")
        self.fail_dir = os.path.join(home, "fail-once")
        for path in (self.server_home, self.harvester_home, self.data_dir):
            os.makedirs(path, exist_ok=True)

    def _logging(self):
        root = logging.getLogger()
        for handler in list(root.handlers):  # the minipanda command's console handler: the progress bar owns it
            root.removeHandler(handler)
        handler = logging.FileHandler(os.path.join(self.home, "testbed.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if self.args.debug else logging.INFO)
        logging.getLogger("minipanda.access").setLevel(logging.DEBUG if self.args.debug else logging.WARNING)

    def queue_config(self):
        """The one queue, sized for this machine: ``pilots`` single-core pilots, memory shared among them."""
        import psutil

        memory_mb = psutil.virtual_memory().total // (1024 * 1024)
        per_pilot = max(500, min(4000, int(memory_mb * 0.8 / self.pilots)))
        heartbeat = max(1, self.args.lost_heartbeat // 4)
        return {
            "description": f"minipanda testbed on {socket.gethostname()}: {self.cores} cores, {memory_mb} MB",
            "mode": "pull",
            "prodSourceLabels": ["managed"],
            "resources": {"corecount": 1, "maxrss": per_pilot, "maxtime": 3600},
            "limits": {"maxWorkers": self.pilots, "nQueueLimitWorker": self.pilots,
                       "maxNewWorkersPerCycle": self.pilots},
            "pilot": {"lifetime": 7200, "timefloor": 60, "getjob_tries": 3, "getjob_interval": 1,
                      "heartbeat": heartbeat, "lost_heartbeat": self.args.lost_heartbeat, "copytool": "http"},
            "storage": {"input": {"type": "server", "url": "/files/{dataset}/{lfn}"},
                        # one directory for outputs and logs: our pilot knows no dataset for a job's log file
                        "output": {"type": "server", "url": f"/files/{OUT_SCOPE}/{{lfn}}"}},
            "sweeper": {"keep_finished": 86400, "keep_failed": 86400},
        }

    def _write_queues(self):
        import yaml

        with open(self.queues_path, "w") as handle:
            handle.write("# written by 'minipanda testbed' for this machine\n")
            yaml.safe_dump({"queues": {QUEUE: self.queue_config()}}, handle, sort_keys=False)

    # -- server ---------------------------------------------------------------------------------------------------
    def server_settings(self):
        from minipanda.tasks import settings as task_settings

        values = {"period.generator": 1, "period.settle": 0.5, "period.watchdog": 2,
                  # one queue takes every job at once: the brokerage's bootstrap cap would hold most of them back
                  "brokerage.bootstrap_queued": max(100, 2 * self.args.jobs)}
        values.update(task_settings.parse_overrides(self.args.setting))
        return task_settings.Settings(values)

    def _start_server(self):
        from minipanda.server import process

        port = self.args.port if self.args.port is not None else free_port(PREFERRED_PORT)
        ready = threading.Event()
        settings = self.server_settings()

        def on_ready(server):
            self.http_server = server
            ready.set()

        def serve():
            try:
                process.serve(self.server_home, host="127.0.0.1", port=port, auth_mode=self.args.auth,
                              queues_file=self.queues_path, reload_period=10.0, ready=on_ready, settings=settings)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.server_error.append(exc)
                log.exception("the server stopped with an error")
            finally:
                ready.set()

        self.server_thread = threading.Thread(target=serve, name="server", daemon=True)
        self.server_thread.start()
        ready.wait()
        if self.server_error:
            raise self.server_error[0]
        self.url = f"http://127.0.0.1:{self.http_server.effective_port}"
        from minipanda.core import auth, db

        db.database.connect(reuse_if_open=True)
        secret = auth.load_secret(self.server_home)
        self.admin_token, _ = auth.create_token(secret, "testbed", "admin", days=30)
        token, _ = auth.create_token(secret, "testbed-harvester", "harvester", days=30)
        self.harvester_token_file = os.path.join(self.home, "harvester.token")
        fd = os.open(self.harvester_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token)
        import requests

        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.admin_token}"

    def v1(self, path, **params):
        reply = self.http.post(f"{self.url}/api/v1/{path}", json=params, timeout=60)
        body = reply.json() if reply.headers.get("Content-Type", "").startswith("application/json") else {}
        if reply.status_code != 200 or not body.get("success"):
            raise RuntimeError(f"{path}: HTTP {reply.status_code}: {body.get('message') or reply.text[:300]}")
        return body["data"]

    def _stop_server(self):
        if self.http_server is not None and self.server_thread.is_alive():
            self.http_server.request_stop()  # serve() on its thread then stops granian, the duties, the lock
            self.server_thread.join(30)
            if self.server_thread.is_alive():
                log.warning("the server thread did not stop within 30 s")

    # -- harvester ------------------------------------------------------------------------------------------------
    def harvester_settings(self):
        from harvester.cli import parse_settings

        defaults = [f"{name}_period=0.5" for name in ("adjuster", "submitter", "fetcher", "monitor", "propagator")]
        defaults += ["sweeper_period=5", "commands_period=5", "backoff_base_s=1", "backoff_max_s=10"]
        return parse_settings(defaults + list(self.args.harvester_setting))

    def _start_harvester(self):
        from harvester import db as hdb
        from harvester.cli import harvester_id
        from harvester.context import Context
        from harvester.queues import QueueFile
        from harvester.runner import Runner
        from harvester.server import ServerClient

        settings = self.harvester_settings()
        queue_file = QueueFile(self.queues_path)
        queue_file.load()
        hdb.open_database(os.path.join(self.harvester_home, "harvester.db"))
        hdb.acquire_instance()
        ident = harvester_id(None, self.harvester_home)
        self.harvester_client = ServerClient(self.url, self.harvester_token_file, ident, settings.server_timeout)
        self.harvester_context = Context(self.harvester_home, self.harvester_client, settings, ident)
        queue_file.context = self.harvester_context
        queue_file.apply()
        self.runner = Runner(self.harvester_context, queue_file.check)
        self.runner.recover()
        self.runner.start()
        self.harvester_thread = threading.Thread(target=self.runner.serve_forever, name="harvester", daemon=True)
        self.harvester_thread.start()

    def _stop_harvester(self):
        from harvester import db as hdb

        if self.runner is None:
            return
        stuck = self.runner.stop(timeout=15)
        if stuck:
            log.warning("harvester agents still busy at exit: %s", ", ".join(stuck))
        if self.harvester_thread is not None:
            self.harvester_thread.join(10)
        self.harvester_context.close()
        self.harvester_client.close()
        with contextlib.suppress(Exception):
            hdb.release_instance()
        hdb.close_database()
        self.runner = None

    # -- pilots -----------------------------------------------------------------------------------------------
    def pilot_records(self):
        """{pid: start ticks} of every pilot harvester started (the local batch plugin's spool records)."""
        root = os.path.join(self.harvester_home, "workers") if self.home else None
        if not root or not os.path.isdir(root):
            return {}
        for queue in os.listdir(root):
            spool = os.path.join(root, queue, ".batch")
            if not os.path.isdir(spool):
                continue
            for name in os.listdir(spool):
                if not name.endswith(".json") or name in self._pilot_records:
                    continue
                try:
                    with open(os.path.join(spool, name)) as handle:
                        record = json.load(handle)
                    self._pilot_records[name] = (int(record["pid"]), int(record["start"]))
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # being written: read at the next look
        return dict(self._pilot_records.values())

    def live_pilots(self):
        """The pilots' process groups still running: {pid: start ticks}."""
        live = {}
        for pid, start in self.pilot_records().items():
            stat = proc_stat(pid)
            if stat and stat[2] == start and stat[0] not in ("Z", "X"):
                live[pid] = start
        return live

    def _reap_orphans(self):
        """Pilots' job scripts are re-parented here (subreaper): collect the ended ones."""
        if not self.subreaper:
            return
        for pid, start in self.pilot_records().items():
            stat = proc_stat(pid)
            if stat and stat[0] == "Z" and stat[2] == start:
                reap(pid)

    def _let_pilots_end(self, timeout=15.0):
        """No job is left: the pilots ask a few more times (getjob_tries), find none and exit, so their workers
        end finished; the ones still there after ``timeout`` are stopped later with everything else."""
        deadline = time.monotonic() + timeout
        while self.live_pilots() and time.monotonic() < deadline:
            self._reap_orphans()
            time.sleep(0.2)
        self._reap_orphans()

    def _stop_pilots(self, grace=10.0):
        """SIGTERM to every live pilot's process group (the pilot kills its payload and reports), SIGKILL to what
        is left after ``grace`` s."""
        live = set(self.live_pilots()) | (self.live_groups() & set(self.pilot_records()))
        if not live:
            return 0
        for pgid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        groups = set(live)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self._reap_orphans()
            groups &= self.live_groups()
            if not groups:
                break
            time.sleep(0.1)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self._reap_orphans()
        return len(live)

    def live_groups(self):
        """Process groups with a live process below this one (the job script, which leads its pilot's group, dies
        at once on SIGTERM; its pilot goes on to stop its payload and report)."""
        groups = set()
        for pid in descendants(os.getpid()):
            stat = proc_stat(pid)
            if stat and stat[0] not in ("Z", "X"):
                groups.add(stat[1])
        if not self.subreaper:  # orphans are not below us: ask the kernel about each pilot's group
            for pgid in self.pilot_records():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, 0)
                    groups.add(pgid)
        return groups

    def _stop_descendants(self):
        """Anything still below this process (orphaned payloads, a cancel helper): killed and collected."""
        me = os.getpid()
        for _ in range(3):
            left = [pid for pid in descendants(me) if proc_stat(pid) and proc_stat(pid)[0] not in ("Z", "X")]
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for pid in children(me):
            stat = proc_stat(pid)
            if stat and stat[0] == "Z":
                reap(pid)

    def leftovers(self):
        """Pilots' process groups and processes below this one that still run (should be none after stop())."""
        below = [pid for pid in descendants(os.getpid()) if (proc_stat(pid) or ("X",))[0] not in ("Z", "X")]
        return sorted(set(below) | set(self.live_pilots()))

    def stop(self):
        """Harvester, pilots, server, then any process left below this one; each step survives the others."""
        for step in (self._stop_harvester, self._stop_pilots, self._stop_server, self._stop_descendants):
            try:
                step()
            except Exception:  # noqa: BLE001 - the next steps must run
                log.exception("stopping: %s failed", step.__name__)

    # -- the demo -----------------------------------------------------------------------------------------------
    def payload_command(self):
        """The demo payload: (fail once,) sleep, then the input upper-cased into out.txt."""
        parts = []
        if self.args.fail_some:
            marks = shlex.quote(self.fail_dir)
            parts.append(f'if rm {marks}/%IN 2>/dev/null; then echo "testbed: failing once on purpose" >&2; '
                         "exit 3; fi")
        if self.args.job_seconds > 0:
            parts.append(f"sleep {self.args.job_seconds:g}")
        parts.append(f"tr a-z A-Z < %IN > {OUTPUT}")
        return "; ".join(parts)

    def input_files(self):
        """(lfn, content) of the demo dataset: one small text file per job."""
        for i in range(self.args.jobs):
            lfn = f"in.{i:06d}.txt"
            yield lfn, (f"minipanda testbed input {i} of {self.args.jobs}\n"
                        f"the payload upper-cases this file into its output\n").encode()

    def _submit_demo(self):
        from minipanda.core import filestore

        store = filestore.FileStore(os.path.join(self.server_home, "files"))
        if self.args.fail_some:
            os.makedirs(self.fail_dir, exist_ok=True)
        files = []
        for i, (lfn, content) in enumerate(self.input_files()):
            with open(os.path.join(self.data_dir, lfn), "wb") as handle:
                handle.write(content)
            store.put(DATASET, lfn, io.BytesIO(content), len(content), len(content))
            files.append({"lfn": lfn, "fsize": len(content), "checksum": "ad:" + adler32(content),
                          "guid": str(uuid.uuid4()), "location": self.data_dir})
            if self.args.fail_some and i % 10 == 0:
                open(os.path.join(self.fail_dir, lfn), "w").close()
        self.v1("dataset/add", name=DATASET, files=files)
        params = {"taskName": TASK_NAME, "exec": self.payload_command(), "inDS": DATASET, "nFilesPerJob": 1,
                  "outputs": [OUTPUT], "site": [QUEUE], "nScouts": 0, "maxAttempt": 3, "prodSourceLabel": "managed",
                  "coreCount": 1, "ramCount": 500, "walltime": 600}
        self.submitted_at = time.time()
        self.task_id = self.v1("task/submit", task_parameters=params, parent_tid=None)
        self.say(f"demo task {self.task_id}: {self.args.jobs} jobs, each reads {DATASET}/<file> from the file "
                 f"store, runs `{self.payload_command()}` and uploads {OUTPUT}")

    # -- following it ---------------------------------------------------------------------------------------------
    def state(self):
        """The task's status and its jobs by status (in-process read of the server's database)."""
        import peewee
        from minipanda.core import models

        task = models.Task.get_by_id(self.task_id)
        counts = dict(models.Job.select(models.Job.status, peewee.fn.COUNT(models.Job.panda_id))
                      .where(models.Job.task_id == self.task_id).group_by(models.Job.status).tuples())
        return {"task": task.status, "jobs": counts}

    def _follow(self):
        from minipanda.core import states

        final = set(states.FINAL_TASK_VALUES)
        bar = Progress(self.args.jobs, self.out)
        try:
            while True:
                self._check_threads()
                state = self.state()
                self._reap_orphans()
                bar.update(state, len(self.live_pilots()))
                if state["task"] in final:
                    return state
                time.sleep(0.25)
        finally:
            bar.close()

    def _check_threads(self):
        if not self.server_thread.is_alive():
            raise RuntimeError("the server stopped: " + (repr(self.server_error[0]) if self.server_error else
                                                         "see testbed.log"))
        if self.harvester_thread is not None and not self.harvester_thread.is_alive():
            raise RuntimeError("harvester stopped (see testbed.log)")

    def _summary(self, state):
        import peewee
        from minipanda.core import models

        self._reap_orphans()
        cpu = os.times()
        job = models.Job
        rows = list(job.select(job.panda_id, job.status, job.attempt_nr, job.start_time, job.end_time)
                    .where(job.task_id == self.task_id).tuples())
        finished = [r for r in rows if r[1] == "finished"]
        first_running = models.StatusLog.select(peewee.fn.MIN(models.StatusLog.time)).where(
            models.StatusLog.panda_id.in_([r[0] for r in rows]),
            models.StatusLog.new_status == "running").scalar() if rows else None
        last_end = max((r[4] for r in rows if r[4] is not None), default=None)
        makespan = utc_epoch(last_end) - self.submitted_at if last_end else None
        ideal = self.args.jobs * self.args.job_seconds / self.cores
        out_dir = os.path.join(self.server_home, "files", OUT_SCOPE)
        by_state = {}
        for row in rows:
            by_state[row[1]] = by_state.get(row[1], 0) + 1
        return {
            "home": self.home, "url": self.url, "monitor": self.monitor_url(), "task_id": self.task_id,
            "task_status": state["task"], "jobs": self.args.jobs, "jobs_by_state": by_state,
            "attempts": len(rows), "retries": max(0, len(rows) - self.args.jobs),
            "finished_inputs": len(finished), "complete": state["task"] == "done" and len(finished) == self.args.jobs,
            "cores": self.cores, "pilots": self.pilots, "job_seconds": self.args.job_seconds,
            "makespan_s": makespan, "ideal_s": ideal, "ratio": (makespan / ideal) if makespan and ideal else None,
            "jobs_per_s": (len(finished) / makespan) if makespan else None,
            "first_job_running_s": (utc_epoch(first_running) - self.started) if first_running else None,
            "outputs_dir": out_dir, "outputs": count_files(out_dir, "." + OUTPUT), "logs": count_files(out_dir, ".log.tgz"),
            "pilots_started": len(self.pilot_records()),
            # CPU seconds so far: this process (server + harvester threads), and the pilots with their payloads
            # (job scripts re-parented here and collected: their children's time is counted in theirs)
            "cpu_testbed_s": cpu.user + cpu.system, "cpu_pilots_s": cpu.children_user + cpu.children_system,
            "load": [round(x, 2) for x in os.getloadavg()],
        }

    def _print_summary(self, s):
        with open(os.path.join(self.home, "summary.json"), "w") as handle:
            json.dump(s, handle, indent=1)
        states_text = ", ".join(f"{k} {v}" for k, v in sorted(s["jobs_by_state"].items(), key=lambda kv: -kv[1]))
        lines = [
            "",
            f"task {s['task_id']} {s['task_status']}: {s['finished_inputs']} of {s['jobs']} jobs finished"
            f" ({'all' if s['complete'] else 'NOT all'})",
            f"  job attempts by final state: {states_text}; retries {s['retries']}",
        ]
        if s["makespan_s"]:
            lines.append(f"  makespan {s['makespan_s']:.1f} s (task submitted -> last job ended), "
                         f"{s['jobs_per_s']:.1f} jobs/s; ideal {s['ideal_s']:.1f} s = {s['jobs']} x "
                         f"{s['job_seconds']:g} s / {s['cores']} cores, ratio {s['ratio']:.2f}"
                         if s["ideal_s"] else f"  makespan {s['makespan_s']:.1f} s, {s['jobs_per_s']:.1f} jobs/s")
        if s["first_job_running_s"] is not None:
            lines.append(f"  first job running {s['first_job_running_s']:.1f} s after the command started")
        lines.append(f"  CPU: server + harvester {s['cpu_testbed_s']:.1f} s, pilots and payloads "
                     f"{s['cpu_pilots_s']:.1f} s; "
                     f"load average {'/'.join(str(x) for x in s['load'])}")
        lines.append(f"  {s['pilots']} pilots at a time on {s['cores']} cores ({s['pilots_started']} started). "
                     "More pilots than cores, on purpose: the demo payload only sleeps, and each job also costs "
                     "the pilot its own work (getJob, stage-in, log tarball, uploads, final update: CPU above), "
                     "during which a core would otherwise wait")
        lines.append(f"  outputs and logs: {s['outputs_dir']}/ ({s['outputs']} *.{OUTPUT}, {s['logs']} *.log.tgz)")
        lines.append(f"  inputs: {self.data_dir}/ (also in the file store under {DATASET}/)")
        lines.append(f"  everything else: {self.home} (summary.json, testbed.log, queues.yaml, server/, harvester/)")
        if self.args.keep_running:
            lines.append(f"monitor: {s['monitor']} (up until Ctrl-C)")
        else:
            lines.append(f"monitor: {s['monitor']} was up while the task ran; 'minipanda testbed --keep-running' "
                         "keeps the server, harvester and monitor up afterwards")
        self.say("\n".join(lines))


