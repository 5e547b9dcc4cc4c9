"""Job and task state machines: the one table of allowed transitions, and the one function that changes a state.

Every job status change in the server goes through :func:`change_job_status`. It refuses a transition the table
does not allow, stamps ``state_changed_time`` (and the per-state times), and writes one ``status_log`` row with the
reason, all in the caller's transaction. The update is conditional on the current status, so two concurrent
changes of the same job can never both succeed: the row count says who won.
"""
import datetime
import enum

import orjson
import peewee
from minipanda.core import bulk, counts, models, statesql
from minipanda.errors import InvalidTransition


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


FINAL_JOB_STATES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CLOSED, JobStatus.CANCELLED})
QUEUED_JOB_STATES = frozenset({JobStatus.PENDING, JobStatus.DEFINED, JobStatus.ASSIGNED, JobStatus.ACTIVATED})
ACTIVE_JOB_STATES = frozenset({JobStatus.SENT, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.HOLDING,
                               JobStatus.MERGING, JobStatus.TRANSFERRING})

# Allowed job transitions. A pilot may skip intermediate states (a short job can go sent -> finished),
# but never go back (transferring -> running was a real PanDA bug, panda-server#687), and final states never change.
JOB_TRANSITIONS = {
    JobStatus.PENDING: {JobStatus.DEFINED, JobStatus.ASSIGNED, JobStatus.ACTIVATED, JobStatus.CANCELLED,
                        JobStatus.CLOSED, JobStatus.FAILED},
    JobStatus.DEFINED: {JobStatus.ASSIGNED, JobStatus.ACTIVATED, JobStatus.CANCELLED, JobStatus.CLOSED,
                        JobStatus.FAILED},
    JobStatus.ASSIGNED: {JobStatus.ACTIVATED, JobStatus.CANCELLED, JobStatus.CLOSED, JobStatus.FAILED},
    JobStatus.ACTIVATED: {JobStatus.SENT, JobStatus.CANCELLED, JobStatus.CLOSED, JobStatus.FAILED},
    JobStatus.SENT: {JobStatus.STARTING, JobStatus.RUNNING, JobStatus.HOLDING, JobStatus.TRANSFERRING,
                     JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CLOSED},
    JobStatus.STARTING: {JobStatus.RUNNING, JobStatus.HOLDING, JobStatus.TRANSFERRING, JobStatus.FINISHED,
                         JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CLOSED},
    JobStatus.RUNNING: {JobStatus.HOLDING, JobStatus.TRANSFERRING, JobStatus.FINISHED, JobStatus.FAILED,
                        JobStatus.CANCELLED, JobStatus.CLOSED},
    JobStatus.HOLDING: {JobStatus.MERGING, JobStatus.TRANSFERRING, JobStatus.FINISHED, JobStatus.FAILED,
                        JobStatus.CANCELLED, JobStatus.CLOSED},
    JobStatus.MERGING: {JobStatus.TRANSFERRING, JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED,
                        JobStatus.CLOSED},
    JobStatus.TRANSFERRING: {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CLOSED},
    JobStatus.FINISHED: set(),
    JobStatus.FAILED: set(),
    JobStatus.CLOSED: set(),
    JobStatus.CANCELLED: set(),
}

FINAL_TASK_STATES = frozenset({TaskStatus.DONE, TaskStatus.FINISHED, TaskStatus.FAILED, TaskStatus.ABORTED,
                               TaskStatus.BROKEN})
