"""A job's files in and out: its inputs staged in before the payload, its outputs and log tarball staged out after
it, its directory removed at the end.

Part of jobrun.JobRun (its steps in the order a job takes them: pilot.jobrun, then this stage-in, pilot.payloadrun,
this stage-out, pilot.jobreports); the copy itself is pilot.copytools'.
"""
import logging
import os

from pilot import bulklogs, copytools, errors, tarball
from pilot.errors import PilotError
from pilot.fileutil import safe_name

log = logging.getLogger(__name__)
STAGE_IN_RATE = 1e7  # bytes/s: a transfer's timeout grows 1 s per 10 MB (pilot.copytools; pilot3's 1151)


class Staging:
    """The stage-in and stage-out steps of jobrun.JobRun (``self`` is the JobRun)."""

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
                tool = self.qd.copytool("pl")
                # uploaded from memory, never a file, unless it has to stay on the node (no cleanup: kept for a
                # look; copy and mv need a file) or is large (tarball.Spool)
                memory_limit = tarball.MEMORY_MAX if tool == "http" and ctx.cleanup else 0
                spool = copytools.log_tarball(self.job, self.job_dir, os.path.join(ctx.pilot_dir, spec.lfn),
                                              [(ctx.pilot_log, ctx.log_offset, end)], memory_limit)
                spec.fsize, spec.adler32 = spool.size, spool.adler32
                spec.path, spec.memory = (spool.path, None) if spool.on_disk else (None, spool)
                ctx.log_offset = max(ctx.log_offset, end)
                if defer_log and tool == "http":
                    self.log_store = bulklogs.bulk_log_path(spec, http["url_template"], ctx.client)
                    if self.log_store is not None:
                        return True
                copytools.stage_out(spec, tool, ctx.output_dir, timeout, measured=True, **http)
            except PilotError as exc:
                self.fail(exc)
            self.settle_log()
        ctx.timing.mark(self.job.panda_id, "PILOT_POST_STAGEOUT")
        return False

    def settle_log(self):
        """The log tarball held in memory, once its stage-out is over: let go when the server holds it, else written
        to its file in the pilot directory, kept on the node as a tarball whose upload failed always was (the
        job's final says it failed; the final itself goes to the outbox when it cannot be sent)."""
        spec = self.job.log
        memory = spec.memory if spec else None
        if memory is None:
            return
        spec.memory = None
        if (spec.surl or "").startswith(("http://", "https://")):
            memory.drop()
            return
        try:
            spec.path = memory.keep()
            log.info("log tarball %s not uploaded: kept at %s (%d bytes, adler32 %s)", spec.lfn, spec.path,
                     memory.size, memory.adler32)
        except OSError as exc:
            log.warning("log tarball %s not uploaded, and it cannot be kept on the node: %s", memory.path, exc)

    def payload_gone(self):
        """Whether none of the job's processes can be left: its payload never started, or it was reaped and its
        tree found gone by a subreaper pilot (proctree.ProcessTree.gone; never without a subreaper)."""
        run = self.payload
        if run is None or run.proc is None:
            return True
        return run.returncode is not None and run.tree is not None and run.tree.gone

    def release_job_dir(self):
        """The job's directory removed, or kept for a later job (pilot.jobdirs), once: as soon as nothing of the
        job needs it (its outputs out and its log tarball made), so that a pilot whose finals and logs wait to go
        several in one request has a spare ready for its next job."""
        if self.ctx.cleanup and not self.dir_released:
            self.dir_released = True
            self.ctx.job_dirs.release(self.job_dir, self.payload_gone())

    def remove_job_dir(self):
        """The job's directory (kept, emptied, for a later job when it may be: pilot.jobdirs), and its log tarball
        once the server holds it (a pilot running thousands of short jobs would otherwise keep them all); a tarball
        kept on the node (copied, or for harvester) stays."""
        if not self.ctx.cleanup:
            return
        self.release_job_dir()
        spec = self.job.log
        if spec and spec.path and (spec.surl or "").startswith(("http://", "https://")):
            try:
                os.unlink(spec.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the uploaded log tarball %s: %s", spec.path, exc)
