"""Job services: submit, pilot updates, status, description, kill. Called by both protocol families.

Each function runs in one short transaction and returns plain data; the route layer turns that data into the
legacy ``StatusCode`` reply or the v1 ``{success, message, data}`` envelope.
"""
import json
import logging

from minipanda.core import archive, bulk, jobspec, models, policy, states
from minipanda.core.db import database
from minipanda.core.states import FINAL_JOB_STATES, QUEUED_JOB_STATES, JobStatus
from minipanda.errors import (PILOT_STATES, SC_FAILED, SC_MISSING_KEY, SC_OK, SC_ROLE, TOBEKILLED, InvalidTransition,
                              RequestError, SpecError)

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
    for panda_id, (columns, attributes, files) in zip(ids, parsed):
        row = dict(columns, panda_id=panda_id, status=JobStatus.ACTIVATED.value, prod_user_name=user,
                   creation_time=now, modification_time=now, state_changed_time=now, attributes=json.dumps(attributes))
        row.setdefault("assigned_priority", row.get("current_priority", 1000))
        row["job_name"] = row.get("job_name") or f"job.{panda_id}"
        job_rows.append(row)
        results.append([panda_id, row.get("job_definition_id", 0), row["job_name"]])
        for f in files:
            f = dict(f, job=panda_id)
            if f["type"] in ("output", "log") and not f["guid"]:
                f["guid"] = jobspec.new_guid()
            f["status"] = "ready" if f["type"] == "input" else "defined"
            file_rows.append(f)
    for start in range(0, len(job_rows), 1000):
        bulk.insert_model_rows(models.Job, job_rows[start:start + 1000])
    for start in range(0, len(file_rows), 2000):
        bulk.insert_model_rows(models.JobFile, file_rows[start:start + 2000])
    states.log_transitions([(panda_id, None) for panda_id in ids], JobStatus.ACTIVATED, f"submitted by {user}", now)
    return results


def parse_job_id(value, name="jobId"):
    """An integer job id from the wire, or a RequestError naming the field."""
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


def _reply(command=None, code=SC_OK, diag=None, **extra):
    out = {"StatusCode": code, "command": command or "NULL"}
    if diag:
        out["ErrorDiag"] = diag
    out.update(extra)
    return out


def _kill_reason(job, params):
    """Why this pilot must stop, or None: killed, another attempt, or another pilot owns the job."""
    if job.command_to_pilot == TOBEKILLED or job.status in (JobStatus.CANCELLED.value, JobStatus.CLOSED.value):
        return f"job {job.panda_id} was killed"
    attempt = params.get("attemptNr")
    if attempt not in (None, "", "NULL") and str(attempt).strip() != str(job.attempt_nr):
        return f"job {job.panda_id} is at attemptNr {job.attempt_nr}, the update is for {attempt}"
    pilot_id = params.get("pilotID")
    if pilot_id and job.pilot_id and pilot_id != job.pilot_id:
        return f"job {job.panda_id} was sent to another pilot"
    batch_id = params.get("batchID")
    if batch_id and job.batch_id and batch_id != job.batch_id:
        return f"job {job.panda_id} belongs to batch job {job.batch_id}, not {batch_id}"
    return None


def update_job(params):
    """Apply one pilot update (legacy updateJob / v1 pilot/update_job) and return the reply dict."""
    panda_id = parse_job_id(params.get("jobId"))
    state = params.get("state")
    if state not in PILOT_STATES:
        raise RequestError(f"state: expected one of {sorted(PILOT_STATES)}, got {state!r}")
    fields, fileinfo = _update_fields(params)
    with database.atomic():
        job = _job_for_update(panda_id)
        if job is None:
            log.warning("update for unknown job %s from %s", panda_id, params.get("node"))
            return _reply(TOBEKILLED, SC_FAILED, f"job {panda_id} is unknown")
        if job.status in {s.value for s in FINAL_JOB_STATES}:
            if state in ("finished", "failed") and job.status == state:
                return _reply(None, SC_OK, f"alreadydone: job {panda_id} is already {job.status}", alreadyDone=True)
            return _reply(TOBEKILLED, SC_OK, f"job {panda_id} is already {job.status}")
        reason = _kill_reason(job, params)
        if reason and not (state == "failed" and job.command_to_pilot == TOBEKILLED and not _foreign(job, params)):
            return _reply(TOBEKILLED, SC_OK, reason)
        if job.status in {s.value for s in QUEUED_JOB_STATES}:
            raise RequestError(f"job {panda_id} is {job.status}: it was never dispatched to a pilot", http=409)
        ownership = {}
        if not job.pilot_id and params.get("pilotID"):
            ownership[models.Job.pilot_id] = str(params["pilotID"])[:256]
        if not job.batch_id and params.get("batchID"):
            ownership[models.Job.batch_id] = str(params["batchID"])[:128]
        fields.update(ownership)
        fields[models.Job.heartbeat_time] = states.utcnow()
        if state == job.status:
            models.Job.update(fields).where(models.Job.panda_id == panda_id).execute()
        else:
            try:
                states.check_job_transition(job.status, state)
            except InvalidTransition as exc:
                raise RequestError(f"state: {exc}; job {panda_id} stays {job.status}", http=409) from None
            changed = states.change_job_status([panda_id], state, f"pilot reported {state}",
                                               from_states=[job.status], fields=fields)
            if not changed:  # someone else (a kill, the watchdog) changed the job first
                raise RequestError(f"job {panda_id} changed state concurrently; retry the update", SC_FAILED, 409)
        if fileinfo:
            _register_files(panda_id, fileinfo, state)
    command = job.command_to_pilot if job.command_to_pilot == TOBEKILLED else None
    return _reply(command)


