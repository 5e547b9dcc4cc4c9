"""Harvester's three state machines, each ONE table of allowed transitions and ONE function that writes it.

A worker is one batch job that runs one pilot (or several side by side)::

    worker status  submitted -> ready -> running -> idle -> finished | failed | cancelled | missed
                   any live state -> missing -> back to what the batch system says, or failed (VANISHED)
    submit phase   pending -> submitting -> done          (a retry: submitting -> pending)
    held job       fetched -> fed -> running -> done      (a worker given up before it ran: fed -> fetched)

``submitted`` is where every worker starts (the batch system accepted it, or the submitter is about to try);
``ready`` means the pilot asked for a job (late binding, push mode); ``idle`` a pilot between jobs; ``missing`` a
batch job the batch system does not list any more: it is looked up again every monitor cycle for a grace period
(a scheduler restart, ``squeue`` before ``sacct`` has the job) and only then ends ``failed``. Final states never
change. A worker whose submission never succeeded becomes ``missed``.

The submit phase is what makes a worker never submitted twice: ``submitting`` is committed before the batch system
is called, so a crash in between is resolved by asking the plugin (``find``), never by submitting again.

A held job is one the fetcher took from the server for a push-mode queue: ``fed`` once its job file is in a
worker's access point, ``running`` while harvester sends heartbeats for a pilot without network, ``done`` once its
final report is queued or its worker ended.

Writers: :func:`create_worker` and :func:`change_worker_status` (worker status, with the phase and the columns that
go with it in the same UPDATE), :func:`change_submit_phase`, :func:`change_held_jobs`. Every worker status change,
and every submission event, is a row of ``worker_status_log`` written by them and nowhere else.
"""
import datetime
import enum
import logging

import peewee

from harvester import models
from harvester.errors import TransitionError

log = logging.getLogger(__name__)


class WorkerStatus(str, enum.Enum):
    SUBMITTED = "submitted"
    READY = "ready"
    RUNNING = "running"
    IDLE = "idle"
    MISSING = "missing"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"

    def __str__(self):
        return self.value


FINAL = frozenset({WorkerStatus.FINISHED, WorkerStatus.FAILED, WorkerStatus.CANCELLED, WorkerStatus.MISSED})
QUEUED = frozenset({WorkerStatus.SUBMITTED, WorkerStatus.READY})  # asked for, not yet running a pilot
ACTIVE = frozenset({WorkerStatus.RUNNING, WorkerStatus.IDLE})
LIVE = QUEUED | ACTIVE | {WorkerStatus.MISSING}  # followed by the monitor, counted against maxWorkers
LIVE_VALUES = tuple(sorted(status.value for status in LIVE))

# The worker table: status -> the statuses it may move to. A batch system may skip steps (a short pilot is seen
# submitted, then finished), so every live state may end; nothing goes back to submitted except a missing batch
# job found again still queued.
TRANSITIONS = {
    WorkerStatus.SUBMITTED: {WorkerStatus.READY, WorkerStatus.RUNNING, WorkerStatus.IDLE, WorkerStatus.MISSING,
                             *FINAL},
    WorkerStatus.READY: {WorkerStatus.RUNNING, WorkerStatus.IDLE, WorkerStatus.MISSING,
                         *FINAL - {WorkerStatus.MISSED}},
    WorkerStatus.RUNNING: {WorkerStatus.IDLE, WorkerStatus.MISSING, *FINAL - {WorkerStatus.MISSED}},
    WorkerStatus.IDLE: {WorkerStatus.RUNNING, WorkerStatus.MISSING, *FINAL - {WorkerStatus.MISSED}},
    WorkerStatus.MISSING: {WorkerStatus.SUBMITTED, WorkerStatus.RUNNING, WorkerStatus.IDLE,
                           *FINAL - {WorkerStatus.MISSED}},
    WorkerStatus.FINISHED: set(), WorkerStatus.FAILED: set(), WorkerStatus.CANCELLED: set(),
    WorkerStatus.MISSED: set(),
}


