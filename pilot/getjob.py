"""Where the pilot's next jobs come from: its getJob over HTTP (several jobs when they are short, the next getJob
sent ahead and its answer read as soon as it comes, the next job in hand made ready while a payload runs), or
harvester's job file in push and file modes.

Part of worker.Pilot; how many jobs a getJob asks for and when the next one goes out is described in pilot.worker.
"""
import logging
import math
import select
import time

from pilot import comm, errors, housekeeping, node
from pilot.errors import PilotError
from pilot.jobdata import Job
from pilot.jobrun import JobRun

log = logging.getLogger("pilot")


class JobSupply:
    """The jobs in hand of worker.Pilot (``self`` is the Pilot)."""

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


def _answered(jobs, failure):
    """A getJob answer read already, as the job loop reads one sent ahead (comm.ServerClient.begin_get_jobs)."""
    def result(timeout=None):
        if failure is not None:
            raise failure
        return jobs

    return result
