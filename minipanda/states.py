"""Job and task state machines: the one table of allowed transitions, and the one function that changes a state.

Every job status change in the server goes through :func:`change_job_status`. It refuses a transition the table
does not allow, stamps ``state_changed_time`` (and the per-state times), and writes one ``status_log`` row with the
reason, all in the caller's transaction. The update is conditional on the current status, so two concurrent
changes of the same job can never both succeed: the row count says who won.
"""
import datetime
import enum

from minipanda import models


class JobStatus(str, enum.Enum):
    """PanDA job states; the values are the strings stored in the database and sent on the wire."""

    PENDING = "pending"
    DEFINED = "defined"
    ASSIGNED = "assigned"
    ACTIVATED = "activated"
    SENT = "sent"
    STARTING = "starting"
    RUNNING = "running"
    HOLDING = "holding"
    MERGING = "merging"
    TRANSFERRING = "transferring"
    FINISHED = "finished"
    FAILED = "failed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class TaskStatus(str, enum.Enum):
    """The subset of JEDI task states that minipanda keeps."""

    REGISTERED = "registered"
    DEFINED = "defined"
    READY = "ready"
    SCOUTING = "scouting"
    SCOUTED = "scouted"
    RUNNING = "running"
    PREPARED = "prepared"
    DONE = "done"
    FINISHED = "finished"
    FAILED = "failed"
    PENDING = "pending"
    PAUSED = "paused"
    FINISHING = "finishing"
    ABORTING = "aborting"
    ABORTED = "aborted"
    TORETRY = "toretry"
    BROKEN = "broken"


J = JobStatus
FINAL_JOB_STATES = frozenset({J.FINISHED, J.FAILED, J.CLOSED, J.CANCELLED})
QUEUED_JOB_STATES = frozenset({J.PENDING, J.DEFINED, J.ASSIGNED, J.ACTIVATED})
ACTIVE_JOB_STATES = frozenset({J.SENT, J.STARTING, J.RUNNING, J.HOLDING, J.MERGING, J.TRANSFERRING})

# Allowed job transitions. A pilot may skip intermediate states (a short job can go sent -> finished),
# but never go back (transferring -> running was a real PanDA bug, panda-server#687), and final states never change.
JOB_TRANSITIONS = {
    J.PENDING: {J.DEFINED, J.ASSIGNED, J.ACTIVATED, J.CANCELLED, J.CLOSED, J.FAILED},
    J.DEFINED: {J.ASSIGNED, J.ACTIVATED, J.CANCELLED, J.CLOSED, J.FAILED},
    J.ASSIGNED: {J.ACTIVATED, J.CANCELLED, J.CLOSED, J.FAILED},
    J.ACTIVATED: {J.SENT, J.CANCELLED, J.CLOSED, J.FAILED},
    J.SENT: {J.STARTING, J.RUNNING, J.HOLDING, J.TRANSFERRING, J.FINISHED, J.FAILED, J.CANCELLED, J.CLOSED},
    J.STARTING: {J.RUNNING, J.HOLDING, J.TRANSFERRING, J.FINISHED, J.FAILED, J.CANCELLED, J.CLOSED},
    J.RUNNING: {J.HOLDING, J.TRANSFERRING, J.FINISHED, J.FAILED, J.CANCELLED, J.CLOSED},
    J.HOLDING: {J.MERGING, J.TRANSFERRING, J.FINISHED, J.FAILED, J.CANCELLED, J.CLOSED},
    J.MERGING: {J.TRANSFERRING, J.FINISHED, J.FAILED, J.CANCELLED, J.CLOSED},
    J.TRANSFERRING: {J.FINISHED, J.FAILED, J.CANCELLED, J.CLOSED},
    J.FINISHED: set(),
    J.FAILED: set(),
    J.CLOSED: set(),
    J.CANCELLED: set(),
}

