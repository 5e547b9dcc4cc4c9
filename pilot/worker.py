"""The pilot: start up, take jobs one after the other while time and disk allow, then shut down cleanly.

``Pilot.work()`` is the whole protocol of a pilot's life (PanDA's multi-job loop)::

    startup          work area, pilot log, signals, old-directory cleanup, queuedata, outbox replay
    loop             while another job may start (timefloor, lifetime, remaining walltime, disk, signals):
                         take the next job in hand (getJob over HTTP, or the harvester job file), run it to its
                         payload's end (jobrun.JobRun); its wrap-up follows on a thread (pilot.wrapup)
    shutdown         jobs in hand given back, the wrap-up finished, outbox replay, harvester files, the exit code
                     (pilot3's shell exit codes)

Over HTTP (pull mode) a getJob asks for several jobs when they are short (``nJobs``): as many as fill about
``--getjob-lookahead`` seconds at the pace the pilot has seen (each job's run to its payload's end, the wait for
the wrap-up included), at most ``--getjob-max-jobs``, and no more than the remaining time and the timefloor
leave room for; one until a job's pace is known, and again after a getJob found no job (the work that comes next
may be of another kind: a pace learned on no-op jobs would take dozens of long ones at once). The next getJob
goes out before the jobs in hand run out: when the one before the last starts if two jobs fill the look-ahead
(so a server slow to answer does not leave the pilot waiting), when the last of them starts if jobs are shorter
than the look-ahead, else when its payload has ended; its answer is read when the last job is done. Payloads run back to back, one at a time: when one ends, the next job in hand starts at once while
the ended one's stage-out, log and final update are done on the wrap-up thread, whose finals go to the server
several in one updateJobsInBulk. Between two payloads comes only what must: the ended one reaped and the next one
started. What can wait is done while a payload runs: the next job in hand made ready (its directory and
definition), the getJob sent ahead, harvester's files that are due (worker_pandaids.json, worker_usage.json). A job in hand that the pilot may not run after all (a stop signal, no time or
disk left) is reported failed at once with the reason, as a job that got the signal right after its getJob
would be: the server retries it, and nothing stays dispatched to a pilot that has gone. In push and file modes
jobs come one at a time and are run to their final update in the loop, as before.
"""
import collections
import logging
import math
import os
import select
import time

from pilot import comm, errors, housekeeping, node, queuedata, usage
from pilot.errors import ColdShutdown, PilotError
from pilot.guard import Guard
from pilot.handoff import Handoff
from pilot.jobdata import Job
from pilot.jobrun import Context, JobRun
from pilot.outbox import Outbox
from pilot.report import Timing
from pilot.signals import StopState, Waker
from pilot.wrapup import WrapUp

log = logging.getLogger("pilot")