TASK_TRANSITIONS = {
    TaskStatus.REGISTERED: {TaskStatus.DEFINED, TaskStatus.BROKEN, TaskStatus.ABORTING},
    TaskStatus.DEFINED: {TaskStatus.READY, TaskStatus.BROKEN, TaskStatus.ABORTING, TaskStatus.PENDING},
    TaskStatus.READY: {TaskStatus.SCOUTING, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.FINISHING,
                       TaskStatus.ABORTING, TaskStatus.PENDING, TaskStatus.BROKEN},
    TaskStatus.SCOUTING: {TaskStatus.SCOUTED, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.FINISHING,
                          TaskStatus.ABORTING, TaskStatus.BROKEN, TaskStatus.FAILED},
    TaskStatus.SCOUTED: {TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.FINISHING, TaskStatus.ABORTING,
                         TaskStatus.BROKEN},
    TaskStatus.RUNNING: {TaskStatus.PREPARED, TaskStatus.PAUSED, TaskStatus.FINISHING, TaskStatus.ABORTING,
                         TaskStatus.PENDING, TaskStatus.BROKEN},
    TaskStatus.PENDING: {TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.ABORTING,
                         TaskStatus.BROKEN},
    TaskStatus.PAUSED: {TaskStatus.READY, TaskStatus.SCOUTING, TaskStatus.RUNNING, TaskStatus.ABORTING,
                        TaskStatus.FINISHING},
    TaskStatus.FINISHING: {TaskStatus.PREPARED, TaskStatus.ABORTING},
    TaskStatus.PREPARED: {TaskStatus.DONE, TaskStatus.FINISHED, TaskStatus.FAILED},
    TaskStatus.ABORTING: {TaskStatus.ABORTED},
    TaskStatus.DONE: set(),
    TaskStatus.FINISHED: {TaskStatus.TORETRY},
    TaskStatus.FAILED: set(),
    TaskStatus.TORETRY: {TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.BROKEN},
    TaskStatus.ABORTED: set(),
    TaskStatus.BROKEN: set(),
}


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


def _time_fields(target, now):
    fields = {models.Job.status: target.value, models.Job.state_changed_time: now, models.Job.modification_time: now}
    if target == JobStatus.SENT:
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
    plain = isinstance(panda_ids, (list, tuple, set, frozenset)) and not any(
        isinstance(value, peewee.Node) for value in values.values())
    for status in sorted(s.value for s in allowed):
        if plain:  # the common case (every pilot update): a cached statement instead of peewee's rendering
            changed.extend((pid, status) for pid in _update_listed(values, list(panda_ids), status))
            continue
        rows = Job.update(values).where(Job.panda_id.in_(panda_ids), Job.status == status).returning(Job.panda_id)
        changed.extend((row.panda_id, status) for row in rows.execute())
    log_transitions(changed, target, reason, now)
    return changed


def _update_listed(values, ids, status, model=None):
    """UPDATE the listed rows (jobs, or tasks) that are in ``status`` with plain ``values``; return the ids
    changed. A cached statement: peewee's rendering cost more than the UPDATE on every pilot update."""
    model = model or models.Job
    database, key = model._meta.database, model._meta.primary_key.column_name
    columns = tuple(field.column_name for field in values)
    assigned = [field.db_value(value) for field, value in values.items()]
    changed = []
    for start in range(0, len(ids), 500):  # bounded statement size, however many ids a kill names
        chunk = ids[start:start + 500]
        sql = statesql.update_listed_sql(database.param, model._meta.table_name, key, columns, len(chunk))
        cursor = database.execute_sql(sql, assigned + chunk + [status])
        changed.extend(row[0] for row in cursor.fetchall())
    return changed


def change_picked_jobs(pick, pick_params, source, target, reason, fields=None, now=None, returning=("panda_id",),
                       at_most=None):
    """Move the jobs a sub-select picks from ``source`` to ``target``; return their rows.

    The bulk twin of :func:`change_job_status`, for dispatch: ``pick`` is the caller's SELECT of panda_ids (with
    its ``pick_params``), best first and limited; the change re-checks ``source`` on each picked row, so a job
    another writer changed first is skipped. Same table check, time stamps and status_log rows. PostgreSQL: one
    UPDATE ... RETURNING; SQLite: the picked rows read as one, then one UPDATE (:func:`_change_picked_sqlite`).

    ``at_most``: the pick's LIMIT, when the caller knows it (the live counts of a small claim are left to the
    triggers, :func:`minipanda.core.counts.bulk_jobs`).

    Returns:
        The changed jobs' ``returning`` columns (panda_id first) as tuples, in no particular order. Must run
        inside a transaction.
    """
    source, target = JobStatus(source), JobStatus(target)
    check_job_transition(source, target)
    now = now or utcnow()
    values = _time_fields(target, now)
    values.update(fields or {})
    database = models.Job._meta.database
    columns = tuple(field.column_name for field in values)
    listed = tuple(returning) + _COUNTED
    assigned = [field.db_value(value) for field, value in values.items()]
    with counts.bulk_jobs(at_most) as moves:
        if isinstance(database.obj, peewee.PostgresqlDatabase):
            sql = statesql.picked_update_sql(database.param, pick, columns, listed)
            rows = database.execute_sql(sql, assigned + list(pick_params) + [source.value]).fetchall()
        else:
            rows = _change_picked_sqlite(database, pick, pick_params, columns, assigned, listed, source)
        moves.add_rows([row[-2:] for row in rows], source.value, target.value, bulk.time_param(now))
    log_transitions([(row[0], source.value) for row in rows], target, reason, now)
    return [row[:-2] for row in rows]


