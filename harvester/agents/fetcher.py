"""The job fetcher (push mode: OneToOne, ManyToOne): keep up to nQueueLimitJob jobs held for each queue.

Jobs are acquired in bulk with this harvester's id, stored as held jobs, and bound to workers by the submitter.
A queue that is offline, paused or backing off fetches nothing.
"""
import json
import logging

from harvester import models, pilots
from harvester.agents.base import Agent

log = logging.getLogger(__name__)


class Fetcher(Agent):
    name = "fetcher"

    def run_once(self, now):
        self.fetched = 0
        self.each_queue(now, lambda queue: self.fetch(queue, now))
        if self.fetched:
            self.ctx.wake("adjuster")
        return self.fetched

    def fetch(self, queue, now):
        if queue.mapType == "NoJob" or queue.status == "offline":
            return
        limit = queue.limits.nQueueLimitJob or 0
        waiting = (models.HeldJob.select()
                   .where(models.HeldJob.queue == queue.name, models.HeldJob.status == "fetched").count())
        wanted = limit - waiting
        if wanted <= 0:
            return
        jobs = self.ctx.server.acquire_jobs(queue.name, wanted, pilots.job_label(queue),
                                            cores=queue.resources.corecount, memory=queue.resources.maxrss,
                                            walltime=pilots.worker_walltime(queue) - pilots.WALLTIME_MARGIN_S)
        with models.database.atomic():
            for job in jobs:
                models.HeldJob.insert(panda_id=int(job["PandaID"]), queue=queue.name,
                                      attempt_nr=int(job.get("attemptNr") or 0), definition=json.dumps(job),
                                      status="fetched", fetched_time=now).on_conflict_ignore().execute()
        if jobs:
            log.info("queue %s: fetched %d jobs (%s)", queue.name, len(jobs),
                     ", ".join(str(job["PandaID"]) for job in jobs[:10]) + (" ..." if len(jobs) > 10 else ""))
        self.fetched += len(jobs)
        self.queue_succeeded(queue.name)
