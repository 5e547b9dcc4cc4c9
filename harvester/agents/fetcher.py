"""The job fetcher (push mode: OneToOne, ManyToOne): keep up to nQueueLimitJob jobs held for each queue.

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

from harvester import models, pilots
from harvester.agents.base import Agent
from harvester.errors import ServerError

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
        limit = queue.limits.nQueueLimitJob or 0
        waiting = (models.HeldJob.select()
                   .where(models.HeldJob.queue == queue.name, models.HeldJob.status == "fetched").count())
        wanted = limit - waiting
        if wanted <= 0:
            return
        try:
            jobs = self.ctx.server.acquire_jobs(queue.name, wanted, pilots.job_label(queue),
                                                cores=queue.resources.corecount, memory=queue.resources.maxrss,
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


def hold(queue, jobs, now):
    """Record fetched jobs as held by this harvester, in one transaction (a job already held is kept as it is)."""
    with models.database.atomic():
        for job in jobs:
            models.HeldJob.insert(panda_id=int(job["PandaID"]), queue=queue.name,
                                  attempt_nr=int(job.get("attemptNr") or 0), definition=json.dumps(job),
                                  status="fetched", fetched_time=now).on_conflict_ignore().execute()
