"""Task services: submission, the user's task commands (PanDA return codes), and task queries.

Commands only change the task's state (and kill jobs where asked); the duties do the rest: the generator stops
or resumes making jobs, the settle duty completes the task when its last job ends.
"""
import datetime
import json
import logging

from minipanda.core import db, models, policy, states
from minipanda.core.counts import inputs_by_task, jobs_by_task
from minipanda.core.db import database
from minipanda.core.states import ACTIVE_JOB_STATES, QUEUED_JOB_STATES, TaskStatus
from minipanda.errors import TaskParamError
from minipanda.tasks import taskparams
from peewee import fn

log = logging.getLogger(__name__)

# PanDA's task command return codes.
OK, ERROR, NOT_FOUND, DENIED, BAD_STATUS, NEW_PARAMS, BAD_ID = 0, 1, 2, 3, 4, 3, 101
SUPER_STATUS = {"registered": "registered", "defined": "registered", "ready": "ready", "done": "done",
                "finished": "finished", "failed": "failed", "broken": "broken", "aborted": "aborted"}
RETRY_PARAMS = {"ramCount": "ram_count", "walltime": "walltime", "coreCount": "core_count",
                "maxAttempt": "max_attempt", "site": "site", "excludedSite": "excluded_site"}


def _next_task_id():
    if db.is_postgres():
        return None  # the sequence, started at FIRST_TASK_ID by the schema
    highest = models.Task.select(fn.MAX(models.Task.jedi_task_id)).scalar()
    return max((highest or 0) + 1, models.FIRST_TASK_ID)


def submit_task(params, identity, parent_tid=None, sandboxes=None):
    """Validate and store a task (status registered) with its output datasets, all or nothing.

    Returns:
        The new jediTaskID.

    Raises:
        TaskParamError: bad parameters (code 4) or output datasets that already exist (code 2).
    """
    spec = taskparams.normalise(params, identity.name, identity.role, sandboxes)
    now = states.utcnow()
    with database.atomic():
        duplicates = taskparams.duplicate_datasets(spec)
        if duplicates:
            owners = {d.name: d for d in models.Dataset.select().where(models.Dataset.name.in_(duplicates))}
            # Another user's dataset is named, never its task: errors show nobody else's work.
            raise TaskParamError([f"taskName: output dataset {name} already exists"
                                  + (f" (jediTaskID={owners[name].task_id})" if owners[name].user_name ==
                                     identity.name else ", made by another user") + "; choose another taskName"
                                  for name in duplicates], code=2)
        row = {"task_name": spec["taskName"], "user_name": identity.name, "vo": spec["vo"],
               "working_group": spec["workingGroup"], "prod_source_label": spec["prodSourceLabel"],
               "status": TaskStatus.REGISTERED.value, "params": json.dumps(params), "spec": json.dumps(spec),
               "in_ds": spec.get("inDS"), "site": ",".join(spec["site"]),
               "excluded_site": ",".join(spec["excludedSite"]), "core_count": spec["coreCount"],
               "ram_count": spec["ramCount"], "walltime": spec["walltime"], "max_attempt": spec["maxAttempt"],
               "task_priority": spec["taskPriority"], "n_scouts": spec["nScouts"], "parent_tid": parent_tid,
               "creation_time": now, "modification_time": now, "state_changed_time": now}
        task_id = _next_task_id()
        if task_id is not None:
            row["jedi_task_id"] = task_id
        task_id = models.Task.insert(row).execute()
        models.Task.update(req_id=task_id).where(models.Task.jedi_task_id == task_id).execute()
        datasets = [(o["dataset"], "output") for o in spec["outputs"]] + [(spec["log"]["dataset"], "log")]
        models.Dataset.insert_many([{"name": name, "type": kind, "user_name": identity.name, "task_id": task_id,
                                     "creation_time": now, "modification_time": now}
                                    for name, kind in datasets]).execute()
        models.TaskLog.create(task_id=task_id, old_status=None, new_status=TaskStatus.REGISTERED.value, time=now,
                              reason=f"submitted by {identity.name}")
    log.info("user %s submitted jediTaskID=%s (%s)", identity.name, task_id, spec["taskName"])
    return task_id


# ---- commands ------------------------------------------------------------------------------------------------------

