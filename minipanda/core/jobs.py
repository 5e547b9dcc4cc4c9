"""Job services: submit, status, description, kill (pilot updates: :mod:`minipanda.core.updates`). Called by
both protocol families.

Each function runs in one short transaction and returns plain data; the route layer turns that data into the
legacy ``StatusCode`` reply or the v1 ``{success, message, data}`` envelope.
"""
import json
import logging

from minipanda.core import archive, bulk, counts, jobcolumns, jobspec, models, policy, states
from minipanda.core.db import database
from minipanda.core.states import FINAL_JOB_STATES, QUEUED_JOB_STATES, JobStatus
from minipanda.errors import SC_MISSING_KEY, SC_ROLE, TOBEKILLED, RequestError, SpecError

log = logging.getLogger(__name__)


def submit_jobs(specs, user, queue_ensurer=None, role="admin"):
    """Validate every spec first, then insert all jobs as ``activated`` in one transaction.

    Args:
        specs: list of dicts (JobSpec names) or panda-client positional lists.
        user: submitting user's name, stored as prodUserName.
        queue_ensurer: callable(queue names) registering queues that are new to the server.
        role: the caller's role; a plain "user" gets user jobs only (the default label), no task ids, and
            priorities up to 1000.

    Returns:
        [[PandaID, jobDefinitionID, jobName], ...] in submission order, as PanDA answers.
    """
    if not isinstance(specs, list) or not specs:
        raise RequestError("jobs: expected a non-empty list of job specs")
    if len(specs) > jobspec.MAX_JOBS_PER_SUBMIT:
        raise RequestError(f"jobs: {len(specs)} jobs in one call; at most {jobspec.MAX_JOBS_PER_SUBMIT} are accepted")
    batch, errors = jobcolumns.parse(specs)
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise RequestError("invalid job specs: " + "; ".join(shown))
    if role == "user":  # see policy.user_job_refusals
        _refuse_for_users(batch)
    now = states.utcnow()
    with database.atomic():
        if queue_ensurer:
            queue_ensurer(set(batch.columns["computing_site"]))
        results = _insert_jobs(batch, user, now)
    log.info("user %s submitted %d jobs: PandaIDs %s..%s", user, len(results), results[0][0], results[-1][0])
    return results


_USER_COLUMNS = ("prod_source_label", "task_id", "current_priority", "assigned_priority")


def _refuse_for_users(batch):
    """policy.user_job_refusals over each job (which fills in the label it gives user jobs); RequestError (403)
    naming the jobs and fields refused."""
    labels, refusals = [], []
    for index, values in enumerate(zip(*map(batch.column, _USER_COLUMNS))):
        columns = {column: value for column, value in zip(_USER_COLUMNS, values) if value is not None}
        refusals += policy.user_job_refusals(columns, f"jobs[{index}]")
        labels.append(columns["prod_source_label"])
    if refusals:
        raise RequestError("; ".join(refusals[:20]), SC_ROLE, 403)
    batch.columns["prod_source_label"] = labels


def _insert_jobs(batch, user, now):
    """The jobs, their files and their first status-log rows, column by column, in multi-row statements (a job
    at a time cost ~0.4 ms of peewee per job; a dict per job, ~25 values bound per job, still a third of a
    5,000-job submission); [[PandaID, jobDefinitionID, jobName], ...] in order."""
    n, fields = batch.n, models.Job._meta.fields
    ids = bulk.new_panda_ids(n)
    columns = {}
    for column, values in batch.columns.items():  # a job that gave no value gets the field's default
        if None in values:
            default = fields[column].default
            default = default() if callable(default) else default
            values = [default if value is None else value for value in values]
        columns[column] = values
    names = batch.column("job_name")
    columns["job_name"] = [name or f"job.{panda_id}" for panda_id, name in zip(ids, names)]
    if "assigned_priority" not in batch.columns or None in batch.columns["assigned_priority"]:
        columns["assigned_priority"] = [current if assigned is None else assigned for assigned, current in
                                        zip(batch.column("assigned_priority"), columns.get("current_priority",
                                                                                         [1000] * n))]
    columns.update(panda_id=ids, status=[JobStatus.ACTIVATED.value] * n, prod_user_name=[user] * n,
                   creation_time=[now] * n, modification_time=[now] * n, state_changed_time=[now] * n,
                   attributes=[json.dumps(attributes) if attributes else "{}" for attributes in batch.attributes])
    results = list(map(list, zip(ids, columns.get("job_definition_id", [0] * n), columns["job_name"])))
    queues = list(zip(batch.column("task_id"), columns["computing_site"]))
    with counts.bulk_jobs(n) as moves:  # the live counts: one upsert per submission, not a trigger per job
        for start in range(0, n, 1000):
            bulk.insert_model_columns(models.Job, min(1000, n - start),
                                      {column: values[start:start + 1000] for column, values in columns.items()})
            moves.add_rows(queues[start:start + 1000], None, JobStatus.ACTIVATED.value, bulk.time_param(now))
    _insert_files(batch, ids)
    states.log_transitions([(panda_id, None) for panda_id in ids], JobStatus.ACTIVATED, f"submitted by {user}", now)
    return results


_FILE_STATUS = {kind: "ready" if kind == "input" else "defined" for kind in jobspec.FILE_TYPES}


