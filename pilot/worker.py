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

The loop is here; its parts are in the modules of the pilot's life they belong to, which Pilot brings together:
pilot.startup, pilot.getjob (the jobs in hand: getJob, ahead of time, or harvester's job file), pilot.shutdown.
"""
import collections
import logging
import os
import time

from pilot import errors, housekeeping, usage
from pilot.errors import ColdShutdown, PilotError
from pilot.getjob import JobSupply
from pilot.jobrun import JobRun
from pilot.shutdown import Shutdown
from pilot.signals import StopState, Waker
from pilot.startup import Startup

log = logging.getLogger("pilot")


class Pilot(Startup, JobSupply, Shutdown):
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
        except ColdShutdown:  # logged here: the signal handler that raised it writes nothing
            log.error("got %s again: cold shutdown", self.stop.name)
        except Exception:
            log.exception("unexpected pilot error")
            self.exit_error = errors.UNKNOWNEXCEPTION
        finally:
            self.shutdown()
        return self.exit_code()

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

    def hand_over_held(self):
        """The job whose payload ended last to the wrap-up thread (on a cold stop: its final to the outbox)."""
        run, self.held = self.held, None
        if run is None:
            return
        if self.stop.cold:
            run.spool_final()
        else:
            self.wrapup.put(run)

    def remaining_time(self):
        """Seconds a new job may run: the pilot's end minus the stage-out reserve."""
        return self.deadline - time.monotonic() - self.qd["pilot_stageout_reserve"]


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
