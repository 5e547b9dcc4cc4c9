"""One testbed run: a fresh home, the server and harvester on threads, the demo task, the stop."""
import contextlib
import logging
import os
import signal
import sys
import threading
import time

from testbed import config, demo, summary
from testbed.config import QUEUE
from testbed.processes import PilotProcesses, become_subreaper, free_port, process_start_time
from testbed.progress import Progress


log = logging.getLogger("minipanda.testbed")
FOLLOW_PERIOD_S = 0.5  # the progress shown; the figures come from the database's times, not from this loop
# after a submission, how often the testbed looks for the task's first waiting jobs to wake harvester's adjuster
# (the generator makes them moments after; at FOLLOW_PERIOD_S the first pilots would be launched ~0.25 s later)
FIRST_JOBS_POLL_S = 0.02
FIRST_JOBS_WAIT_S = 10
WARM_UP_POLL_S = 0.05
WARM_UP_LIMIT_S = 120  # --warm-up: the demo task goes after this long even when not every pilot is up (said so)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM."""


class Testbed:
    def __init__(self, args):
        self.args = args
        self.started = process_start_time()
        self.cores = args.cores or os.cpu_count() or 1
        self.pilots = args.pilots or config.PILOTS_PER_CORE * self.cores
        self.home = None
        self.processes = None
        self.server_thread = self.http_server = None
        self.server_error = []
        self.runner = self.harvester_context = self.harvester_client = None
        self.harvester_thread = None
        self.url = None
        self.task_id = self.warm_up_task_id = None
        self.first_submitted_at = None  # the first task's submission: no pilot was up then (cold)
        self.submitted_at = None  # the demo task's submission (with --warm-up: pilots up, warm)
        self.pilots_at_submission = None  # --warm-up: pilots up when the demo task was submitted
        self.cpu_inputs_s = 0.0  # this thread's CPU writing the demo's inputs (summary: not a job's cost)
        self.out = sys.stdout
        self.signalled_while_stopping = None
        self.signalled = False  # a stop signal came: the run ends by it

    # -- run --------------------------------------------------------------------------------------------------
    def run(self):
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        code, result = 1, None
        try:
            subreaper = become_subreaper()
            try:
                self.home = config.Home.make(self.args.home)
            except ValueError as exc:  # the user's --home: said in one line, no traceback (no log file yet)
                print(f"minipanda testbed: error: {exc}", file=sys.stderr)
                return 2
            self.processes = PilotProcesses(self.home.harvester, subreaper)
            config.log_to_file(self.home.log, self.args.debug)
            self.say(f"minipanda testbed: home {self.home.path} (log: {self.home.log})")
            config.write_queues(self.home.queues,
                                config.queue_config(self.cores, self.pilots, self.args.lost_heartbeat,
                                                self.args.warm_up))
            self._start_server()
            self._start_harvester()
            self.say(f"server {self.url} (auth {self.args.auth}), harvester with up to {self.pilots} pilots on "
                     f"{self.cores} cores, queue {QUEUE}")
            self._submit_demo()
            state = self._follow()
            self.processes.let_end()
            self.processes.reap_orphans()
            result = summary.summarize(self, state)
            summary.write(self.home.summary, result)
            self.say(summary.text(result, self.home.data, self.args.keep_running))
            code = 0 if result["complete"] else 1
            if self.args.keep_running:
                self.say(f"\nkeeping the services up (--keep-running): monitor {self.monitor_url()}, "
                         f"MINIPANDA_URL={self.url}; Ctrl-C or SIGTERM stops everything")
                while True:
                    time.sleep(1)
                    self.processes.reap_orphans()
        except Interrupted:
            self.say("\nstopping (Ctrl-C/SIGTERM): harvester, pilots, server ...")
            # after --keep-running the stop is the normal end: the code still says whether every job finished
            code = 130 if result is None else (0 if result["complete"] else 1)
        except Exception as exc:  # noqa: BLE001 - say what failed, stop everything, exit 1
            log.exception("testbed failed")
            print(f"minipanda testbed: error: {exc}", file=sys.stderr)
            code = 1
        finally:
            # a second Ctrl-C must not cut the clean-up short: it is noted, not raised
            signal.signal(signal.SIGINT, self._on_signal_while_stopping)
            signal.signal(signal.SIGTERM, self._on_signal_while_stopping)
            try:
                self.stop()
            finally:
                for sig, handler in previous.items():
                    # after a stop by signal the process only ends: a late Ctrl-C or SIGTERM (an impatient user
                    # presses again) is ignored, or Python's default action would kill it with -2/-15 instead of
                    # its exit code (the default handlers are also put back while the interpreter exits)
                    signal.signal(sig, signal.SIG_IGN if self.signalled else handler)
                if self.signalled_while_stopping:
                    log.warning("%s while stopping: the clean-up went on", self.signalled_while_stopping)
        if self.processes is not None:
            left = self.processes.leftovers()
            self.say("stopped; nothing left running" if not left else
                     f"stopped, but these processes are still running: {', '.join(map(str, left))}")
        return code

    def _on_signal(self, signum, frame):
        self.signalled = True
        raise Interrupted(signal.Signals(signum).name)

    def _on_signal_while_stopping(self, signum, frame=None):
        # An attribute store only: a handler runs between any two bytecodes of the main thread, maybe inside a
        # logging call holding its lock or a write on the log file's buffered stream (queueconfig/signals.py).
        self.signalled_while_stopping = signal.Signals(signum).name

    def say(self, text):
        print(text, file=self.out, flush=True)

    def monitor_url(self):
        return f"{self.url}/monitor/"

    def stop(self):
        """Harvester, pilots, server, then any process left below this one; each step survives the others."""
        steps = [self._stop_harvester]
        if self.processes is not None:
            steps.append(self.processes.stop)
        steps.append(self._stop_server)
        if self.processes is not None:
            steps.append(self.processes.stop_descendants)
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - the next steps must run
                log.exception("stopping: %s failed", step.__name__)

    # -- server ---------------------------------------------------------------------------------------------------
    def _start_server(self):
        from minipanda.server import process

        port = self.args.port if self.args.port is not None else free_port(config.PREFERRED_PORT)
        ready = threading.Event()
        settings = config.server_settings(self.args.jobs, self.args.setting)

        def on_ready(server):
            self.http_server = server
            ready.set()

        def serve():
            try:
                process.serve(self.home.server, host="127.0.0.1", port=port, auth_mode=self.args.auth,
                              queues_file=self.home.queues, reload_period=10.0, ready=on_ready, settings=settings)
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
        secret = auth.load_secret(self.home.server)
        self.admin_token, _ = auth.create_token(secret, "testbed", "admin", days=30)
        token, _ = auth.create_token(secret, "testbed-harvester", "harvester", days=30)
        fd = os.open(self.home.harvester_token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
    def _start_harvester(self):
        from harvester import db as hdb
        from harvester.cli import harvester_id
        from harvester.context import Context
        from harvester.queues import QueueFile
        from harvester.runner import Runner
        from harvester.client import ServerClient

        settings = config.harvester_settings(self.args.harvester_setting)
        queue_file = QueueFile(self.home.queues)
        queue_file.load()
        hdb.open_database(os.path.join(self.home.harvester, "harvester.db"))
        hdb.acquire_instance()
        ident = harvester_id(None, self.home.harvester, self.home.harvester_token)
        self.harvester_client = ServerClient(self.url, self.home.harvester_token, ident, settings.server_timeout)
        self.harvester_context = Context(self.home.harvester, self.harvester_client, settings, ident)
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

    # -- the demo task --------------------------------------------------------------------------------------------
    def _submit_demo(self):
        """The demo task, after the warm-up with --warm-up; the times of both submissions are kept (summary)."""
        args = self.args
        self.first_submitted_at = time.time()
        if args.warm_up:
            self.warm_up_task_id = demo.submit_warm_up(self.v1, self.pilots)
            self.say(f"warm-up task {self.warm_up_task_id}: {self.pilots} jobs running `true`; the demo task follows "
                     "once every pilot is up")
            self._wake_harvester(self.warm_up_task_id)
        cpu = time.thread_time()
        params = demo.prepare(self.v1, self.home, args.jobs, args.job_seconds, args.fail_some, args.files)
        self.cpu_inputs_s = time.thread_time() - cpu
        if args.warm_up:
            self.pilots_at_submission = self._wait_for_pilots()
        self.submitted_at = time.time() if args.warm_up else self.first_submitted_at
        self.task_id = demo.submit_prepared(self.v1, params)
        command = demo.payload_command(args.job_seconds, self.home.fail_marks if args.fail_some else None, args.files)
        if args.files == "none":
            self.say(f"demo task {self.task_id}: {args.jobs} jobs without files, each runs `{command}` and "
                     "uploads its log")
        else:
            size = " (1 MB)" if args.files == "1mb" else ""
            self.say(f"demo task {self.task_id}: {args.jobs} jobs, each reads {demo.DATASET}/<file>{size} from the "
                     f"file store, runs `{command}` and uploads {demo.OUTPUT}")
        if not args.warm_up:
            self._wake_harvester(self.task_id)

    def _wake_harvester(self, task_id):
        """Wake harvester's adjuster as soon as the task's first jobs wait (the generator, woken by the submission,
        makes them moments later): backed off while it found no demand, it would look only at its next cycle.
        True when it was woken."""
        deadline = time.monotonic() + FIRST_JOBS_WAIT_S
        while time.monotonic() < deadline:
            self._check_threads()
            if demo.task_state(task_id)["jobs"].get("activated"):
                self.runner.wake("adjuster")
                return True
            time.sleep(FIRST_JOBS_POLL_S)
        return False

    def _wait_for_pilots(self):
        """--warm-up: wait until every pilot has told the server it started and the warm-up's jobs are done, or
        WARM_UP_LIMIT_S; the number of pilots up then."""
        deadline = time.monotonic() + WARM_UP_LIMIT_S
        while True:
            self._check_threads()
            self.processes.reap_orphans()
            up = demo.pilots_up()
            finished = demo.task_state(self.warm_up_task_id)["jobs"].get("finished", 0)
            if up >= self.pilots and finished >= self.pilots:
                self.say(f"warm-up done after {time.time() - self.first_submitted_at:.1f} s: {up} pilots up")
                return up
            if time.monotonic() > deadline:
                self.say(f"warm-up: after {WARM_UP_LIMIT_S} s only {up} of {self.pilots} pilots are up and "
                         f"{finished} of its {self.pilots} jobs finished; the demo task goes now")
                log.warning("warm-up incomplete: %d of %d pilots up, %d jobs finished", up, self.pilots, finished)
                return up
            time.sleep(WARM_UP_POLL_S)

    def _follow(self):
        from minipanda.core import states

        final = set(states.FINAL_TASK_VALUES)
        bar = Progress(self.args.jobs, self.out)
        waiting_seen = False
        try:
            while True:
                self._check_threads()
                state = demo.task_state(self.task_id)
                if not waiting_seen and state["jobs"].get("activated"):
                    # the first jobs are there: harvester's adjuster, backed off while it found no demand, looks now
                    waiting_seen = True
                    self.runner.wake("adjuster")
                self.processes.reap_orphans()
                bar.update(state, len(self.processes.live()))
                if state["task"] in final:
                    return state
                time.sleep(FOLLOW_PERIOD_S)
        finally:
            bar.close()

    def _check_threads(self):
        if not self.server_thread.is_alive():
            raise RuntimeError("the server stopped: " + (repr(self.server_error[0]) if self.server_error else
                                                         "see testbed.log"))
        if self.harvester_thread is not None and not self.harvester_thread.is_alive():
            raise RuntimeError("harvester stopped (see testbed.log)")
