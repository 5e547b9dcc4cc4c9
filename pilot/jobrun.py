"""One job on the worker node, from its definition to the acknowledged final update.

``JobRun.execute()`` reads like the protocol: prepare the job directory, report ``starting`` before a stage-in that
may take a while (in file and push modes always, as pilot3; a job from the pilot's own getJob without inputs, or
whose inputs arrive within ``pilot_running_delay``, sends none: its first report is ``running`` after that delay,
or its final; unless that report would come later than the lost-heartbeat timeout, see ``report_if_late``), stage
in, start the payload, watch it (limits, the ``running`` report once
it has run ``pilot_running_delay`` s, heartbeats, server commands, signals) until it exits or is killed, check its
outputs, stage out outputs and the log, send the final update (or spool it). The first error raised anywhere is
the one reported (pilot3's rule); later steps still run so the log always goes out.
"""
import json
import logging
import os
import re
import shutil
import signal
import time

from pilot import bulklogs, copytools, errors, payload, report, wire
from pilot.errors import ColdShutdown, PilotError
from pilot.fileutil import safe_name
from pilot.monitor import Monitor

log = logging.getLogger(__name__)
STAGE_IN_RATE = 1e7  # bytes/s: a transfer's timeout grows 1 s per 10 MB (pilot.copytools; pilot3's 1151)


def _aside(callback, failure):
    """Run the job loop's ``callback`` (None: nothing to do) for it: its work ahead (the next job made ready, its
    early getJob) must never cost this job its watch or its report, so a failure is logged as ``failure``."""
    if callback is not None:
        try:
            callback()
        except Exception:  # noqa: BLE001 - see above
            log.exception(failure)

class Context:
    """What a job run needs from its pilot.

    A plain class, not a dataclass: importing dataclasses loads inspect, ast and dis, ~1.5 MB of a pilot's RSS.
    ``client`` is the comm.ServerClient (None in file mode), ``handoff`` the handoff.Handoff with
    --harvester-workdir, ``file_mode`` means no server updates (reports go through the handoff files), and
    ``pilot_deadline`` is on the monotonic clock; ``log_offset`` is where the pilot log lines not yet sent in a
    log tarball begin; ``payload_ended`` is called once a job's payload is gone, before its stage-out (the pilot
    may send its next getJob then); ``log_end`` maps a PandaID to where the next job's lines in the pilot log
    begin (set by the job loop when that job starts, so a tarball made on the wrap-up thread holds only its own
    job's lines, not the next one's start). ``guard`` is the pilot's guard.Guard (None: payloads get a
    parent-death signal); ``job_started`` is called once a job's own work begins (its stage-in, or its payload
    started), so the job loop can hand the previous job to the wrap-up thread then, not while it starts this one.
    ``pull``: the jobs come from the pilot's own getJob over HTTP, so the server knows the pilot (its pilotID),
    not from harvester's job file. ``payload_running`` is called once a job's payload runs, before the pilot waits
    for its end: the job loop does then what need not come between two payloads (the next job made ready, files
    due for harvester). While the pilot waits for a payload's end it also wakes when the descriptor
    ``answer_due()`` names becomes readable (a getJob sent ahead is answered) and calls ``answer_came()``.
    """

    def __init__(self, queue, qd, identity, pilot_dir, input_dir, output_dir, stop, waker, timing, client=None,
                 handoff=None, file_mode=False, outbox=None, pilot_deadline=None, adopter_pid=None, pilot_log="",
                 cleanup=True, payload_ended=None, guard=None, job_started=None, pull=False, payload_running=None,
                 answer_due=None, answer_came=None):
        self.queue, self.qd, self.identity, self.pilot_dir = queue, qd, identity, pilot_dir
        self.input_dir, self.output_dir, self.stop, self.waker, self.timing = input_dir, output_dir, stop, waker, timing
        self.client, self.handoff, self.file_mode, self.outbox = client, handoff, file_mode, outbox
        self.pilot_deadline, self.adopter_pid, self.pilot_log, self.cleanup = (pilot_deadline, adopter_pid,
                                                                               pilot_log, cleanup)
        self.log_offset = 0  # where in the pilot log the next job's log tarball starts
        self.payload_ended = payload_ended
        self.log_end = {}
        self.guard, self.job_started, self.payload_running = guard, job_started, payload_running
        self.answer_due, self.answer_came = answer_due, answer_came
        self.pull = pull