_COUNTED = ("task_id", "computing_site")  # what a bulk writer tells the live counts of each job it changed


def _change_picked_sqlite(database, pick, pick_params, columns, assigned, listed, source):
    """SQLite: the picked jobs' ``listed`` columns read as ONE row (a JSON array of arrays), then one UPDATE of
    those jobs by id that returns nothing. An UPDATE ... RETURNING of 100 jobs hands back 100 rows, each a step of
    the statement that lets go of the GIL and comes back for it, with the writer's lock in hand; one row of JSON
    costs the lock's holder less (bench/README.md, round 8). The read and the UPDATE run in the same IMMEDIATE
    transaction, in which no other writer can change a job (SQLite has one writer at a time), so every job read as
    ``source`` is changed: the UPDATE's row count says so, or the claim fails and rolls back."""
    try:
        text = database.execute_sql(statesql.picked_rows_sql(database.param, pick, listed),
                                    list(pick_params) + [source.value]).fetchone()[0]
    except peewee.DataError:
        # The picked jobs' JSON is over SQLite's string limit (SQLITE_LIMIT_LENGTH; JSON writes a control character
        # as six): they would stay activated and fail every claim that picks them. Their rows come one by one.
        sql = statesql.picked_update_sql(database.param, pick, columns, listed, postgres=False)
        return [tuple(row) for row in database.execute_sql(sql, assigned + list(pick_params) + [source.value])]
    rows = list(map(tuple, orjson.loads(text or "[]")))
    if rows:
        changed = database.execute_sql(statesql.picked_ids_update_sql(database.param, columns),
                                       assigned + [orjson.dumps([row[0] for row in rows]).decode(), source.value])
        if changed.rowcount != len(rows):
            raise RuntimeError(f"a claim read {len(rows)} {source.value} jobs and changed {changed.rowcount} of them "
                               "in the same transaction")
    return rows


def change_each_job(groups, fields=None, now=None, read=None):
    """Several conditional changes at once, each job with values of its own: the set-operation twin of
    :func:`change_job_status`, for the pilots' bulk updates.

    Args:
        groups: [(source, target, columns, rows, reason)]: the jobs of ``rows`` [(panda_id, *values of
            columns)] that are still in ``source`` move to ``target`` and get their own values of ``columns``
            (column names; the values are plain ints and strings), one UPDATE per group. A job appears once.
        fields: column values {Job.field: value} written on every job changed.
        now: the time to stamp.
        read: {panda_id: (task_id, computing_site)} of every job of ``groups``, read in ``source`` by the caller in
            this same transaction. On SQLite (one writer at a time: no one else can have moved them since) the
            UPDATEs then return no rows, each a step that lets go of the GIL with the writer's lock in hand: each
            must change every job of its group, or RuntimeError (the transaction rolls back). PostgreSQL, or
            without ``read``: what each UPDATE ... RETURNING gave.

    Returns:
        The set of panda_ids changed: what the conditional UPDATEs returned, so a job that another writer moved
        first is not in it. The same table check, time stamps, and one status_log insert for all the groups.
        Must run inside a transaction.
    """
    now = now or utcnow()
    changed, logged = set(), []
    database = models.Job._meta.database
    counted = read is not None and not isinstance(database.obj, peewee.PostgresqlDatabase)
    with counts.bulk_jobs(sum(len(group[3]) for group in groups)) as moves:
        for source, target, columns, rows, reason in groups:
            source, target = JobStatus(source), JobStatus(target)
            check_job_transition(source, target)
            values = _time_fields(target, now)
            values.update(fields or {})
            constant = {field.column_name: field.db_value(value) for field, value in values.items()}
            won = bulk.update_each(models.Job._meta.table_name, "panda_id", constant, columns, rows,
                                   "(\"status\" || '') = %s" % database.param, [source.value],
                                   returning=None if counted else _COUNTED)
            if counted:
                if won != len(rows):
                    raise RuntimeError(f"a bulk update read {len(rows)} {source.value} jobs and changed {won} of "
                                       "them in the same transaction")
                won = [(row[0], *read[row[0]]) for row in rows]
            moves.add_rows([row[1:] for row in won], source.value, target.value, bulk.time_param(now))
            changed.update(row[0] for row in won)
            logged.extend((row[0], source.value, target.value, reason) for row in won)
    _log_rows(logged, now)
    return changed