def _load_for_command(task_id, identity):
    """(task, None) or (None, (code, message))."""
    try:
        task_id = int(task_id)
    except (TypeError, ValueError):
        return None, (BAD_ID, f"task_id: expected an integer jediTaskID, got {str(task_id)[:40]!r}")
    task = models.Task.get_or_none(models.Task.jedi_task_id == task_id)
    if task is None:
        return None, (NOT_FOUND, f"jediTaskID={task_id} not found")
    if not policy.manages_all(identity) and task.user_name != identity.name:
        return None, (DENIED, f"permission denied: jediTaskID={task_id} belongs to {task.user_name}")
    return task, None


def _refuse(task, command, allowed):
    return (BAD_STATUS, f"command={command} is not allowed for jediTaskID={task.jedi_task_id} in status "
                        f"{task.status}; allowed from: {', '.join(sorted(allowed))}")


def kill_task_jobs(task_id, reason, now=None):
    """Cancel the task's queued jobs; mark dispatched ones ``tobekilled`` for their next update."""
    Job = models.Job
    queued = [s.value for s in QUEUED_JOB_STATES]
    ids = Job.select(Job.panda_id).where(Job.task_id == task_id, Job.status.in_(queued))
    cancelled = states.change_job_status(ids, states.JobStatus.CANCELLED, reason, from_states=queued,
                                         fields={Job.sup_error_diag: reason}, now=now)
    marked = Job.update(command_to_pilot="tobekilled", sup_error_diag=reason).where(
        Job.task_id == task_id, Job.status.in_([s.value for s in ACTIVE_JOB_STATES])).execute()
    return len(cancelled), marked


def command(task_id, identity, action, soft=False, new_params=None, wake=None):
    """Run a task command for ``identity``; returns (code, message) with PanDA's codes. ``wake(duty name)``
    runs the generator and settle duties early when the command changed the task."""
    handlers = {"kill": _kill, "finish": _finish, "retry": _retry, "pause": _pause, "resume": _resume}
    with database.atomic():
        task, refusal = _load_for_command(task_id, identity)
        if refusal:
            return refusal
        result = handlers[action](task, identity, soft=soft, new_params=new_params)
    if result[0] in (OK, NEW_PARAMS) and wake:
        wake("generator")
        wake("settle")
    log.info("%s: task command %s on %s -> %s", identity.name, action, task_id, result)
    return result


def _kill(task, identity, **_):
    reason = f"task killed by {identity.name}"
    if not states.change_task_status([task.jedi_task_id], TaskStatus.ABORTING, reason):
        return _refuse(task, "kill", states.task_sources(TaskStatus.ABORTING))
    cancelled, marked = kill_task_jobs(task.jedi_task_id, reason)
    return OK, (f"command=kill is registered for jediTaskID={task.jedi_task_id}: {cancelled} queued jobs "
                f"cancelled, {marked} running jobs told to stop")


def _finish(task, identity, soft=False, **_):
    mode = "soft" if soft else "hard"
    reason = f"{mode} finish by {identity.name}"
    if not states.change_task_status([task.jedi_task_id], TaskStatus.FINISHING, reason):
        return _refuse(task, "finish", states.task_sources(TaskStatus.FINISHING))
    if soft:
        return OK, (f"command=finish (soft) is registered for jediTaskID={task.jedi_task_id}: no new jobs, "
                    "existing ones run to their end")
    cancelled, marked = kill_task_jobs(task.jedi_task_id, reason)
    return OK, (f"command=finish is registered for jediTaskID={task.jedi_task_id}: {cancelled} queued jobs "
                f"cancelled, {marked} running jobs told to stop")


def _retry(task, identity, new_params=None, **_):
    if task.status in (TaskStatus.BROKEN.value, TaskStatus.FAILED.value):
        return BAD_STATUS, f"jediTaskID={task.jedi_task_id} is {task.status}: a {task.status} task cannot be retried"
    if task.status != TaskStatus.FINISHED.value:
        return _refuse(task, "retry", [TaskStatus.FINISHED.value])
    fields = {}
    if new_params:
        fields, error = _retry_fields(new_params)
        if error:
            return BAD_STATUS, error
    TaskInput = models.TaskInput
    # Each failed input gets a fresh round of maxAttempt attempts, numbered on from its last one.
    rounds = fields.get(models.Task.max_attempt, task.max_attempt)
    n_failed = TaskInput.update(status="ready", max_attempt=TaskInput.attempt_nr + rounds).where(
        TaskInput.task_id == task.jedi_task_id, TaskInput.status == "failed").execute()
    states.change_task_status([task.jedi_task_id], TaskStatus.TORETRY, f"retry by {identity.name}: {n_failed} failed "
                              "inputs", fields=fields)
    if new_params:
        return NEW_PARAMS, (f"{TaskStatus.TORETRY.value}. new tasks params have been set to "
                            f"jediTaskID={task.jedi_task_id}. ")
    return OK, f"command=retry is registered for jediTaskID={task.jedi_task_id}: {n_failed} failed inputs"


