"""One job on the worker node, from its definition to the acknowledged final update.

``JobRun.execute()`` reads like the protocol: prepare the job directory, report ``starting`` before a stage-in that
may take a while (in file and push modes always, as pilot3; a job from the pilot's own getJob without inputs, or
whose inputs arrive within ``pilot_running_delay``, sends none: its first report is ``running`` after that delay,
or its final; unless that report would come later than the lost-heartbeat timeout, see ``report_if_late``), stage
in, start the payload, watch it (limits, the ``running`` report once
it has run ``pilot_running_delay`` s, heartbeats, server commands, signals) until it exits or is killed, check its
outputs, stage out outputs and the log, send the final update (or spool it). The first error raised anywhere is
the one reported (pilot3's rule); later steps still run so the log always goes out.

The steps live in the modules of their part of the flow, which JobRun brings together: pilot.staging (stage-in,
stage-out), pilot.payloadrun (the payload made, started, watched, checked), pilot.jobreports (every report, the
final update, the cold stop).
"""
import json
import logging
import os
import re
import time

from pilot import errors
from pilot.errors import ColdShutdown, PilotError
from pilot.jobdirs import JobDirs, open_job_file
from pilot.jobreports import JobReports
from pilot.payloadrun import PayloadRun
from pilot.staging import Staging

log = logging.getLogger(__name__)


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
    ``job_dirs`` makes and removes the job directories (pilot.jobdirs): reused from job to job only with
    ``cleanup`` and a subreaper pilot (``adopter_pid``), which alone can know a payload's processes all gone.
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
        self.job_dirs = JobDirs(pilot_dir, reuse=cleanup and adopter_pid is not None)


class JobRun(Staging, PayloadRun, JobReports):
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
        self.dir_released = False  # its directory removed or kept for another job (release_job_dir)

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
            self.release_job_dir()  # the log tarball is made: the directory can serve another job while it goes
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

    def prepare(self):
        try:
            self.ctx.job_dirs.make(self.job_dir)
        except OSError as exc:
            raise PilotError(errors.MKDIR, f"cannot create {self.job_dir}: {exc}") from None
        # a plain write: the directory is the pilot's own and no payload runs in it yet, so no reader can see the
        # file half-written; compact JSON in one write (indented and sorted it cost a short job's loop 2-3 times
        # as much); the file of a reused directory is checked and truncated, not made again (pilot.jobdirs)
        # unbuffered (a buffered open cost an isatty ioctl and an lseek), written to the end as a buffer would
        with open(open_job_file(os.path.join(self.job_dir, "job_definition.json")), "wb", buffering=0) as handle:
            left = memoryview(json.dumps(self.job.raw, separators=(",", ":"), default=str).encode())
            while left:
                left = left[handle.write(left):]
        self.job.validate()