class Pilot:
    """One pilot process.

    Args:
        options: the parsed command line (see pilot.cli).
    """

    def __init__(self, options):
        self.opts = options
        self.started, self.started_wall = time.monotonic(), time.time()
        self.stop, self.waker = StopState(), Waker()
        self.jobs_run = 0
        self.exit_error = None
        self.ctx = None
        self.client = self.handoff = self.outbox = None
        self.deadline = self.pilot_dir = self.timing = self.qd = None
        self.file_mode = self.push_mode = self.subreaper = False
        self.harvester_ids = None
        self.pilot_log = ""
        self.usage = None  # usage.Usage: what the pilot did with its slot, for harvester
        self.in_hand = collections.deque()  # (job definition, when its getJob was sent): fetched, not started
        self.next_jobs = None  # the answer to a getJob sent ahead (comm.ServerClient.begin_get_jobs), not read yet
        self.next_jobs_sent = None  # when it was sent (its jobs' PILOT_PRE_GETJOB)
        self.no_next_job = False  # decided when a getJob was due: no other job may start
        self.no_room = ""  # why room_for_job said no, for the jobs given back
        self.pace = None  # seconds per job seen so far (moving average of each job's run to its payload's end)
        self.wrapup = None  # the wrap-up thread (pull mode)
        self.last_run = None
        self.held = None  # a job whose payload ended, handed to the wrap-up once the next job's own work began
        self.guard = None  # the payload guard (pilot.guard)
        self.prepared = None  # (definition, JobRun) of the next job in hand, made ready while a payload ran

    # ---- the protocol -------------------------------------------------------------------------------------------
    def work(self):
        """Run the pilot; return its shell exit code."""
        try:
            self.startup()
            while self.may_take_job():
                job = self.get_job()
                if job is None:
                    break
                self.run(job)
        except PilotError as exc:
            log.error("pilot stops: %s", exc)
            self.exit_error = self.exit_error or exc.code
        except ColdShutdown:
            log.error("cold shutdown")
        except Exception:
            log.exception("unexpected pilot error")
            self.exit_error = errors.UNKNOWNEXCEPTION
        finally:
            self.shutdown()
        return self.exit_code()

    def startup(self):
        opts = self.opts
        self.pilot_dir = os.path.join(opts.workdir, f"PanDA_Pilot-{os.getpid()}_{int(self.started_wall)}")
        try:
            os.makedirs(self.pilot_dir, mode=0o770)
        except OSError as exc:
            raise PilotError(errors.MKDIR, f"cannot create the pilot directory: {exc}") from None
        self.pilot_log = housekeeping.setup_logging(self.pilot_dir, opts.debug, opts.quiet)
        log.info("pilot %s starting on %s: queue %s, work area %s", node.pilot_id(self.started_wall),
                 node.hostname(), opts.queue, opts.workdir)
        self.timing = Timing(os.path.join(self.pilot_dir, "pilot_timing.json"))
        self.timing.mark(0, "PILOT_START_TIME", self.started_wall)
        if self.waker.install(self.stop) and not opts.no_subreaper:
            self.subreaper = node.become_subreaper()
        self.guard = Guard.start()
        self.load_queuedata()
        housekeeping.clean_old_pilot_dirs(opts.workdir, self.pilot_dir, self.qd["pilot_cleanup_age"])
        self.connect()
        self.ctx = self.make_context()
        if self.client is not None and not self.push_mode:
            self.wrapup = WrapUp(self.ctx, flush_after=self.opts.final_batch_wait)

    def may_take_job(self):
        """Whether another job may start now; also sets the exit code when the reason is an error."""
        if self.stop.requested or self.no_next_job:
            return False
        if self.next_jobs is not None and not self.in_hand:
            return True  # checked when its getJob went out
        return self.room_for_job(self.jobs_run)

    def room_for_job(self, jobs_run):
        """Whether time, timefloor and disk allow one more job after ``jobs_run`` jobs (logged when not)."""
        now = time.monotonic()
        qd = self.ctx.qd
        if jobs_run and now - self.started >= qd["timefloor"] * 60:
            self.no_room = f"the timefloor of {qd['timefloor']} min was used up"
            log.info("timefloor of %s min used up after %d jobs", qd["timefloor"], jobs_run)
            return False
        if self.remaining_time() <= 0:
            self.no_room = "no time was left for the job"
            log.info("no time left for another job")
            return False
        free = housekeeping.free_space_mb(self.opts.workdir)
        if free < qd["pilot_min_disk_getjob_mb"]:
            self.no_room = f"only {free:.0f} MB were free for the job"
            log.error("only %.0f MB free in %s, %s MB needed for a job", free, self.opts.workdir,
                      qd["pilot_min_disk_getjob_mb"])
            self.exit_error = self.exit_error or (errors.NOLOCALSPACE if not jobs_run else None)
            return False
        return True

    def jobs_to_ask(self, jobs_before):
        """How many jobs one getJob asks for when ``jobs_before`` jobs will have started before them (0: none
        may start): those that fill the look-ahead at the pace seen, within the cap, the remaining time and the
        timefloor; 1 while the pace is unknown or the look-ahead is off."""
        if not self.room_for_job(jobs_before):
            return 0
        lookahead, cap = self.opts.getjob_lookahead, max(1, self.opts.getjob_max_jobs)
        if lookahead <= 0 or not self.pace:
            return 1
        pace = max(self.pace, 1e-3)
        jobs = min(int(lookahead / pace), cap, int(self.remaining_time() / pace))
        if jobs_before and self.ctx.qd["timefloor"]:  # jobs may start until the timefloor ends
            left = self.started + self.ctx.qd["timefloor"] * 60 - time.monotonic()
            jobs = min(jobs, math.ceil(left / pace))
        return max(1, jobs)

    def fetch_ahead(self, payload_ended=True):
        """Send the next getJob now when the jobs in hand are running out: while the job before the last one
        runs when at least two jobs fill the look-ahead (the server's answer then has a whole job's time to come,
        however long a loaded server takes), while the last one runs when jobs are shorter than the look-ahead,
        else when its payload has ended (``payload_ended``); the answer is read when the last job is done."""
        if self.client is None or self.push_mode or self.next_jobs is not None or len(self.in_hand) > 1 or \
                self.stop.requested or self.no_next_job:
            return
        lookahead = self.opts.getjob_lookahead
        if self.in_hand and not (not payload_ended and self.pace and 2 * self.pace <= lookahead):
            return
        if not payload_ended and not (self.pace and self.pace <= lookahead):
            return
        n_jobs = self.jobs_to_ask(self.jobs_run + 1 + len(self.in_hand))
        if not n_jobs:
            self.no_next_job = not self.in_hand  # else the job still in hand runs, and asks again when it starts
            return
        self.next_jobs_sent = time.time()
        self.next_jobs = self.client.begin_get_jobs(self.offer(), n_jobs)

    def get_job(self):
        """The next job (a Job), or None when there is none; the getJob time is recorded."""
        if not self.in_hand:
            if self.wrapup is not None:
                self.hand_over_held()
                self.wrapup.flush()  # the finals made so far go now, while the pilot waits for jobs
            if self.handoff is not None and self.push_mode:
                data = self.job_from_file()
                self.in_hand.extend([(data, time.time())] if data is not None else [])
            else:
                self.in_hand.extend(self.jobs_from_server())
            if not self.in_hand:
                if not self.jobs_run:
                    self.exit_error = self.exit_error or errors.NOJOBSINPANDA
                return None
        data, asked = self.in_hand.popleft()
        try:
            job = self.prepared[1].job if self.prepared is not None and self.prepared[0] is data else Job(data)
        except ValueError as exc:
            log.error("unusable job definition: %s", exc)
            return None
        self.timing.mark(job.panda_id, "PILOT_PRE_GETJOB", asked)
        self.timing.mark(job.panda_id, "PILOT_POST_GETJOB")
        return job

    def run(self, job):
        """Run one job to its payload's end (to its final report in push and file modes), then account for it."""
        if self.handoff is not None:
            self.handoff.begin_job(job.panda_id, list_later=True)
        if self.wrapup is not None and self.last_run is not None and self.pilot_log:
            # the previous job's log tarball, made on the wrap-up thread, ends where this job's lines begin
            self.ctx.log_end[self.last_run.job.panda_id] = _size(self.pilot_log)
        prepared, self.prepared = self.prepared, None
        run = self.last_run = prepared[1] if prepared is not None and prepared[1].job is job else JobRun(job, self.ctx)
        cpu, began = usage.children_cpu(), time.monotonic()
        if self.wrapup is not None:
            # the previous job goes to the wrap-up thread once this one's payload has started: its tarball and
            # upload then run under this payload instead of holding the GIL while the pilot starts it
            self.ctx.job_started = self.hand_over_held if self.held is not None else None
            run.run_to_payload_end()
            self.hand_over_held()
            self.held, state = run, run.state
        else:
            try:
                state = run.execute()
            finally:
                self.timing.save(done=job.panda_id)
        took = time.monotonic() - began
        self.pace = took if self.pace is None else 0.7 * self.pace + 0.3 * took
        self.jobs_run += 1
        if self.usage is not None:
            marks = self.timing.marks(job.panda_id)
            self.usage.add_job(job.panda_id, marks.get("PILOT_POST_PAYLOAD", 0) - marks.get("PILOT_PRE_PAYLOAD", 0),
                               usage.children_cpu() - cpu, write=False)  # written while the next payload runs
        if self.wrapup is None:
            log.info("job %s done: %s", job.panda_id, state)
        if run.error and run.error.code == errors.REACHEDMAXTIME and self.remaining_time() <= 0:
            self.exit_error = errors.REACHEDMAXTIME
        if self.client is not None and not self.file_mode and self.wrapup is None:
            self.outbox.replay(self.client)

    def while_payload_runs(self):
        """What can wait until a payload runs, done then instead of between two payloads: the getJob sent ahead
        when the jobs in hand run out, harvester's files that are due, the next job in hand made ready."""
        self.fetch_ahead(payload_ended=False)
        if self.handoff is not None:
            self.handoff.list_if_due()
        if self.usage is not None:
            self.usage.write_if_due()
        self.prepare_next()

    def answer_due(self):
        """The socket of the getJob sent ahead while its answer is awaited (the payload's watch wakes on it), else
        None."""
        fileno = getattr(self.next_jobs, "fileno", None)
        return fileno() if fileno is not None else None

    def answer_came(self):
        """The getJob sent ahead read as soon as its answer is there, while a payload runs: its jobs join those in
        hand and the first of them is made ready before that payload ends (else it would be made in the gap). An
        empty answer or a failure is kept for get_job, which handles it as before."""
        early = self.next_jobs
        if getattr(early, "fileno", None) is None or not select.select([early.fileno()], [], [], 0)[0]:
            return
        try:
            jobs, failure = early(), None
        except Exception as exc:  # raised again where get_job reads the answer, and handled there as before
            jobs, failure = [], exc
        if jobs:
            self.next_jobs = None
            self.in_hand.extend((data, self.next_jobs_sent) for data in jobs)
            self.prepare_next()
        else:
            self.next_jobs = _answered(jobs, failure)

    def prepare_next(self):
        """The next job in hand (over HTTP, several per getJob) made ready to start: its directory and definition
        (jobrun.JobRun.prepare_ahead); its own turn then starts with its payload. A definition that cannot be read
        is left for get_job to report."""
        if self.prepared is not None or not self.in_hand or self.wrapup is None or self.stop.requested:
            return
        data = self.in_hand[0][0]
        try:
            job = Job(data)
        except ValueError:
            return
        run = JobRun(job, self.ctx)
        run.prepare_ahead()
        self.prepared = (data, run)

    def hand_over_held(self):
        """The job whose payload ended last to the wrap-up thread (on a cold stop: its final to the outbox)."""
        run, self.held = self.held, None
        if run is None:
            return
        if self.stop.cold:
            run.spool_final()
        else:
            self.wrapup.put(run)

    def shutdown(self):
        """Give back the jobs in hand, finish the wrap-up, replay what is left in the outbox, tell harvester the
        pilot is done, record the pilot's figures."""
        if self.timing is None:
            return
        for step in (self.hand_over_held, self.give_back_in_hand, self.finish_wrapup):
            try:
                step()
            except ColdShutdown:
                if self.wrapup is not None:
                    self.wrapup.abandon()
            except Exception:  # the rest of the shutdown must still run
                log.exception("shutdown step %s failed", step.__name__)
        if self.client is not None and not self.file_mode and not self.stop.cold and self.outbox is not None:
            delivered, left = self.outbox.replay(self.client)
            if left:
                log.warning("%d final updates are still in the outbox %s", left, self.outbox.directory)
        if self.client is not None and self.harvester_ids and not self.file_mode:
            self.client.worker_status(*self.harvester_ids, "finished", self.opts.queue, node.hostname())
        if self.usage is not None:
            self.usage.write(ended=True)
        if self.handoff is not None:
            self.handoff.list_panda_ids()
            self.handoff.touch_kill_worker()
        if self.guard is not None:
            self.guard.close()
        self.timing.mark(0, "PILOT_END_TIME")
        self.timing.mark(0, "PILOT_PEAK_RSS_KB", node.peak_rss_kb())
        cpu = os.times()  # the pilot's own CPU seconds, and its payloads' (children it reaped)
        self.timing.mark(0, "PILOT_CPU_S", round(cpu.user + cpu.system, 3))
        self.timing.mark(0, "PILOT_PAYLOADS_CPU_S", round(cpu.children_user + cpu.children_system, 3))
        self.timing.save(now=True)
        log.info("pilot done after %d jobs, exit code %d, peak RSS %d kB", self.jobs_run, self.exit_code(),
                 node.peak_rss_kb())

    def finish_wrapup(self):
        """The wrap-up thread's jobs wrapped up and their finals sent (on a cold stop: spooled at once)."""
        if self.wrapup is None:
            return
        if self.stop.cold:
            self.wrapup.abandon()
        elif not self.wrapup.close():
            log.error("the wrap-up thread did not end")
        else:
            log.info("final updates of %d jobs sent, %d of them in %d updateJobsInBulk", self.wrapup.sent_finals,
                     self.wrapup.sent_finals_in_bulk, self.wrapup.sent_bulks)

    def give_back_in_hand(self):
        """Jobs fetched that will not run: each reported failed with why (the server retries it), not left
        dispatched. On a cold stop the getJob sent ahead is waited for only briefly and the reports go to the
        outbox."""
        fetched, self.in_hand = [data for data, _ in self.in_hand], collections.deque()
        prepared, self.prepared = self.prepared, None
        result, self.next_jobs = self.next_jobs, None
        if result is not None:
            try:
                fetched.extend(result(timeout=2.0 if self.stop.cold else None))
            except comm.CommError as exc:
                log.warning("the getJob sent ahead got no usable answer: %s", exc)
        if not fetched:
            return
        if self.stop.requested:
            why = PilotError(errors.signal_code(self.stop.signum), f"pilot got {self.stop.name} before the job started")
        else:
            reason = f" ({self.no_room})" if self.no_room else ""
            why = PilotError(self.exit_error or errors.GENERALERROR, f"the pilot stopped before the job started{reason}")
        for data in fetched:
            if prepared is not None and prepared[0] is data:
                run = prepared[1]  # made ready ahead: its directory goes
            else:
                try:
                    run = JobRun(Job(data), self.ctx)
                except ValueError as exc:
                    log.error("unusable job definition fetched: %s", exc)
                    continue
            log.warning("job %s was fetched but will not run: %s", run.job.panda_id, why)
            if self.handoff is not None:
                self.handoff.add_panda_id(run.job.panda_id)
            run.give_back(why, self.wrapup)

    # ---- helpers ------------------------------------------------------------------------------------------------
    def load_queuedata(self):
        opts = self.opts
        try:
            if opts.queuedata:
                qd = queuedata.load_file(opts.queuedata, opts.queue)
            elif opts.no_server_updates:
                qd = queuedata.from_environment_dir(opts.harvester_workdir, opts.queue) or queuedata.QueueData(
                    {}, opts.queue)
            else:
                client = comm.ServerClient(opts.url, opts.token_file, 60)
                text = client.get_text(f"/cache/schedconfig/{opts.queue}.all.json")
                qd = queuedata.parse(text, opts.queue, opts.url)
        except queuedata.QueueDataError as exc:
            raise PilotError(exc.code, str(exc)) from None
        except comm.CommError as exc:
            raise PilotError(errors.QUEUEDATA, f"cannot get queuedata: {exc}") from None
        queuedata.save(qd, os.path.join(self.pilot_dir, "queuedata.json"))
        if qd["status"].lower() == "offline":
            raise PilotError(errors.SITEOFFLINE, f"queue {opts.queue} is offline")
        if qd["state"] and qd["state"].upper() != "ACTIVE":
            raise PilotError(errors.PANDAQUEUENOTACTIVE, f"queue {opts.queue} state is {qd['state']}")
        self.qd = qd
        lifetime = opts.lifetime or qd["pilot_lifetime"]
        lifetime = min(lifetime, qd["maxtime"]) if qd["maxtime"] else lifetime
        self.deadline = self.started + lifetime

    def connect(self):
        opts, qd = self.opts, self.qd
        self.file_mode = bool(opts.no_server_updates or qd.offline_network)
        self.push_mode = self.file_mode or opts.harvester_submit_mode == "PUSH"
        if opts.harvester_workdir:
            self.handoff = Handoff(opts.harvester_workdir, qd["handoff_files"])
            self.usage = usage.Usage(opts.harvester_workdir, self.started)
        elif self.file_mode:
            raise PilotError(errors.GENERALERROR, "file mode (--no-server-updates) needs --harvester-workdir")
        self.outbox = Outbox(os.path.join(opts.workdir, "outbox"))
        if not self.file_mode:
            self.client = comm.ServerClient(opts.url, opts.token_file, qd["pilot_http_timeout"])
            if os.environ.get("HARVESTER_ID") and os.environ.get("HARVESTER_WORKER_ID"):
                self.harvester_ids = (os.environ["HARVESTER_ID"], os.environ["HARVESTER_WORKER_ID"])
                self.client.worker_status(*self.harvester_ids, "started", opts.queue, node.hostname())
            self.outbox.replay(self.client)

    def make_context(self):
        opts, qd = self.opts, self.qd
        harvester_dir = opts.harvester_workdir or ""
        input_dir = opts.input_dir or qd["input_dir"] or harvester_dir or opts.workdir
        output_dir = opts.output_dir or qd["output_dir"] or harvester_dir or os.path.join(opts.workdir, "outputs")
        identity = {"pilotID": node.pilot_id(self.started_wall), "batchID": opts.batch_id or node.batch_id(),
                    "node": node.hostname(), "siteName": opts.queue}
        return Context(queue=opts.queue, qd=qd, identity=identity, pilot_dir=self.pilot_dir, input_dir=input_dir,
                       output_dir=output_dir, stop=self.stop, waker=self.waker, timing=self.timing,
                       client=self.client if not self.file_mode else None, handoff=self.handoff,
                       file_mode=self.file_mode, outbox=self.outbox,
                       pilot_deadline=self.deadline - qd["pilot_stageout_reserve"],
                       adopter_pid=os.getpid() if self.subreaper else None, pilot_log=self.pilot_log,
                       cleanup=not opts.no_cleanup, payload_ended=self.fetch_ahead, guard=self.guard,
                       pull=not self.push_mode, payload_running=self.while_payload_runs,
                       answer_due=self.answer_due, answer_came=self.answer_came)

    def remaining_time(self):
        """Seconds a new job may run: the pilot's end minus the stage-out reserve."""
        return self.deadline - time.monotonic() - self.qd["pilot_stageout_reserve"]

    def offer(self):
        """The getJob parameters: who the pilot is and what room it has."""
        qd, ids = self.qd, self.ctx.identity
        disk = housekeeping.free_space_mb(self.opts.workdir)
        params = {"siteName": self.opts.queue, "computingElement": self.opts.queue,
                  "prodSourceLabel": self.opts.job_label or self.qd.job_label(), "node": ids["node"], "pilotID": ids["pilotID"],
                  "batchID": ids["batchID"], "coreCount": qd["corecount"] or node.cores(),
                  "mem": qd["maxrss"] or node.memory_mb(),
                  "diskSpace": int(min(disk, qd["maxwdir"]) if qd["maxwdir"] else disk),
                  "remainingTime": max(0, int(self.remaining_time()))}
        if self.harvester_ids:
            params.update(harvester_id=self.harvester_ids[0], worker_id=self.harvester_ids[1])
        return params

    def jobs_from_server(self):
        """The jobs of the getJob sent ahead, else of a getJob sent now (tried again ``pilot_getjob_tries`` times
        when the server has none): a list of (definition, when asked)."""
        tries, failures = self.qd["pilot_getjob_tries"], []
        for attempt in range(max(1, tries)):
            if self.stop.requested:
                return []
            try:
                early, self.next_jobs = self.next_jobs, None
                if early is not None:
                    asked, jobs = self.next_jobs_sent, early()
                else:
                    n_jobs = self.jobs_to_ask(self.jobs_run)
                    if not n_jobs:
                        return []
                    asked, jobs = time.time(), self.client.get_jobs(self.offer(), n_jobs)
                if jobs:
                    return [(data, asked) for data in jobs]
                log.info("no job for this pilot (getJob %d of %d)", attempt + 1, tries)
                self.pace = None  # the queue ran dry: what comes next may be other work, one job first
            except comm.CommError as exc:
                log.warning("getJob failed (%d of %d): %s", attempt + 1, tries, exc)
                if exc.auth:
                    raise PilotError(errors.NOPROXY, f"the server refused the token: {exc}") from None
                failures.append(exc)
            if attempt + 1 < tries:
                self.waker.sleep(self.qd["pilot_getjob_interval"])
        if len(failures) == max(1, tries) and not self.jobs_run:
            self.exit_error = errors.COMMUNICATIONFAILURE
        return []

    def job_from_file(self):
        job = self.handoff.take_job()
        if job is None:
            job = self.handoff.wait_for_job(self.qd["pilot_handoff_wait"], self.qd["pilot_handoff_poll"],
                                            self.waker.sleep, lambda: self.stop.requested)
        return job

    def exit_code(self):
        """pilot3's shell exit code for how the pilot ended."""
        if self.stop.requested:
            return errors.shell_exit_code(errors.signal_code(self.stop.signum))
        if self.exit_error:
            return errors.shell_exit_code(self.exit_error)
        if self.outbox is not None and not self.file_mode and self.outbox.entries():
            return errors.shell_exit_code(errors.COMMUNICATIONFAILURE)
        return 0


def _answered(jobs, failure):
    """A getJob answer read already, as the job loop reads one sent ahead (comm.ServerClient.begin_get_jobs)."""
    def result(timeout=None):
        if failure is not None:
            raise failure
        return jobs

    return result


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