def _retry_fields(new_params):
    if not isinstance(new_params, dict):
        return {}, "new_parameters: expected an object"
    fields = {}
    for key, value in new_params.items():
        if key not in RETRY_PARAMS:
            return {}, f"new_parameters.{key}: cannot be changed on retry; changeable: {', '.join(RETRY_PARAMS)}"
        column = getattr(models.Task, RETRY_PARAMS[key])
        if key in ("site", "excludedSite"):
            fields[column] = ",".join(value) if isinstance(value, list) else str(value or "")
        elif isinstance(value, int) and not isinstance(value, bool) and value >= (1 if key != "walltime" else 0):
            fields[column] = value
        else:
            return {}, f"new_parameters.{key}: expected a positive integer, got {value!r}"
    return fields, None


def _pause(task, identity, **_):
    if not states.change_task_status([task.jedi_task_id], TaskStatus.PAUSED, f"paused by {identity.name}",
                                     fields={models.Task.old_status: task.status}):
        return _refuse(task, "pause", states.task_sources(TaskStatus.PAUSED))
    return OK, f"command=pause is registered for jediTaskID={task.jedi_task_id}"


def _resume(task, identity, **_):
    if task.status != TaskStatus.PAUSED.value:
        return _refuse(task, "resume", [TaskStatus.PAUSED.value])
    back = {"scouted": TaskStatus.RUNNING,
            "pending": TaskStatus.READY}.get(task.old_status) or TaskStatus(task.old_status or "ready")
    states.change_task_status([task.jedi_task_id], back, f"resumed by {identity.name}")
    return OK, f"command=resume is registered for jediTaskID={task.jedi_task_id}"


# ---- queries -------------------------------------------------------------------------------------------------------

def get_task(task_id):
    """The Task with this id (any form of integer), or None."""
    try:
        return models.Task.get_or_none(models.Task.jedi_task_id == int(task_id))
    except (TypeError, ValueError):
        return None


def input_counts(task_ids):
    """{task_id: {input status: count}}, from the counts the database keeps (minipanda.core.counts)."""
    return inputs_by_task(list(task_ids))


def job_counts(task_id):
    """{job status: count} of the task's jobs (every attempt), from the counts the database keeps."""
    return jobs_by_task([task_id])[task_id]


def task_dict(task, counts=None):
    """A JediTaskSpec-shaped dict (the keys pbook and the monitor read)."""
    counts = counts if counts is not None else input_counts([task.jedi_task_id])[task.jedi_task_id]
    total = sum(counts.values())
    done, failed = counts.get("finished", 0), counts.get("failed", 0)
    return {
        "jediTaskID": task.jedi_task_id, "reqID": task.req_id, "taskName": task.task_name,
        "userName": task.user_name, "status": task.status, "superStatus": SUPER_STATUS.get(task.status, "running"),
        "creationDate": task.creation_time, "modificationTime": task.modification_time,
        "startTime": task.start_time, "endTime": task.end_time, "prodSourceLabel": task.prod_source_label,
        "vo": task.vo, "workingGroup": task.working_group, "site": task.site or None,
        "excludedSite": task.excluded_site or None, "coreCount": task.core_count, "ramCount": task.ram_count,
        "ramUnit": "MB", "walltime": task.walltime, "walltimeUnit": "s", "taskPriority": task.task_priority,
        "currentPriority": task.task_priority, "errorDialog": task.error_dialog, "parent_tid": task.parent_tid,
        "inDS": task.in_ds, "nFiles": total, "nFilesFinished": done, "nFilesFailed": failed,
        "nFilesMissing": 0, "nFilesWaiting": total - done - failed,
        "pctFinished": int(100 * done / total) if total else 0, "pctFailed": int(100 * failed / total) if total else 0,
        "maxAttempt": task.max_attempt, "nScouts": task.n_scouts, "nJobsPlanned": task.n_chunks,
    }


