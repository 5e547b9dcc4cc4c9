"""A job's reports: ``starting`` (before a stage-in, or again when the job is late), ``running`` and heartbeats, the
server's commands in their answers, the final update (sent, spooled to the outbox, or the handoff files), and the
cold stop's spooled final.

Part of jobrun.JobRun; the reports' parameters are built by pilot.report, sent by pilot.comm.
"""
import logging
import signal
import time

from pilot import errors, report, wire
from pilot.errors import PilotError

log = logging.getLogger(__name__)


class JobReports:
    """The reporting of jobrun.JobRun (``self`` is the JobRun)."""

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