class JobRun:
    """The lifecycle of one job; ``execute()`` returns the final state ('finished' or 'failed')."""

    def __init__(self, job, ctx):
        self.job, self.ctx, self.qd = job, ctx, ctx.qd
        self.job_dir = os.path.join(ctx.pilot_dir, f"PandaJob_{job.panda_id}")
        self.error = None
        self.payload = None
        self.monitor = None
        self.exit_code = None
        self.job_report = None
        self.start_clocks()
        self.delivered = False
        self.started_reported = False
        self.final = None  # the final update's parameters
        self.log_store = None  # (scope, lfn) in the server's store of a log whose upload was left to the caller
        self.prepared = False  # its directory and definition made ahead (prepare_ahead), while another job ran
        self.prepare_error = None  # what went wrong then, raised when the job's turn comes

    def start_clocks(self):
        """The job's start time, and its lost-heartbeat clock: the server last heard of this job when its getJob
        reached it, so the clock starts there, not here (a job may wait in the pilot's hands behind another one)."""
        self.start_time = time.time()
        asked = self.ctx.timing.get(self.job.panda_id, "PILOT_PRE_GETJOB")
        self.last_heartbeat = time.monotonic() - (min(max(0.0, self.start_time - asked), 1e9) if asked else 0.0)

    # ---- the protocol -------------------------------------------------------------------------------------------
    def execute(self, wrap_up=None):
        """Run the job through every step; return its final state.

        With ``wrap_up`` (a pilot.wrapup.WrapUp), the job is handed to it once its payload has ended: its stage-out
        and final update happen on the wrap-up thread while the pilot starts its next payload, and the state
        returned is the one known then (the stage-out may still fail the job).
        """
        self.run_to_payload_end()
        if wrap_up is not None:
            wrap_up.put(self)
            return self.state
        try:
            self.wrap_up()
            self.final_update()
        except ColdShutdown:
            self.cold_stop()
            raise
        return self.state

    def run_to_payload_end(self):
        """Everything up to the payload's end: prepare, stage in, run and watch the payload, check its outputs."""
        log.info("job %s", self.job.summary())
        if self.prepared:
            self.start_clocks()  # made ready while another job ran, before its getJob was marked
        try:
            if not self.prepared:
                self.prepare()
            elif self.prepare_error is not None:
                raise self.prepare_error
            if self.job.inputs:  # pilot3 reports starting before the stage-in; without one, see run_payload
                self.tell_job_started()
                if not self.ctx.pull or not self.quick_stage_in():  # else reported as a job without inputs
                    breach = self.report_starting()
                    if breach is not None:
                        self.fail(breach)
            for step in (self.stage_in, self.run_payload, self.check_outputs):
                if self.error is None and self.ctx.stop.requested:
                    self.fail(PilotError(errors.signal_code(self.ctx.stop.signum), f"pilot got {self.ctx.stop.name}"))
                if self.error is None:
                    step()
        except PilotError as exc:
            self.fail(exc)
        except ColdShutdown:
            self.cold_stop()
            raise
        except Exception as exc:  # a pilot bug must still end in a report
            log.exception("unexpected error in job %s", self.job.panda_id)
            self.fail_unexpected(exc)
        try:
            self.ensure_payload_gone()
            self.tell_payload_ended()
            self.tell_job_started()  # a job that never started its payload: the previous one is not held longer
        except ColdShutdown:
            self.cold_stop()
            raise

    def wrap_up(self, defer_log=False):
        """After the payload: stage-out of outputs and log, the final update's parameters (``self.final``), the job
        directory removed. Runs on the wrap-up thread over HTTP, in the job loop otherwise. With ``defer_log`` a
        log bound for the server's store is left to the caller (pilot.wrapup: several jobs' logs in one request):
        True then (``self.log_store`` says where it goes), and its upload and :meth:`conclude` follow."""
        if self.stage_out(defer_log):
            return True
        self.conclude()
        return False

    def conclude(self):
        """The final update's parameters once every file is out (the log's outcome decided the state)."""
        self.ctx.log_end.pop(self.job.panda_id, None)  # used by the log tarball, if the job has one
        self.final = self.final_params()
        if self.ctx.handoff is not None and not self.ctx.file_mode:
            # over HTTP harvester follows the newest job in worker_attributes.json; the final itself goes to the
            # server or the outbox, so no per-job file (nor its fsync) for each short job
            self.ctx.handoff.write_attributes(self.final, own_file=False)
            self.ctx.outbox.drop_heartbeat(self.job.panda_id)  # the final update (or its entry) supersedes it
        self.remove_job_dir()

    def give_back(self, why, wrap_up=None):
        """A job fetched but never to be run: its final update says why at once (the server may retry it); no
        directory (one made ahead is removed), no payload, no log."""
        self.fail(why)
        if self.prepared:
            self.forget_payload()
            self.remove_job_dir()
        if self.ctx.stop.cold and not self.ctx.file_mode:
            self.spool_final()
        elif wrap_up is not None:
            wrap_up.put(self)
        else:
            self.final_update()
        return self.state

    def fail_unexpected(self, exc):
        self.fail(PilotError(errors.UNKNOWNEXCEPTION, f"{type(exc).__name__}: {exc}"))

    def tell_job_started(self):
        callback, self.ctx.job_started = self.ctx.job_started, None  # once
        if callback is not None:
            callback()

    def tell_payload_running(self):
        _aside(self.ctx.payload_running, "the work done while the payload runs failed")

    def tell_payload_ended(self):
        _aside(self.ctx.payload_ended, "fetching the next job early failed")

    @property
    def state(self):
        return "finished" if self.error is None else "failed"

    def fail(self, exc):
        """Record an error; only the first one is reported."""
        if self.error is None:
            self.error = exc
            log.error("job %s failed: %s", self.job.panda_id, exc)
        else:
            log.warning("job %s: further error (not reported): %s", self.job.panda_id, exc)

    # ---- steps --------------------------------------------------------------------------------------------------
    def prepare_ahead(self):
        """The job's directory and definition made now, while the previous job's payload runs, so that only the
        payload's start comes between that payload's end and this one's; an error is kept for the job's turn. For a
        job without inputs whose program is not downloaded, its payload too (command, environment, output files):
        anything wrong with it is left for its turn, which makes it again and reports the error in its place."""
        self.prepared = True
        try:
            self.prepare()
        except PilotError as exc:
            self.prepare_error = exc
            return
        if not self.job.inputs and not re.match(r"^https?://", self.job.transformation):
            try:
                self.payload = self.new_payload()
                self.payload.open_outputs()
            except (PilotError, OSError):
                self.forget_payload()

    def forget_payload(self):
        """A payload made ahead that will not start: its output files closed."""
        if self.payload is not None and self.payload.proc is None:
            self.payload.close_outputs()
            self.payload = None

    def prepare(self):
        try:
            os.makedirs(self.job_dir, mode=0o770)
        except OSError as exc:
            raise PilotError(errors.MKDIR, f"cannot create {self.job_dir}: {exc}") from None
        # a plain write: the directory is new and the pilot's own, so no reader can see the file half-written;
        # compact JSON in one write (indented and sorted it cost a short job's loop 2-3 times as much)
        with open(os.path.join(self.job_dir, "job_definition.json"), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.job.raw, separators=(",", ":"), default=str))
        self.job.validate()

    def stage_in(self):
        if not self.job.inputs:
            return
        self.ctx.timing.mark(self.job.panda_id, "PILOT_PRE_STAGEIN")
        tool = self.qd.copytool("pr")
        try:
            copytools.stage_in(self.job, self.job_dir, tool, self.ctx.input_dir, self.qd["input_url"],
                               self.ctx.client, self.qd["pilot_stagein_timeout"], self.qd["maxinputsize"])
        except OSError as exc:
            raise PilotError(errors.STAGEINFAILED, f"stage-in with {tool}: {exc}") from None
        finally:
            self.ctx.timing.mark(self.job.panda_id, "PILOT_POST_STAGEIN")

    def quick_stage_in(self):
        """Whether the inputs arrive within pilot_running_delay at the rate the stage-in's timeout allows (10 MB/s,
        pilot.copytools): each declares its size and they total at most that many bytes. Such a job from the
        pilot's own getJob sends no ``starting`` before its stage-in (one update and one state change less per
        job); it is reported as a job without inputs is, and :meth:`report_if_late` still sends ``starting`` if
        the stage-in was slow after all. A job harvester acquired (push mode) still sends it: the server knows no
        pilot of it, so only this report tells it the job is alive."""
        budget = self.qd["pilot_running_delay"] * STAGE_IN_RATE
        return all(spec.fsize for spec in self.job.inputs) and sum(spec.fsize for spec in self.job.inputs) <= budget

    def report_starting(self):
        """The ``starting`` update, once per job; the breach when its answer says kill."""
        if not self.started_reported:
            self.started_reported = True
            return self.command_breach(self.send_update("starting"))
        return None

    def report_if_late(self):
        """Before the payload: ``starting`` (again, if it was sent before the stage-in) when the next report
        (``running`` after pilot_running_delay) would reach the server later than pilot_lost_heartbeat_timeout
        after the last one it acknowledged, or after the job's getJob if none (it waited in hand behind a long job,
        its stage-in or getJob answer was slow). By then the server may have failed it and given a new attempt to
        another pilot (its watchdog fails a sent job once the pilot that took it has been silent that long, a
        starting one once the job has), so the answer says whether it is still this pilot's to run; with none, a
        job past the timeout is not run. The breach, or None to go on."""
        lost_after = self.qd["pilot_lost_heartbeat_timeout"]
        if self.ctx.file_mode or not lost_after:
            return None
        if time.monotonic() - self.last_heartbeat + max(0.0, self.qd["pilot_running_delay"]) < lost_after:
            return None
        self.started_reported = True
        breach = self.command_breach(self.send_update("starting"))
        if breach is None and time.monotonic() - self.last_heartbeat > lost_after:
            breach = PilotError(errors.COMMUNICATIONFAILURE, f"no report on the job reached the server within "
                                                             f"{lost_after:.0f} s of its getJob: not started")
        return breach

    def new_payload(self):
        """The payload (not started): its program (downloaded when it is a URL), command line and environment."""
        ctx = self.ctx
        local_dirs = ([ctx.handoff.directory] if ctx.handoff else []) + ([ctx.input_dir] if not ctx.client else [])
        executable = payload.transformation(self.job, self.job_dir, ctx.client.download if ctx.client else None,
                                            local_dirs, self.qd["trf_url_prefixes"])
        argv = payload.command(executable, self.job.job_pars)
        env = payload.environment(self.job, ctx.queue, self.job_dir, self.job.core_count)
        if ctx.client and ctx.client.token_file and "PANDA_AUTH_TOKEN" not in env:
            # prun's runGen fetches the user's sandbox from the server with the pilot's token (as under pilot3)
            env["PANDA_AUTH_TOKEN"] = os.path.abspath(ctx.client.token_file)
        return payload.Payload(argv, self.job_dir, env, ctx.adopter_pid, ctx.guard)

    def run_payload(self):
        ctx = self.ctx
        if self.payload is None:  # else made ahead (prepare_ahead)
            self.payload = self.new_payload()
        late = self.report_if_late()
        if late is not None:
            raise late
        ctx.timing.mark(self.job.panda_id, "PILOT_PRE_PAYLOAD")
        self.payload.start()
        self.tell_job_started()
        self.monitor = Monitor(self.job, self.qd, self.job_dir, self.payload, ctx.pilot_deadline, ctx.handoff)
        # over HTTP no starting report: a job that ends within pilot_running_delay goes sent -> finished in one
        # report, a longer one is reported running then (a kill command reaches it in that answer and the
        # heartbeats'); in file mode the report is the handoff files harvester follows, and costs no round trip
        breach, delay = None, self.qd["pilot_running_delay"]
        if ctx.file_mode:
            breach = self.report_starting()
        elif ctx.handoff is not None:
            ctx.handoff.touch_heartbeat()
        if breach is None and delay <= 0:
            breach = self.command_breach(self.send_update("running"))
        self.tell_payload_running()
        if breach is None:
            breach = self.watch(first_report=delay)
        if breach is not None:
            self.fail(breach)
            self.payload.kill(self.qd["pilot_kill_grace"])
        ctx.timing.mark(self.job.panda_id, "PILOT_POST_PAYLOAD")
        if self.payload.poll() is None or self.payload.tree.alive():
            log.warning("payload left processes behind: %s; killing them", self.payload.tree.alive())
            self.payload.kill(self.qd["pilot_kill_grace"])
        self.after_payload()

    def ensure_payload_gone(self):
        """Whatever happened above, no process of the payload outlives this point; then the guard lets it go."""
        self.forget_payload()  # made ahead, never started (a step before it failed)
        if self.payload is not None and self.payload.tree is not None:
            if self.payload.poll() is None or self.payload.tree.alive():
                log.warning("payload of job %s still running after an error; killing it", self.job.panda_id)
                self.payload.kill(self.qd["pilot_kill_grace"])
            if self.payload.poll() is not None and not self.payload.tree.alive():
                self.payload.release()

    def watch(self, first_report=0.0):
        """Wait for the payload to exit, checking limits and sending heartbeats; the breach to kill it for.

        The first "running" report goes out ``first_report`` s after the start (none when it is 0: it was sent
        already), the next ones every heartbeat interval: a payload that ends sooner is never reported running,
        which spares a short job one of its four reports."""
        interval, beat = self.qd["pilot_monitor_interval"], self.qd["pilot_heartbeat_interval"]
        now = time.monotonic()
        next_check, next_beat = now + min(interval, 1.0), now + (min(first_report, beat) if first_report > 0 else beat)
        while self.payload.poll() is None:  # woken at the payload's exit (its pidfd; SIGCHLD without one)
            now = time.monotonic()
            if self.ctx.stop.requested:
                return PilotError(errors.signal_code(self.ctx.stop.signum), f"pilot got {self.ctx.stop.name}")
            if now >= next_check:
                next_check = now + interval
                breach = self.monitor.check()
                if breach:
                    return breach
            if now >= next_beat:
                next_beat = now + beat
                breach = self.heartbeat()
                if breach:
                    return breach
            answer = self.ctx.answer_due() if self.ctx.answer_due is not None else None
            self.payload.wait(min(next_check, next_beat) - time.monotonic(), self.ctx.waker, answer)
            if answer is not None:
                try:
                    self.ctx.answer_came()
                except Exception:  # the next jobs' early read must never cost this job its watch
                    log.exception("reading the getJob sent ahead failed")
        return None

    def heartbeat(self):
        """A running update with the current metrics; the breach when the server says kill or is lost."""
        command = self.send_update("running")
        breach = self.command_breach(command)
        lost_after = self.qd["pilot_lost_heartbeat_timeout"]
        if breach is None and lost_after and time.monotonic() - self.last_heartbeat > lost_after:
            breach = PilotError(errors.COMMUNICATIONFAILURE, f"no heartbeat reached the server for {lost_after:.0f} s")
        return breach

    def command_breach(self, command):
        if command in (wire.TOBEKILLED, wire.SOFTKILL):
            return PilotError(errors.PANDAKILL, f"the server asked to kill the job ({command})")
        if command not in (None, "NULL", ""):
            log.info("server command %r ignored (not supported by this pilot)", command)
        return None

    def after_payload(self):
        code = self.payload.returncode
        self.exit_code = 128 - code if code is not None and code < 0 else code
        self.job_report = report.read_job_report(self.job_dir)
        log.info("payload of job %s exited with %s", self.job.panda_id, self.exit_code)
        if self.error is None and code != 0:
            what = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else \
                f"exited with {code}"
            self.fail(PilotError(errors.PAYLOADEXECUTIONFAILURE, f"payload {what}"))

    def check_outputs(self):
        guids = report.report_outputs(self.job_report)
        for spec in self.job.outputs:
            path = os.path.join(self.job_dir, spec.lfn)
            if not os.path.isfile(path):
                if spec.lfn in self.job.allow_no_output:
                    log.info("output %s not produced, allowed by allowNoOutput", spec.lfn)
                    continue
                self.fail(PilotError(errors.MISSINGOUTPUTFILE, f"output {spec.lfn} was not produced"))
            elif os.path.getsize(path) == 0:
                self.fail(PilotError(errors.EMPTYOUTPUTFILE, f"output {spec.lfn} is empty"))
            else:
                spec.path = path
                spec.guid = guids.get(spec.lfn, spec.guid)

    def stage_out(self, defer_log=False):
        """Outputs and log out; True when the log's upload is left to the caller (``defer_log``, see wrap_up)."""
        ctx = self.ctx
        ctx.timing.mark(self.job.panda_id, "PILOT_PRE_STAGEOUT")
        timeout = self.qd["pilot_stagein_timeout"]
        http = {"url_template": self.qd["output_url"], "client": ctx.client, "tries": self.qd["pilot_update_tries"],
                "backoff": self.qd["pilot_update_backoff"], "sleep": ctx.waker.sleep, "panda_id": self.job.panda_id}
        if self.error is None:
            for spec in self.job.outputs:
                if spec.path:
                    try:
                        copytools.stage_out(spec, self.qd.copytool("pw"), ctx.output_dir, timeout, **http)
                    except PilotError as exc:
                        self.fail(exc)
        spec = self.job.log
        if spec and not (safe_name(spec.lfn) and (not spec.scope or safe_name(spec.scope))):
            log.error("log file name %r / scope %r is not a plain name: no log tarball", spec.lfn, spec.scope)
        elif spec and os.path.isdir(self.job_dir):
            try:
                # the pilot log since the previous job's tarball, up to the next job's start when that has begun
                # meanwhile: each line goes out once, with its job
                end = ctx.log_end.pop(self.job.panda_id, None)
                if end is None:
                    end = os.path.getsize(ctx.pilot_log) if ctx.pilot_log and os.path.isfile(ctx.pilot_log) else 0
                spec.path, spec.fsize, spec.adler32 = copytools.log_tarball(
                    self.job, self.job_dir, os.path.join(ctx.pilot_dir, spec.lfn), [(ctx.pilot_log, ctx.log_offset, end)])
                ctx.log_offset = max(ctx.log_offset, end)
                if defer_log and self.qd.copytool("pl") == "http":
                    self.log_store = bulklogs.bulk_log_path(spec, http["url_template"], ctx.client)
                    if self.log_store is not None:
                        return True
                copytools.stage_out(spec, self.qd.copytool("pl"), ctx.output_dir, timeout, measured=True, **http)
            except PilotError as exc:
                self.fail(exc)
        ctx.timing.mark(self.job.panda_id, "PILOT_POST_STAGEOUT")
        return False

    # ---- reporting ----------------------------------------------------------------------------------------------
    def send_update(self, state):
        """A starting/running update (server or attributes file); returns the server's command or None."""
        params = report.update(self.job, state, self.ctx.identity)
        if self.monitor:
            params.update(self.monitor.metrics())
        handoff = self.ctx.handoff
        if handoff is not None:  # harvester follows the job from these files in pull mode too
            handoff.touch_heartbeat()
            handoff.write_attributes(params)
        if self.ctx.file_mode:
            self.last_heartbeat = time.monotonic()
            return None
        # one try: the next heartbeat is the retry, and the payload's watch must not stall on a slow server
        reply, error = self.ctx.client.update_job_reliably(params, 1, 0.0, self.ctx.waker.sleep)
        if reply is None:
            if error is not None and not error.transient and error.reply.get("command") == wire.TOBEKILLED:
                return wire.TOBEKILLED
            if handoff is not None and (error is None or error.transient):
                self.ctx.outbox.put_heartbeat(params)  # harvester may forward it while the node is cut off
            return None
        if handoff is not None:
            self.ctx.outbox.drop_heartbeat(self.job.panda_id)
        self.last_heartbeat = time.monotonic()
        return reply.get("command")

    def final_params(self):
        params = report.update(self.job, self.state, self.ctx.identity)
        if self.monitor:
            params.update(self.monitor.metrics())
        exe_code, exe_diag = report.exit_info(self.job_report)
        params.update({
            "transExitCode": self.exit_code if self.exit_code is not None else 0,
            "pilotErrorCode": self.error.code if self.error else 0,
            "pilotErrorDiag": self.error.diag[:500] if self.error else "",
            "exeErrorCode": exe_code if exe_code is not None else (self.exit_code or 0),
            "exeErrorDiag": exe_diag or "",
            "startTime": report.utc(self.start_time), "endTime": report.utc(time.time()),
            "pilotTiming": self.ctx.timing.pilot_timing(self.job.panda_id),
        })
        files = self.job.outputs + ([self.job.log] if self.job.log else [])
        if any(spec.surl for spec in files):
            params["xml"] = report.fileinfo(files)
        if self.job_report:
            params["metaData"] = report.metadata(self.job_report)
        return params

    def final_update(self):
        """The final update sent here (file and push modes, and give-backs without a wrap-up thread): over HTTP
        with retries and backoff, else into the outbox; or the handoff files."""
        ctx = self.ctx
        params = self.final = self.final or self.final_params()
        ctx.timing.mark(self.job.panda_id, "PILOT_PRE_FINAL_UPDATE")
        if ctx.file_mode:
            self.write_handoff_final(params)
            self.delivered = True
            ctx.timing.mark(self.job.panda_id, "PILOT_POST_FINAL_UPDATE")
            return
        if ctx.handoff is not None:
            ctx.handoff.write_attributes(params)
            ctx.outbox.drop_heartbeat(self.job.panda_id)
        tries = 1 if ctx.stop.requested else self.qd["pilot_update_tries"]
        self.settled(*ctx.client.update_job_reliably(params, tries, self.qd["pilot_update_backoff"], ctx.waker.sleep,
                                                     lambda: ctx.stop.requested))

    def settled(self, reply, error):
        """What became of the final update: delivered (``reply``), refused for good (logged), or not delivered
        (spooled to the outbox for a later replay)."""
        if reply is not None:
            self.delivered = True
            log.info("final update of job %s (%s) acknowledged%s", self.job.panda_id, self.state,
                     " (already done)" if reply.get("alreadyDone") else "")
        elif error is not None and not error.transient:
            log.error("server refused the final update of job %s: %s", self.job.panda_id, error)
        else:
            self.ctx.outbox.put(self.final)
        self.ctx.timing.mark(self.job.panda_id, "PILOT_POST_FINAL_UPDATE")

    def spool_final(self):
        """Cold stop: the final update (as it stands) into the outbox, no network."""
        if self.final is None:  # not wrapped up yet: no stage-out now
            self.fail(PilotError(errors.signal_code(self.ctx.stop.signum), f"pilot got {self.ctx.stop.name} twice"))
            self.final = self.final_params()
        if not self.delivered:
            self.ctx.outbox.put(self.final)

    def write_handoff_final(self, params):
        files = self.job.outputs + ([self.job.log] if self.job.log else [])
        job_report = report.shrink(self.job_report) if self.job_report else {
            "exitCode": params["transExitCode"], "exitMsg": params["pilotErrorDiag"] or "OK",
            "pilotErrorCode": params["pilotErrorCode"]}
        self.ctx.handoff.write_final(self.job.panda_id, params, job_report, report.event_status(files))

    def cold_stop(self):
        """Second signal: kill everything now, spool the final update without network, no stage-out."""
        if self.payload and self.payload.tree:
            self.payload.tree.signal(signal.SIGKILL)
            self.payload.poll()
        self.fail(PilotError(errors.signal_code(self.ctx.stop.signum), f"pilot got {self.ctx.stop.name} twice"))
        params = self.final_params()
        if self.ctx.file_mode:
            self.write_handoff_final(params)
        elif not self.delivered:
            self.ctx.outbox.put(params)
            if self.ctx.handoff is not None:
                self.ctx.handoff.write_attributes(params)
                self.ctx.outbox.drop_heartbeat(self.job.panda_id)

    def remove_job_dir(self):
        """The job's directory, and its log tarball once the server holds it (a pilot running thousands of short
        jobs would otherwise keep them all); a tarball kept on the node (copied, or for harvester) stays."""
        if not self.ctx.cleanup:
            return
        if os.path.isdir(self.job_dir):
            shutil.rmtree(self.job_dir, ignore_errors=True)
        spec = self.job.log
        if spec and spec.path and (spec.surl or "").startswith(("http://", "https://")):
            try:
                os.unlink(spec.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the uploaded log tarball %s: %s", spec.path, exc)