def note_jobs(jobs, reason, now=None):
    """Write a ``note`` row (not a transition) for each (panda_id, status) pair: a decision about a job that keeps
    its state, such as the retry module's verdict on a failed job. Must run inside a transaction."""
    if jobs:
        now = now or utcnow()
        models.StatusLog.insert_many([{"panda_id": pid, "old_status": status, "new_status": status, "time": now,
                                       "reason": reason[:500], "kind": "note"} for pid, status in jobs]).execute()


def log_transitions(changed, target, reason, now):
    """Write one status_log row per (panda_id, previous status) pair."""
    new_status = JobStatus(target).value
    _log_rows([(pid, old, new_status, reason) for pid, old in changed], now)


def _log_rows(rows, now):
    """Write the (panda_id, previous status, new status, reason) transitions, all at ``now``.

    One INSERT per (previous status, new status, reason) written out directly, whose rows give only their
    PandaIDs; the time, states, reason and kind are bound once for all of them: every dispatch and every submitted
    job comes through here (peewee's insert_many spent ~0.2 ms per call plus ~20 us per row building it, and six
    values bound per row were a third of what is left).
    """
    if not rows:
        return
    log, database = models.StatusLog, models.StatusLog._meta.database
    when = bulk.time_param(log.time.db_value(now))
    groups = {}
    for pid, old, new, reason in rows:
        groups.setdefault((old, new, reason[:500]), []).append(pid)
    for (old, new, reason), ids in groups.items():
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            database.execute_sql(statesql.log_sql(database.param, len(chunk)),
                                 chunk + [old, new, when, reason, "transition"])


FINAL_TASK_VALUES = frozenset(s.value for s in FINAL_TASK_STATES)


def task_sources(target):
    """All task states from which ``target`` may be reached."""
    target = TaskStatus(target)
    return [src for src, dests in TASK_TRANSITIONS.items() if target in dests]


def change_task_status(task_ids, target, reason, from_states=None, fields=None, now=None):
    """Move the given tasks to ``target``, conditionally on their current state (the task twin of
    :func:`change_job_status`).

    Args:
        task_ids: jediTaskIDs to change; a task not in an allowed source state is left alone.
        target: the new :class:`TaskStatus`.
        reason: stored in task_log (and, for broken and failed tasks, in the task's error dialog by the caller).
        from_states: restrict the allowed sources further.
        fields: extra column values {Task.field: value} written in the same UPDATE.
        now: the time to stamp.

    Returns:
        The list of (task_id, previous status) pairs that were changed. Must run inside a transaction.
    """
    target = TaskStatus(target)
    now = now or utcnow()
    allowed = set(task_sources(target))
    if from_states is not None:
        allowed &= {TaskStatus(s) for s in from_states}
    Task, TaskLog = models.Task, models.TaskLog
    values = {Task.status: target.value, Task.state_changed_time: now, Task.modification_time: now}
    if target in FINAL_TASK_STATES:
        values[Task.end_time] = now
    values.update(fields or {})
    changed = []
    plain = not any(isinstance(value, peewee.Node) for value in values.values())
    for status in sorted(s.value for s in allowed):
        if plain:  # the same cached statement as a job's: commands and the settle duty change tasks one by one
            changed.extend((tid, status) for tid in _update_listed(values, list(task_ids), status, Task))
            continue
        rows = Task.update(values).where(Task.jedi_task_id.in_(list(task_ids)), Task.status == status) \
            .returning(Task.jedi_task_id)
        changed.extend((row.jedi_task_id, status) for row in rows.execute())
    if changed:
        TaskLog.insert_many([{"task_id": tid, "old_status": old, "new_status": target.value, "time": now,
                              "reason": reason[:500]} for tid, old in changed]).execute()
    return changed