def details(task, include_parameters=False):
    """task/get_details: the task dict plus job statistics, PandaIDs and (optionally) parameters."""
    counts = input_counts([task.jedi_task_id])[task.jedi_task_id]
    out = task_dict(task, counts)
    out["inputStatistics"] = counts
    jobs = job_counts(task.jedi_task_id)
    out["statistics"] = ",".join(f"{s}:{n}" for s, n in sorted(jobs.items()))
    out["jobStatistics"] = jobs
    out["outDS"] = ",".join(d.name for d in models.Dataset.select(models.Dataset.name).where(
        models.Dataset.task_id == task.jedi_task_id, models.Dataset.type == "output"))
    out["PandaID"] = job_ids(task.jedi_task_id)
    if include_parameters:
        out["taskParams"] = json.loads(task.params)
    return out


def job_ids(task_id):
    """The PandaIDs of every job of the task, every attempt, in order."""
    Job = models.Job
    return [row[0] for row in Job.select(Job.panda_id).where(Job.task_id == task_id).order_by(Job.panda_id).tuples()]


def task_log(task_id):
    """The task's state changes, oldest first."""
    rows = models.TaskLog.select().where(models.TaskLog.task_id == task_id).order_by(models.TaskLog.id)
    return [{"time": r.time, "from": r.old_status, "to": r.new_status, "reason": r.reason} for r in rows]


def parse_time(value, name="since"):
    """A '%Y-%m-%d %H:%M:%S' string (panda-client's format) or None for "None"/empty."""
    if value in (None, "", "None", "NULL"):
        return None
    try:
        return datetime.datetime.strptime(str(value)[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        from minipanda.errors import RequestError

        raise RequestError(f"{name}: expected 'YYYY-MM-DD hh:mm:ss' (UTC), got {str(value)[:40]!r}") from None


FILTER_COLUMNS = {"jeditaskid": "jedi_task_id", "reqid": "req_id", "status": "status", "taskname": "task_name",
                  "username": "user_name", "prodsourcelabel": "prod_source_label"}


def find_tasks(identity, since=None, filters=None, limit=1000):
    """Tasks for pbook and ``minipanda task list``: newest first, scoped to the caller unless admin.

    Filters (case-insensitive keys): jediTaskID, reqID, status, superStatus, taskName (``*`` wildcards),
    userName (only admins may name another user), prodSourceLabel.
    """
    Task = models.Task
    query = Task.select().order_by(Task.jedi_task_id.desc()).limit(max(1, min(int(limit), 100000)))
    filters = {str(k).lower(): v for k, v in (filters or {}).items() if v not in (None, "")}
    if not policy.manages_all(identity):
        query = query.where(Task.user_name == identity.name)
    if since is not None:
        query = query.where(Task.modification_time >= since)
    for key, value in filters.items():
        value = str(value)
        if key == "superstatus":
            wanted = [s for s, sup in SUPER_STATUS.items() if sup == value]
            if value == "running":
                wanted = [s.value for s in TaskStatus if s.value not in SUPER_STATUS]
            query = query.where(Task.status.in_(wanted))
        elif key == "username":
            query = query.where(fn.LOWER(Task.user_name) == value.lower())
        elif key == "taskname" and "*" in value:
            query = query.where(Task.task_name ** value.replace("*", "%"))
        elif key in FILTER_COLUMNS:
            column = getattr(Task, FILTER_COLUMNS[key])
            if key in ("jeditaskid", "reqid"):
                if not value.isdigit():
                    return []
                value = int(value)
            query = query.where(column == value)
    tasks = list(query)
    counts = input_counts([t.jedi_task_id for t in tasks])
    return [task_dict(t, counts[t.jedi_task_id]) for t in tasks]


def modified_since(identity, since, min_task_id=None, label=None):
    """{jediTaskID: [PandaIDs]} of the caller's tasks modified since ``since`` (get_tasks_modified_since)."""
    Task = models.Task
    query = Task.select(Task.jedi_task_id).where(Task.user_name == identity.name)
    if since is not None:
        query = query.where(Task.modification_time >= since)
    if min_task_id is not None:
        query = query.where(Task.jedi_task_id > min_task_id)
    if label:
        query = query.where(Task.prod_source_label == label)
    return {tid: job_ids(tid) for (tid,) in query.tuples()}