class WorkerError(enum.IntEnum):
    """Why a worker failed, kept as its ``error_code`` and reported to the server as ``errorCode``."""

    NONE = 0
    BATCH_JOB_FAILED = 1  # the batch job ended badly: the pilot (or what it ran) exited non-zero, or the node failed
    WALLTIME = 2  # the batch system ended it at its time limit (Slurm TIMEOUT): not a failure of the payload
    VANISHED = 3  # the batch system did not know the batch job for longer than the grace period


class SubmitPhase(str, enum.Enum):
    PENDING = "pending"  # not handed to the batch system yet (or to retry after next_attempt)
    SUBMITTING = "submitting"  # the plugin is called; its answer not recorded yet
    DONE = "done"  # the batch system has it (batch id known), or it was given up

    def __str__(self):
        return self.value


# A pending worker may be put off again (a preparation that failed: PENDING -> PENDING with a later next_attempt)
# or given up before it was ever submitted (killed, fatal preparation error: PENDING -> DONE).
SUBMIT_TRANSITIONS = {
    SubmitPhase.PENDING: {SubmitPhase.PENDING, SubmitPhase.SUBMITTING, SubmitPhase.DONE},
    SubmitPhase.SUBMITTING: {SubmitPhase.PENDING, SubmitPhase.DONE},
    SubmitPhase.DONE: set(),
}


class HeldJobStatus(str, enum.Enum):
    FETCHED = "fetched"  # held by harvester, in no access point yet (maybe bound to a worker)
    FED = "fed"  # its job file is in a worker's access point
    RUNNING = "running"  # harvester sends heartbeats for it (a pilot without network)
    DONE = "done"  # its final report is queued, or its worker ended: harvester holds it no more

    def __str__(self):
        return self.value


# fetched -> fetched and running -> running: the same status written again with other columns (a job unbound from
# a worker that never ran; a heartbeat sent). A job file written just before a crash leaves its job fetched, so
# a fetched job may report running or done too.
HELD_JOB_TRANSITIONS = {
    HeldJobStatus.FETCHED: {HeldJobStatus.FETCHED, HeldJobStatus.FED, HeldJobStatus.RUNNING, HeldJobStatus.DONE},
    HeldJobStatus.FED: {HeldJobStatus.FETCHED, HeldJobStatus.RUNNING, HeldJobStatus.DONE},
    HeldJobStatus.RUNNING: {HeldJobStatus.RUNNING, HeldJobStatus.DONE},
    HeldJobStatus.DONE: set(),
}


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def allowed(old, new):
    return WorkerStatus(new) in TRANSITIONS[WorkerStatus(old)]


def sources(table, new):
    """The states that may move to ``new`` in ``table``."""
    return sorted(old.value for old, targets in table.items() if new in targets)


# ---- workers ---------------------------------------------------------------------------------------------------
def create_worker(now, reason, **columns):
    """Insert a new worker (status submitted, phase pending) and the first row of its status log, together.

    Returns:
        the new :class:`harvester.models.Worker` row.
    """
    with models.database.atomic():
        worker = models.Worker.create(status=WorkerStatus.SUBMITTED.value, submit_phase=SubmitPhase.PENDING.value,
                                      modification_time=now, status_changed=now, **columns)
        _log(worker.worker_id, None, WorkerStatus.SUBMITTED.value, now, reason)
    return worker


