"""The pilot's end: the job whose payload ended last wrapped up, jobs fetched but not run given back, the wrap-up
thread finished, the outbox replayed, harvester told, the pilot's figures recorded, and its shell exit code.

Part of worker.Pilot (``Pilot.work()`` always ends here).
"""
import collections
import logging
import os

from pilot import comm, errors, node
from pilot.errors import ColdShutdown, PilotError
from pilot.jobdata import Job
from pilot.jobrun import JobRun

log = logging.getLogger("pilot")


class Shutdown:
    """The end of worker.Pilot (``self`` is the Pilot)."""

    def shutdown(self):
        """Give back the jobs in hand, finish the wrap-up, replay what is left in the outbox, tell harvester the
        pilot is done, record the pilot's figures."""
        if self.timing is None:
            return
        for step in (self.hand_over_held, self.give_back_in_hand, self.finish_wrapup, self.remove_spare_dirs):
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
            self.handoff.close()
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

    def remove_spare_dirs(self):
        """The job directories kept for later jobs (pilot.jobdirs) removed: no job will take them now."""
        if self.ctx is not None:
            self.ctx.job_dirs.close()

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

    def exit_code(self):
        """pilot3's shell exit code for how the pilot ended."""
        if self.stop.requested:
            return errors.shell_exit_code(errors.signal_code(self.stop.signum))
        if self.exit_error:
            return errors.shell_exit_code(self.exit_error)
        if self.outbox is not None and not self.file_mode and self.outbox.entries():
            return errors.shell_exit_code(errors.COMMUNICATIONFAILURE)
        return 0