def update_jobs(entries):
    """updateJobsInBulk: every entry applied in ONE transaction, each in a savepoint of its own, so an entry that
    is refused (bad parameters, a refused state change) is rolled back and answered alone while the others
    commit; the replies in order. ``entries`` are updateJob parameter dicts (anything else is refused)."""
    replies = []
    with database.atomic():
        for index, entry in enumerate(entries):
            try:
                if not isinstance(entry, dict):
                    raise RequestError(f"jobList[{index}]: expected an object")
                replies.append(update_job(entry))  # its own atomic() nests as a savepoint
            except RequestError as exc:
                diag = str(exc) if str(exc).startswith("jobList[") else f"jobList[{index}]: {exc}"
                replies.append({"StatusCode": exc.code, "ErrorDiag": diag, "command": "NULL"})
    return replies


_UPDATE_COLUMNS = ("panda_id", "status", "command_to_pilot", "attempt_nr", "pilot_id", "batch_id")


def _job_for_update(panda_id):
    """The few columns a pilot update reads, by one hand-written primary-key query (peewee took ~0.7 ms to render
    the SELECT of all ~70 job columns that get_or_none asked for)."""
    db = models.Job._meta.database
    row = db.execute_sql('SELECT %s FROM "job" WHERE "panda_id" = %s'
                         % (", ".join('"%s"' % c for c in _UPDATE_COLUMNS), db.param), (panda_id,)).fetchone()
    if row is None:
        return None
    job = models.Job(__no_default__=1)
    job.__data__ = dict(zip(_UPDATE_COLUMNS, row))
    return job


def _foreign(job, params):
    pilot_id = params.get("pilotID")
    return bool(pilot_id and job.pilot_id and pilot_id != job.pilot_id)


INT_FIELDS = {"transExitCode": "trans_exit_code", "pilotErrorCode": "pilot_error_code",
              "exeErrorCode": "exe_error_code", "cpuConsumptionTime": "cpu_consumption_time",
              "nEvents": "n_events", "maxRSS": "max_rss", "maxPSS": "max_pss", "maxVMEM": "max_vmem",
              "avgRSS": "avg_rss", "avgPSS": "avg_pss", "coreCount": "actual_core_count"}
METADATA_LIMIT = 1024 * 1024
WHOLE_TEXT_FIELDS = {"metaData", "jobMetrics"}
TEXT_FIELDS = {"pilotErrorDiag": "pilot_error_diag", "exeErrorDiag": "exe_error_diag",
               "cpuConsumptionUnit": "cpu_consumption_unit", "jobMetrics": "job_metrics",
               "pilotTiming": "pilot_timing", "metaData": "metadata", "node": "node"}


def _update_fields(params):
    errors, fields = [], {}
    for name, column in INT_FIELDS.items():
        value = jobspec.to_int(params.get(name), name, errors, jobspec.column_maximum(column))
        if value is not None:
            fields[getattr(models.Job, column)] = value
    for name, column in TEXT_FIELDS.items():
        value = params.get(name)
        if not jobspec.is_null(value):
            if not isinstance(value, str):
                value = json.dumps(value)
            if name in WHOLE_TEXT_FIELDS:
                # A job report is JSON: cutting it would corrupt it, so it is kept whole or refused.
                if len(value) > METADATA_LIMIT:
                    errors.append(f"{name}: {len(value)} characters; at most {METADATA_LIMIT} are kept")
                    continue
                fields[getattr(models.Job, column)] = value
            else:
                fields[getattr(models.Job, column)] = value[: models.TEXT_LIMIT]
    fileinfo = None
    xml = params.get("xml")
    if not jobspec.is_null(xml):
        try:
            fileinfo = json.loads(xml) if isinstance(xml, str) else xml
        except ValueError:
            errors.append("xml: expected JSON file info {lfn: {guid, fsize, adler32, surl}}")
        if fileinfo is not None and not isinstance(fileinfo, dict):
            errors.append("xml: expected a JSON object keyed by file name")
    if errors:
        raise RequestError("; ".join(errors))
    return fields, fileinfo


def _register_files(panda_id, fileinfo, state):
    known = {f.lfn: f for f in models.JobFile.select().where(models.JobFile.job == panda_id,
                                                             models.JobFile.type.in_(["output", "log"]))}
    for lfn, info in fileinfo.items():
        row = known.get(lfn)
        if row is None or not isinstance(info, dict):
            log.warning("job %s reported file %r that it does not declare as output; ignored", panda_id, lfn)
            continue
        adler = info.get("adler32") or info.get("checksum")
        update = {
            models.JobFile.guid: info.get("guid") or row.guid,
            models.JobFile.fsize: jobspec.to_int(info.get("fsize"), "fsize", []),
            models.JobFile.checksum: f"ad:{adler}" if adler and ":" not in str(adler) else adler,
            models.JobFile.surl: info.get("surl"),
            models.JobFile.status: "finished" if state == "finished" else "failed" if state == "failed" else "running",
        }
        models.JobFile.update(update).where(models.JobFile.row_id == row.row_id).execute()


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
