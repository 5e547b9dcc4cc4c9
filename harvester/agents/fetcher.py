"""The job fetcher (push mode: OneToOne, ManyToOne): keep up to nQueueLimitJob jobs held for each queue, ahead of
the workers that will run them (fetched, not yet in an access point).

The limit may be a percentage of the jobs running (nQueueLimitJobRatio, floor nQueueLimitJobMin, ceiling
nQueueLimitJobMax), and the cores of the held jobs may be capped too (nQueueLimitJobCores, or a percentage of the
cores of the running jobs): see :mod:`harvester.limits`. Running jobs are the held jobs whose worker runs.

Jobs are acquired in bulk with this harvester's id, stored as held jobs, and bound to workers by the submitter.
A queue that is offline, paused or backing off fetches nothing.

A harvester stopped between the server's reply and the insert of the held jobs would leave them ``sent`` and held by
no one; so would a reply lost on the way (a timeout, a 5xx after the claim). So the first cycle of each queue after
a start, and the cycle after an acquire that may have been carried out without its answer, adopts the jobs the
server says it sent to this harvester and that it has never held (``harvester/get_sent_jobs``), before fetching
more.
"""
import json
import logging

import peewee

from harvester import db, limits, models
from harvester.handoff import pilots
from harvester.agents.base import Agent
from harvester.errors import ServerError
from harvester.states import ACTIVE, HeldJobStatus
from queueconfig import allocation

log = logging.getLogger(__name__)
SENT_PAGE = 1000  # the server's page of get_sent_jobs: a shorter page is the last


class Fetcher(Agent):
    name = "fetcher"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.adopted_queues = set()  # the queues whose sent jobs this process has already looked up

    def run_once(self, now):
        self.fetched = 0
        self.each_queue(now, lambda queue: self.fetch(queue, now))
        if self.fetched:
            self.ctx.wake("adjuster")
        return self.fetched

    def fetch(self, queue, now):
        if queue.mapType == "NoJob" or queue.status == "offline":
            return
        if queue.name not in self.adopted_queues:
            self.adopt(queue, now)
            self.adopted_queues.add(queue.name)
        wanted, why = wanted_jobs(queue)
        if wanted <= 0:
            log.debug("queue %s: no jobs fetched: %s", queue.name, why)
            return
        try:
            jobs = self.ctx.server.acquire_jobs(queue.name, wanted, pilots.job_label(queue),
                                                cores=allocation.max_job_cores(queue),
                                                memory=queue.resources.maxrss * queue.resources.max_job_nodes,
                                                walltime=pilots.worker_walltime(queue) - pilots.WALLTIME_MARGIN_S)
        except ServerError as exc:
            if exc.transient:  # the server may have claimed jobs whose answer never came: look them up next cycle
                self.adopted_queues.discard(queue.name)
            raise
        hold(queue, jobs, now)
        if jobs:
            log.info("queue %s: fetched %d jobs (%s)", queue.name, len(jobs),
                     ", ".join(str(job["PandaID"]) for job in jobs[:10]) + (" ..." if len(jobs) > 10 else ""))
        self.fetched += len(jobs)
        self.queue_succeeded(queue.name)

    def adopt(self, queue, now):
        """Hold the jobs the server sent to this harvester for ``queue`` that it never held (no held-job row, and
        never bound to a worker: the sweeper drops held-job rows of cleaned workers, never their bindings)."""
        unknown, after = [], 0
        while True:
            try:
                page = self.ctx.server.sent_jobs(queue.name, after)
            except ServerError as exc:
                if exc.transient:
                    raise  # asked again next cycle
                log.error("queue %s: cannot look up the jobs the server sent to this harvester (%s); a job sent "
                          "just before a stop waits for the server's watchdog", queue.name, exc)
                return
            ids = [int(job["PandaID"]) for job in page]
            known = {pid for (pid,) in models.HeldJob.select(models.HeldJob.panda_id)
                     .where(models.HeldJob.panda_id.in_(ids)).tuples()}
            known |= {pid for (pid,) in models.JobWorker.select(models.JobWorker.panda_id)
                      .where(models.JobWorker.panda_id.in_(ids)).tuples()}
            unknown += [job for job, pid in zip(page, ids) if pid not in known]
            if len(page) < SENT_PAGE or not ids:
                break
            after = max(ids)
        if unknown:
            hold(queue, unknown, now)
            log.warning("queue %s: adopted %d jobs the server had sent to this harvester without a record here "
                        "(a stop between the server's reply and the record): %s", queue.name, len(unknown),
                        ", ".join(str(job["PandaID"]) for job in unknown[:10]) + (" ..." if len(unknown) > 10 else ""))
        self.fetched += len(unknown)


def wanted_jobs(queue):
    """How many jobs to fetch for ``queue`` now, and why in words: room under the held-job limit and, when set,
    under the held-job cores limit (a job counted with the queue's corecount)."""
    lim = queue.limits
    held_now = _sums(queue.name, models.HeldJob.status == HeldJobStatus.FETCHED.value)
    running = _sums(queue.name, models.HeldJob.status != HeldJobStatus.DONE.value,
                    models.Worker.status.in_([status.value for status in ACTIVE]))
    job_limit = limits.held_jobs(lim, running[0])
    wanted, why = (job_limit.value or 0) - held_now[0], f"{job_limit.words} - {held_now[0]} held"
    core_limit = limits.held_job_cores(lim, running[1])
    if core_limit.value is not None:
        by_cores = (core_limit.value - held_now[1]) // max(1, queue.resources.corecount)
        if by_cores < wanted:
            wanted, why = by_cores, f"({core_limit.words} - {held_now[1]} held cores) / corecount"
    return wanted, why


def _sums(queue_name, *condition):
    """(jobs, cores) of the queue's held jobs matching ``condition`` (which may name their worker)."""
    query = (models.HeldJob.select(peewee.fn.COUNT(models.HeldJob.panda_id), peewee.fn.SUM(models.HeldJob.cores))
             .join(models.Worker, peewee.JOIN.LEFT_OUTER, on=(models.Worker.worker_id == models.HeldJob.worker_id))
             .where(models.HeldJob.queue == queue_name, *condition))
    jobs, cores = query.tuples().get()
    return jobs, cores or 0


def hold(queue, jobs, now):
    """Record fetched jobs as held by this harvester (status fetched, the table's default), in one transaction (a
    job already held is kept as it is)."""
    with models.database.atomic():
        for job in jobs:
            models.HeldJob.insert(panda_id=int(job["PandaID"]), queue=queue.name,
                                  attempt_nr=int(job.get("attemptNr") or 0), definition=json.dumps(job),
                                  cores=db.job_cores(job), fetched_time=now).on_conflict_ignore().execute()
