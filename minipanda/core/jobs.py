"""Job services: submit, status, description, kill (pilot updates: :mod:`minipanda.core.updates`). Called by
both protocol families.

Each function runs in one short transaction and returns plain data; the route layer turns that data into the
legacy ``StatusCode`` reply or the v1 ``{success, message, data}`` envelope.
"""
import json
import logging

from minipanda.core import archive, bulk, counts, jobspec, models, policy, states
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
    parsed, errors = [], []
    for index, spec in enumerate(specs):
        where = f"jobs[{index}]"
        try:
            if isinstance(spec, list):
                spec = jobspec.positional_to_dict(spec, where)
            parsed.append(jobspec.parse_submitted(spec, where))
        except SpecError as exc:
            errors.extend(exc.errors)
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise RequestError("invalid job specs: " + "; ".join(shown))
    if role == "user":  # see policy.user_job_refusals
        refusals = [r for index, (columns, _, _) in enumerate(parsed)
                    for r in policy.user_job_refusals(columns, f"jobs[{index}]")]
        if refusals:
            raise RequestError("; ".join(refusals[:20]), SC_ROLE, 403)
    now = states.utcnow()
    with database.atomic():
        if queue_ensurer:
            queue_ensurer({columns["computing_site"] for columns, _, _ in parsed})
        results = _insert_jobs(parsed, user, now)
    log.info("user %s submitted %d jobs: PandaIDs %s..%s", user, len(results), results[0][0], results[-1][0])
    return results


def _insert_jobs(parsed, user, now):
    """The jobs, their files and their first status-log rows, each in multi-row statements (a job at a time cost
    ~0.4 ms of peewee per job); [[PandaID, jobDefinitionID, jobName], ...] in order."""
    ids = bulk.new_panda_ids(len(parsed))
    job_rows, file_rows, results = [], [], []
    guids = iter(jobspec.new_guids(sum(1 for _, _, files in parsed for f in files
                                       if f["type"] in ("output", "log") and not f["guid"])))
    for panda_id, (columns, attributes, files) in zip(ids, parsed):
        row = dict(columns, panda_id=panda_id, status=JobStatus.ACTIVATED.value, prod_user_name=user,
                   creation_time=now, modification_time=now, state_changed_time=now,
                   attributes=json.dumps(attributes) if attributes else "{}")
        row.setdefault("assigned_priority", row.get("current_priority", 1000))
        row["job_name"] = row.get("job_name") or f"job.{panda_id}"
        job_rows.append(row)
        results.append([panda_id, row.get("job_definition_id", 0), row["job_name"]])
        for f in files:
            f = dict(f, job=panda_id)
            if f["type"] in ("output", "log") and not f["guid"]:
                f["guid"] = next(guids)
            f["status"] = "ready" if f["type"] == "input" else "defined"
            file_rows.append(f)
    with counts.bulk_jobs(len(job_rows)) as moves:  # the live counts: one upsert per submission, not a trigger per job
        for start in range(0, len(job_rows), 1000):
            chunk = job_rows[start:start + 1000]
            bulk.insert_model_rows(models.Job, chunk)
            moves.add_rows([(row.get("task_id"), row["computing_site"]) for row in chunk], None,
                           JobStatus.ACTIVATED.value, bulk.time_param(now))
    for start in range(0, len(file_rows), 2000):
        bulk.insert_model_rows(models.JobFile, file_rows[start:start + 2000])
    states.log_transitions([(panda_id, None) for panda_id in ids], JobStatus.ACTIVATED, f"submitted by {user}", now)
    return results


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