T = TaskStatus
FINAL_TASK_STATES = frozenset({T.DONE, T.FINISHED, T.FAILED, T.ABORTED, T.BROKEN})
TASK_TRANSITIONS = {
    T.REGISTERED: {T.DEFINED, T.BROKEN, T.ABORTING},
    T.DEFINED: {T.READY, T.BROKEN, T.ABORTING, T.PENDING},
    T.READY: {T.SCOUTING, T.RUNNING, T.PAUSED, T.FINISHING, T.ABORTING, T.PENDING, T.BROKEN},
    T.SCOUTING: {T.SCOUTED, T.RUNNING, T.PAUSED, T.FINISHING, T.ABORTING, T.BROKEN, T.FAILED},
    T.SCOUTED: {T.RUNNING, T.PAUSED, T.FINISHING, T.ABORTING},
    T.RUNNING: {T.PREPARED, T.PAUSED, T.FINISHING, T.ABORTING, T.PENDING},
    T.PENDING: {T.READY, T.RUNNING, T.PAUSED, T.ABORTING, T.BROKEN},
    T.PAUSED: {T.READY, T.SCOUTING, T.RUNNING, T.ABORTING, T.FINISHING},
    T.FINISHING: {T.PREPARED, T.ABORTING},
    T.PREPARED: {T.DONE, T.FINISHED, T.FAILED},
    T.ABORTING: {T.ABORTED},
    T.DONE: set(),
    T.FINISHED: {T.TORETRY},
    T.FAILED: set(),
    T.TORETRY: {T.READY, T.RUNNING},
    T.ABORTED: set(),
    T.BROKEN: set(),
}


class InvalidTransition(ValueError):
    """A state change that the transition table does not allow."""


def utcnow():
    """The server's clock: naive UTC, as PanDA stores times."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def job_sources(target):
    """All job states from which ``target`` may be reached."""
    target = JobStatus(target)
    return [src for src, dests in JOB_TRANSITIONS.items() if target in dests]


def check_job_transition(current, target):
    """Raise :class:`InvalidTransition` unless ``current`` -> ``target`` is in the table."""
    current, target = JobStatus(current), JobStatus(target)
    if target not in JOB_TRANSITIONS[current]:
        raise InvalidTransition(f"job state change {current.value} -> {target.value} is not allowed")


def check_task_transition(current, target):
    """Raise :class:`InvalidTransition` unless task ``current`` -> ``target`` is in the table."""
    current, target = TaskStatus(current), TaskStatus(target)
    if target not in TASK_TRANSITIONS[current]:
        raise InvalidTransition(f"task state change {current.value} -> {target.value} is not allowed")


def _time_fields(target, now):
    fields = {models.Job.status: target.value, models.Job.state_changed_time: now, models.Job.modification_time: now}
    if target == J.SENT:
        fields[models.Job.start_time] = now
    if target in FINAL_JOB_STATES:
        fields[models.Job.end_time] = now
    return fields


def change_job_status(panda_ids, target, reason, from_states=None, fields=None, now=None):
    """Move the given jobs to ``target``, conditionally on their current state.

    Args:
        panda_ids: ids to change, or a peewee sub-select of ids (dispatch passes its ordered, limited pick);
            a job not in an allowed source state is left alone.
        target: the new :class:`JobStatus`.
        reason: stored in status_log; says why, in words.
        from_states: restrict the allowed sources further (e.g. only ``activated`` for a dispatch).
        fields: extra column values {Job.field: value} written in the same UPDATE.
        now: the time to stamp (tests pass a fixed clock).

    Returns:
        The list of (panda_id, previous status) pairs that were changed. Must run inside a transaction.
    """
    target = JobStatus(target)
    now = now or utcnow()
    allowed = set(job_sources(target))
    if from_states is not None:
        allowed &= {JobStatus(s) for s in from_states}
    if not allowed:
        return []
    Job = models.Job
    values = _time_fields(target, now)
    values.update(fields or {})
    changed = []
    # One conditional UPDATE per source state: the WHERE on the current status makes each change exact even if
    # another writer got there first, and RETURNING tells which rows this call won.
    for status in sorted(s.value for s in allowed):
        rows = Job.update(values).where(Job.panda_id.in_(panda_ids), Job.status == status).returning(Job.panda_id)
        changed.extend((row.panda_id, status) for row in rows.execute())
    log_transitions(changed, target, reason, now)
    return changed


def log_transitions(changed, target, reason, now):
    """Write one status_log row per (panda_id, previous status) pair."""
    if changed:
        rows = [
            {"panda_id": pid, "old_status": old, "new_status": JobStatus(target).value, "time": now, "reason": reason[:500]}
            for pid, old in changed
        ]
        models.StatusLog.insert_many(rows).execute()
