"""Steps more than one agent takes (and the command line): below the agents, so no agent imports another.

hand_over      held jobs into a pilot's access point (the submitter feeding a new worker, the monitor answering a
               pilot that asks for another job)
release_jobs   a worker given up before it ran gives its jobs back to the queue (submitter, sweeper)
end_jobs       a worker that ended no longer holds its jobs (monitor, sweeper)
kill_workers   mark workers for the sweeper (the server's KILL_WORKERS, `harvester kill`)
iso            a time as the server's text
"""
import json
import logging

from harvester import models
from harvester.handoff import pilots
from harvester.states import LIVE_VALUES, HeldJobStatus, change_held_jobs

log = logging.getLogger(__name__)


def iso(value):
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value else None


def hand_over(queue, messenger, held, fetch):
    """Put held jobs in a worker's access point (file mode: with their transformations and inputs, since the node
    cannot download them); True when the pilot's job file was written (it is never overwritten unconsumed)."""
    if not held:
        return False
    jobs = [json.loads(job.definition) for job in held]
    if pilots.file_mode(queue):
        for job in jobs:
            messenger.put_transformation(job, fetch)
            messenger.stage_in(job, queue.storage)
    if not messenger.feed_jobs(jobs):
        return False
    change_held_jobs(models.HeldJob.panda_id.in_([job.panda_id for job in held]), HeldJobStatus.FED)
    return True


def release_jobs(worker_id):
    """Jobs bound to a worker that never ran go back to the queue's unbound jobs, for the next worker."""
    change_held_jobs(models.HeldJob.worker_id == worker_id, HeldJobStatus.FETCHED, {"worker_id": None})
    models.JobWorker.delete().where(models.JobWorker.worker_id == worker_id).execute()


def end_jobs(worker_id):
    """The jobs of a worker that ended are harvester's no more: their pilot reported them, harvester queued their
    final reports, or the server fails them when it hears of the worker's end."""
    return change_held_jobs(models.HeldJob.worker_id == worker_id, HeldJobStatus.DONE)


def kill_workers(queue, worker_ids, reason, context=None):
    """Mark live workers (of a queue and/or by id) for the sweeper; returns what was done, in words."""
    if not queue and not worker_ids:
        return "refused: neither queue nor worker_ids given"
    query = models.Worker.update(kill_reason=reason).where(models.Worker.status.in_(LIVE_VALUES),
                                                           models.Worker.kill_reason.is_null())
    if queue:
        query = query.where(models.Worker.queue == queue)
    if worker_ids:
        query = query.where(models.Worker.worker_id.in_([int(i) for i in worker_ids]))
    marked = query.execute()
    if context is not None and marked:
        context.wake("sweeper")
    log.info("%d workers marked to be killed (%s)", marked, reason)
    return f"{marked} workers marked to be killed"
