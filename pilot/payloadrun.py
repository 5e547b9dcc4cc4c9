"""A job's payload: made (program, command line, environment), started, watched until it exits or is killed (limits,
heartbeats, server commands, signals), made sure to be gone, and what it left checked (exit code, job report,
outputs).

Part of jobrun.JobRun, after the stage-in (pilot.staging) and before the stage-out; the process tree itself is
pilot.payload's, the limits pilot.monitor's.
"""
import logging
import os
import signal
import time

from pilot import errors, payload, report
from pilot.errors import PilotError
from pilot.monitor import Monitor

log = logging.getLogger(__name__)


class PayloadRun:
    """The payload steps of jobrun.JobRun (``self`` is the JobRun)."""

    def forget_payload(self):
        """A payload made ahead that will not start: its output files closed."""
        if self.payload is not None and self.payload.proc is None:
            self.payload.close_outputs()
            self.payload = None

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
