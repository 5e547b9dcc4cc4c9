"""The pilot: start up, take jobs one after the other while time and disk allow, then shut down cleanly.

``Pilot.work()`` is the whole protocol of a pilot's life (PanDA's multi-job loop)::

    startup          work area, pilot log, signals, old-directory cleanup, queuedata, outbox replay
    loop             while another job may start (timefloor, lifetime, remaining walltime, disk, signals):
                         get a job (getJob over HTTP, or the harvester job file), run it (jobrun.JobRun)
    shutdown         outbox replay, harvester files, the exit code (pilot3's shell exit codes)

Over HTTP the next getJob goes out as soon as a job's payload has ended (when another job may start then), and
its answer is read once that job's stage-out and final update are done: the server dispatches while the pilot
stages out. When it brought a job, the final update's answer is read once that next job's payload runs (its
retries and the outbox follow from there), so that round trip overlaps the next job's start too. A job so
fetched that the pilot may not run after all (a stop signal came meanwhile) is reported failed at once with the
reason, as a job that got the signal right after its getJob would be: the server retries it, and nothing stays
dispatched to a pilot that has gone.
"""
import logging
import os
import time

from pilot import comm, errors, housekeeping, node, queuedata, usage
from pilot.errors import ColdShutdown, PilotError
from pilot.handoff import Handoff
from pilot.jobdata import Job
from pilot.jobrun import Context, JobRun
from pilot.outbox import Outbox
from pilot.report import Timing
from pilot.signals import StopState, Waker

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
        self.next_job = None  # the answer to a getJob sent early (comm.ServerClient.begin_get_job), not read yet
        self.next_job_sent = None  # when it was sent (the job's PILOT_PRE_GETJOB)
        self.no_next_job = False  # decided when the last payload ended: no other job may start
        self.unsettled = None  # the JobRun whose final update was sent and not answered yet

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
        self.load_queuedata()
        housekeeping.clean_old_pilot_dirs(opts.workdir, self.pilot_dir, self.qd["pilot_cleanup_age"])
        self.connect()
        self.ctx = self.make_context()

    def may_take_job(self):
        """Whether another job may start now; also sets the exit code when the reason is an error."""
        if self.stop.requested or self.no_next_job:
            return False
        if self.next_job is not None:
            return True  # checked when its getJob went out
        return self.room_for_job(self.jobs_run)

    def room_for_job(self, jobs_run):
        """Whether time, timefloor and disk allow one more job after ``jobs_run`` jobs (logged when not)."""
        now = time.monotonic()
        qd = self.ctx.qd
        if jobs_run and now - self.started >= qd["timefloor"] * 60:
            log.info("timefloor of %s min used up after %d jobs", qd["timefloor"], jobs_run)
            return False
        if self.remaining_time() <= 0:
            log.info("no time left for another job")
            return False
        free = housekeeping.free_space_mb(self.opts.workdir)
        if free < qd["pilot_min_disk_getjob_mb"]:
            log.error("only %.0f MB free in %s, %s MB needed for a job", free, self.opts.workdir,
                      qd["pilot_min_disk_getjob_mb"])
            self.exit_error = self.exit_error or (errors.NOLOCALSPACE if not jobs_run else None)
            return False
        return True

    def fetch_next_job(self):
        """Called when a job's payload has ended: send the next getJob now if another job may start after this
        one (its answer is read by get_job, after this job's stage-out and final update)."""
        if self.client is None or self.push_mode or self.next_job is not None or self.stop.requested:
            return
        if not self.room_for_job(self.jobs_run + 1):
            self.no_next_job = True
            return
        self.next_job_sent = time.time()
        self.next_job = self.client.begin_get_job(self.offer())

    def get_job(self):
        """The next job (a Job), or None when there is none; the getJob time is recorded."""
        if self.next_job is None:
            self.settle_final_update()  # nothing to overlap its answer with: the pilot now waits for a job
        asked = self.next_job_sent if self.next_job is not None else time.time()
        data = self.job_from_file() if self.handoff is not None and self.push_mode else self.job_from_server()
        if data is None:
            if not self.jobs_run:
                self.exit_error = self.exit_error or errors.NOJOBSINPANDA
            return None
        try:
            job = Job(data)
        except ValueError as exc:
            log.error("unusable job definition: %s", exc)
            return None
        self.timing.mark(job.panda_id, "PILOT_PRE_GETJOB", asked)
        self.timing.mark(job.panda_id, "PILOT_POST_GETJOB")
        return job

    def run(self, job):
        """Run one job to its final report, then account for it."""
        if self.handoff is not None:
            self.handoff.add_panda_id(job.panda_id)
        run = JobRun(job, self.ctx)
        cpu = usage.children_cpu()
        try:
            state = run.execute()
        finally:
            if run.unsettled:
                self.unsettled = run
            else:
                self.timing.save(done=job.panda_id)
        self.jobs_run += 1
        if self.usage is not None:
            marks = self.timing.data.get(str(job.panda_id), {})
            self.usage.add_job(job.panda_id, marks.get("PILOT_POST_PAYLOAD", 0) - marks.get("PILOT_PRE_PAYLOAD", 0),
                               usage.children_cpu() - cpu)
        log.info("job %s done: %s", job.panda_id, state)
        if run.error and run.error.code == errors.REACHEDMAXTIME and self.remaining_time() <= 0:
            self.exit_error = errors.REACHEDMAXTIME
        if self.client is not None and not self.file_mode:
            self.outbox.replay(self.client)

    def shutdown(self):
        """Replay what is left in the outbox, tell harvester the pilot is done, record the pilot's figures."""
        if self.timing is None:
            return
        for step in (self.settle_final_update, self.give_back_next_job):
            try:
                step()
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
            self.handoff.touch_kill_worker()
        self.timing.mark(0, "PILOT_END_TIME")
        self.timing.mark(0, "PILOT_PEAK_RSS_KB", node.peak_rss_kb())
        cpu = os.times()  # the pilot's own CPU seconds, and its payloads' (children it reaped)
        self.timing.mark(0, "PILOT_CPU_S", round(cpu.user + cpu.system, 3))
        self.timing.mark(0, "PILOT_PAYLOADS_CPU_S", round(cpu.children_user + cpu.children_system, 3))
        self.timing.save(now=True)
        log.info("pilot done after %d jobs, exit code %d, peak RSS %d kB", self.jobs_run, self.exit_code(),
                 node.peak_rss_kb())

    def settle_final_update(self):
        """Read the answer to the last job's final update (sent ahead; see jobrun.JobRun.final_update)."""
        run, self.unsettled = self.unsettled, None
        if run is not None:
            try:
                run.settle()
            except ColdShutdown:  # a second signal meanwhile: the update is spooled, as the job's own would be
                if not run.delivered:
                    self.outbox.put(run.final)
                raise
            self.timing.save(done=run.job.panda_id)

    def give_back_next_job(self):
        """A job fetched early that will not run: reported failed with why (the server retries it), not left
        dispatched. On a cold stop its answer is waited for only briefly and the report goes to the outbox."""
        result, self.next_job = self.next_job, None
        if result is None:
            return
        try:
            data = result(timeout=2.0 if self.stop.cold else None)
            job = Job(data) if data is not None else None
        except (comm.CommError, ValueError) as exc:
            log.warning("the getJob sent early got no usable answer: %s", exc)
            return
        if job is None:
            return
        if self.stop.requested:
            why = PilotError(errors.signal_code(self.stop.signum), f"pilot got {self.stop.name} before the job started")
        else:
            why = PilotError(self.exit_error or errors.GENERALERROR, "the pilot stopped before the job started")
        log.warning("job %s was fetched but will not run: %s", job.panda_id, why)
        if self.handoff is not None:
            self.handoff.add_panda_id(job.panda_id)
        JobRun(job, self.ctx).give_back(why)

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
                       cleanup=not opts.no_cleanup, payload_ended=self.fetch_next_job,
                       settle_previous=None if self.file_mode else self.settle_final_update)

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

    def job_from_server(self):
        tries, failures = self.qd["pilot_getjob_tries"], []
        for attempt in range(max(1, tries)):
            if self.stop.requested:
                return None
            try:
                early, self.next_job = self.next_job, None
                job = early() if early is not None else self.client.get_job(self.offer())
                if job is not None:
                    return job
                log.info("no job for this pilot (getJob %d of %d)", attempt + 1, tries)
            except comm.CommError as exc:
                log.warning("getJob failed (%d of %d): %s", attempt + 1, tries, exc)
                if exc.auth:
                    raise PilotError(errors.NOPROXY, f"the server refused the token: {exc}") from None
                failures.append(exc)
            if attempt + 1 < tries:
                self.settle_final_update()
                self.waker.sleep(self.qd["pilot_getjob_interval"])
        if len(failures) == max(1, tries) and not self.jobs_run:
            self.exit_error = errors.COMMUNICATIONFAILURE
        return None

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