def _insert_files(batch, ids):
    """The jobs' files; an output or a log without a GUID gets a new one."""
    files, n = dict(batch.files), len(batch.file_jobs)
    if not n:
        return
    missing = [position for position, (kind, guid) in enumerate(zip(files["type"], files["guid"]))
               if guid is None and kind in ("output", "log")]
    if missing:
        guids = files["guid"] = list(files["guid"])
        for position, guid in zip(missing, jobspec.new_guids(len(missing))):
            guids[position] = guid
    files.update(job=list(map(ids.__getitem__, batch.file_jobs)), status=list(map(_FILE_STATUS.get, files["type"])))
    for start in range(0, n, 2000):
        bulk.insert_model_columns(models.JobFile, min(2000, n - start),
                                  {column: values[start:start + 2000] for column, values in files.items()})


def parse_job_id(value, name="jobId"):
    """An integer job id from the wire, or a RequestError naming the field."""
    if type(value) is int and 0 <= value <= jobspec.INT64_MAX:  # a JSON report's id: nothing to parse
        return value
    if value is None or value == "":
        raise RequestError(f"{name}: required", code=SC_MISSING_KEY)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RequestError(f"{name}: expected an integer PandaID, got {str(value)[:40]!r}") from None
    if not 0 <= number <= jobspec.INT64_MAX:
        raise RequestError(f"{name}: no job has id {str(value)[:40]}")
    return number


def parse_job_ids(value, name="ids"):
    """A list of job ids from a list, or a comma-separated string."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise RequestError(f"{name}: expected a list of PandaIDs", code=SC_MISSING_KEY)
    if len(value) > 10000:
        raise RequestError(f"{name}: at most 10000 ids per call")
    return [parse_job_id(v, name) for v in value]


def get_status(panda_ids):
    """[(panda_id, status or None, attemptNr, command)] for each requested id, in order."""
    rows = {j.panda_id: j for j in models.Job.select(models.Job.panda_id, models.Job.status, models.Job.attempt_nr,
                                                     models.Job.command_to_pilot)
            .where(models.Job.panda_id.in_(panda_ids))}
    out = []
    for pid in panda_ids:
        job = rows.get(pid)
        out.append((pid, job.status if job else None, job.attempt_nr if job else None,
                    (job.command_to_pilot or "NULL") if job else None))
    return out


def describe_jobs(panda_ids, include_archive=False):
    """job/get_description: a JobSpec-shaped dict per id (None for an unknown id), in request order.

    ``include_archive`` (job/get_description_incl_archive): a job the retention duty archived is described too,
    with ``archived`` naming its archive (live jobs have no such key)."""
    jobs = {j.panda_id: j for j in models.Job.select().where(models.Job.panda_id.in_(panda_ids))}
    files = jobspec.load_files(list(jobs))
    out = []
    for pid in panda_ids:
        if pid in jobs:
            out.append(jobspec.describe(jobs[pid], files[pid]))
            continue
        found = archive.find("job", pid) if include_archive else None
        out.append(dict(jobspec.describe(found.first("job"), found.rows["job_file"]), archived=found.where)
                   if found else None)
    return out


def kill_jobs(panda_ids, user, manages_all, code=None):
    """Kill jobs: queued ones become cancelled now; dispatched ones get ``tobekilled`` on their next update.

    Returns one bool per id: True when the kill was registered, False for unknown, final, or foreign jobs.
    """
    results = []
    reason = f"killed by {user}" + (f" (code {code})" if code is not None else "")
    with database.atomic():
        jobs = {j.panda_id: j for j in models.Job.select().where(models.Job.panda_id.in_(panda_ids))}
        for pid in panda_ids:
            job = jobs.get(pid)
            if job is None or job.status in {s.value for s in FINAL_JOB_STATES}:
                results.append(False)
            elif not manages_all and job.prod_user_name != user:
                results.append(False)
            elif job.status in {s.value for s in QUEUED_JOB_STATES}:
                done = states.change_job_status([pid], JobStatus.CANCELLED, reason, from_states=[job.status],
                                                fields={models.Job.sup_error_diag: reason})
                results.append(bool(done))
            else:
                models.Job.update(command_to_pilot=TOBEKILLED, sup_error_diag=reason).where(
                    models.Job.panda_id == pid).execute()
                results.append(True)
    log.info("%s killed jobs %s: %s", user, panda_ids, results)
    return results


def list_jobs(limit=100, task_id=None, status=None, queue=None, user=None):
    """Our own job listing (no PanDA equivalent): newest first, at most 10,000 rows, filtered as asked."""
    Job = models.Job
    query = Job.select().order_by(Job.panda_id.desc()).limit(min(limit, 10000))
    for value, column in ((status, Job.status), (queue, Job.computing_site), (user, Job.prod_user_name),
                          (task_id, Job.task_id)):
        if value is not None:
            query = query.where(column == value)
    return [{"PandaID": j.panda_id, "jobName": j.job_name, "jobStatus": j.status, "computingSite": j.computing_site,
             "prodUserName": j.prod_user_name, "attemptNr": j.attempt_nr, "currentPriority": j.current_priority,
             "taskID": j.task_id, "creationTime": j.creation_time, "stateChangeTime": j.state_changed_time,
             "pilotErrorCode": j.pilot_error_code, "transExitCode": j.trans_exit_code} for j in query]


def status_log(panda_id):
    """The transitions of one job and the notes about it, oldest first (from the archive for an archived job)."""
    rows = list(models.StatusLog.select().where(models.StatusLog.panda_id == panda_id).order_by(models.StatusLog.id))
    if not rows and not models.Job.select().where(models.Job.panda_id == panda_id).exists():
        found = archive.find("job", panda_id)
        rows = found.rows["status_log"] if found else []
    return [{"time": r.time, "from": r.old_status, "to": r.new_status, "reason": r.reason, "kind": r.kind}
            for r in rows]
