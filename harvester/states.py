"""Worker states: ONE table of allowed transitions and ONE function that writes a worker's status.

A worker is one batch job that runs one pilot::

    submitted -> ready -> running -> idle -> finished | failed | cancelled | missed

``submitted`` is where every worker starts (the batch system accepted it, or the submitter is about to try);
``ready`` means the pilot asked for a job (late binding, push mode); ``idle`` a pilot between jobs. Final states
never change. A worker whose submission never succeeded becomes ``missed``.
"""
import datetime
import enum
import logging

from harvester import models
from harvester.errors import TransitionError

log = logging.getLogger(__name__)


class WorkerStatus(str, enum.Enum):
    SUBMITTED = "submitted"
    READY = "ready"
    RUNNING = "running"
    IDLE = "idle"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"

    def __str__(self):
        return self.value


FINAL = frozenset({WorkerStatus.FINISHED, WorkerStatus.FAILED, WorkerStatus.CANCELLED, WorkerStatus.MISSED})
QUEUED = frozenset({WorkerStatus.SUBMITTED, WorkerStatus.READY})  # asked for, not yet running a pilot
ACTIVE = frozenset({WorkerStatus.RUNNING, WorkerStatus.IDLE})

# The one table: status -> the statuses it may move to. A batch system may skip steps (a short pilot is seen
# submitted, then finished), so every live state may end; nothing goes back to submitted.
TRANSITIONS = {
    WorkerStatus.SUBMITTED: {WorkerStatus.READY, WorkerStatus.RUNNING, WorkerStatus.IDLE, *FINAL},
    WorkerStatus.READY: {WorkerStatus.RUNNING, WorkerStatus.IDLE, *FINAL - {WorkerStatus.MISSED}},
    WorkerStatus.RUNNING: {WorkerStatus.IDLE, WorkerStatus.FINISHED, WorkerStatus.FAILED, WorkerStatus.CANCELLED},
    WorkerStatus.IDLE: {WorkerStatus.RUNNING, WorkerStatus.FINISHED, WorkerStatus.FAILED, WorkerStatus.CANCELLED},
    WorkerStatus.FINISHED: set(), WorkerStatus.FAILED: set(), WorkerStatus.CANCELLED: set(), WorkerStatus.MISSED: set(),
}


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def allowed(old, new):
    return WorkerStatus(new) in TRANSITIONS[WorkerStatus(old)]


def change_worker_status(worker, new, reason, now=None, diag=None):
    """Move one worker to ``new``: check the table, stamp the times, write the status log with the reason.

    Args:
        worker: a :class:`harvester.models.Worker` row (its ``status`` is the expected current state).
        new: the target :class:`WorkerStatus`.
        reason: why, in words (kept in ``worker_status_log``).
        diag: the batch system's or pilot's own words, kept on the worker.

    Returns:
        True when the row changed; False when another process changed it first (the conditional update lost).

    Raises:
        TransitionError: the move is not in the table (final states never change).
    """
    old, new = WorkerStatus(worker.status), WorkerStatus(new)
    if old == new:
        return False
    if not allowed(old, new):
        raise TransitionError(f"worker {worker.worker_id}: {old} -> {new} is not allowed ({reason})")
    now = now or utcnow()
    # reported=False: the propagator tells the server about every change
    values = {"status": new.value, "modification_time": now, "status_changed": now, "reported": False}
    if new in ACTIVE and worker.start_time is None:
        values["start_time"] = now
    if new in FINAL:
        values["end_time"] = now
    if diag is not None:
        values["diag"] = diag[:2000]
    with models.database.atomic():
        changed = (models.Worker.update(values)
                   .where(models.Worker.worker_id == worker.worker_id, models.Worker.status == old.value)
                   .execute())
        if changed:
            models.WorkerStatusLog.create(worker_id=worker.worker_id, old_status=old.value, new_status=new.value,
                                          time=now, reason=reason[:2000])
    if changed:
        for key, value in values.items():
            setattr(worker, key, value.value if isinstance(value, enum.Enum) else value)
        log.info("worker %s (%s): %s -> %s: %s", worker.worker_id, worker.queue, old, new, reason)
    return bool(changed)