def change_worker_status(worker, new, reason, now=None, diag=None, error_code=None, phase=None, values=None):
    """Move one worker to ``new``: check the table, stamp the times, write the status log with the reason; the
    submit phase (``phase``) and other columns that go with the change (``values``) in the same UPDATE.

    Args:
        worker: a :class:`harvester.models.Worker` row (its ``status``, and ``submit_phase`` when ``phase`` is
            given, are the expected current values).
        new: the target :class:`WorkerStatus`.
        reason: why, in words (kept in ``worker_status_log``).
        diag: the batch system's or pilot's own words, kept on the worker.
        error_code: a :class:`WorkerError` (why a worker failed).
        phase: the :class:`SubmitPhase` the worker moves to at the same time, or None.
        values: more columns to write in the same UPDATE ({name: value}).

    Returns:
        True when the row changed; False when another process changed it first (the conditional update lost).

    Raises:
        TransitionError: the move is not in a table (final states never change).
    """
    old, new = WorkerStatus(worker.status), WorkerStatus(new)
    if old == new:
        return False
    if not allowed(old, new):
        raise TransitionError(f"worker {worker.worker_id}: {old} -> {new} is not allowed ({reason})")
    now = now or utcnow()
    # reported=False: the propagator tells the server about every change
    changes = {"status": new.value, "status_changed": now, "reported": False, **(values or {})}
    if new in ACTIVE and worker.start_time is None:
        changes["start_time"] = now
    if new in FINAL:
        changes["end_time"] = now
    if diag is not None:
        changes["diag"] = diag[:2000]
    if error_code is not None:
        changes["error_code"] = int(error_code)
    expected = [models.Worker.status == old.value]
    if phase is not None:
        expected.append(_phase_change(worker, phase, reason, changes))
    changed = _write(worker, changes, expected, now, old.value, new.value, reason, "transition")
    if changed:
        log.info("worker %s (%s): %s -> %s: %s", worker.worker_id, worker.queue, old, new, reason)
    return changed


def change_submit_phase(worker, new, reason, now, values=None):
    """Move one worker's submit phase to ``new`` (with ``values``, other columns of the same step), noting the
    reason in its status log.

    Returns:
        True when the row changed; False when another process changed its phase first.

    Raises:
        TransitionError: the move is not in the submit-phase table.
    """
    changes = dict(values or {})
    expected = _phase_change(worker, new, reason, changes)
    return _write(worker, changes, [expected], now, worker.status, worker.status, reason, "note")


def note_worker(worker, reason, now):
    """An event in a worker's status log without a status change (harvester ignored what its pilot claimed)."""
    _log(worker.worker_id, worker.status, worker.status, now, reason, "note")


def _phase_change(worker, new, reason, changes):
    """Check a submit-phase move and add it to ``changes``; the condition that the phase is still the old one."""
    old, new = SubmitPhase(worker.submit_phase), SubmitPhase(new)
    if new not in SUBMIT_TRANSITIONS[old]:
        raise TransitionError(f"worker {worker.worker_id}: submit phase {old} -> {new} is not allowed ({reason})")
    changes["submit_phase"] = new.value
    if new == SubmitPhase.DONE:
        changes["reported"] = False  # the server hears of a worker once its submission is settled
    return models.Worker.submit_phase == old.value


def _write(worker, changes, expected, now, old_status, new_status, reason, kind):
    """The one UPDATE of a worker row (conditional on ``expected``) and its log row, in one transaction."""
    changes = dict(changes, modification_time=now)
    with models.database.atomic():
        changed = (models.Worker.update(changes)
                   .where(models.Worker.worker_id == worker.worker_id, *expected).execute())
        if changed:
            _log(worker.worker_id, old_status, new_status, now, reason, kind)
    if changed:
        for key, value in changes.items():
            if not isinstance(value, peewee.Node):  # an expression (attempts + 1) is read back by who needs it
                setattr(worker, key, value.value if isinstance(value, enum.Enum) else value)
    return bool(changed)


def _log(worker_id, old_status, new_status, now, reason, kind="transition"):
    models.WorkerStatusLog.create(worker_id=worker_id, old_status=old_status, new_status=new_status, time=now,
                                  reason=reason[:2000], kind=kind)


# ---- held jobs -------------------------------------------------------------------------------------------------
def change_held_jobs(condition, new, values=None):
    """Move the held jobs matching ``condition`` to ``new`` (with ``values``), those whose status allows it; one
    conditional UPDATE. Returns how many moved (0: none matched, or they were already past ``new``)."""
    new = HeldJobStatus(new)
    return (models.HeldJob.update({"status": new.value, **(values or {})})
            .where(condition, models.HeldJob.status.in_(sources(HELD_JOB_TRANSITIONS, new))).execute())
