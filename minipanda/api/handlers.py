"""Family-agnostic handlers: a params dict and the caller in, plain data out. Both URL families call these.

Handlers parse and authorise, then call a service; they never write to the database themselves."""
import logging
import time

import pydantic

from minipanda.api import file_server, files, params as route_params
from minipanda.core import dispatch, jobs, policy, queues, updates
from minipanda.core.auth import PILOT_ROLES, require_role
from minipanda.errors import SC_MISSING_KEY, SC_ROLE, AuthError, RequestError
from minipanda.monitor import metrics
from minipanda.workers import pilot_status

log = logging.getLogger(__name__)

# v1 (snake_case) parameter names -> the legacy names the handlers read.
V1_ALIASES = {
    "site_name": "siteName", "computing_element": "computingElement", "prod_source_label": "prodSourceLabel",
    "memory": "mem", "disk_space": "diskSpace", "n_jobs": "nJobs", "core_count": "coreCount",
    "remaining_time": "remainingTime", "pilot_id": "pilotID", "batch_id": "batchID", "job_id": "jobId",
    "job_status": "state", "attempt_nr": "attemptNr", "trans_exit_code": "transExitCode",
    "pilot_error_code": "pilotErrorCode", "pilot_error_diag": "pilotErrorDiag", "exe_error_code": "exeErrorCode",
    "exe_error_diag": "exeErrorDiag", "cpu_consumption_time": "cpuConsumptionTime",
    "cpu_consumption_unit": "cpuConsumptionUnit", "n_events": "nEvents", "meta_data": "metaData",
    "job_metrics": "jobMetrics", "pilot_timing": "pilotTiming", "worker_id": "worker_id",
    "harvester_id": "harvester_id", "max_rss": "maxRSS", "max_pss": "maxPSS", "max_vmem": "maxVMEM",
}
RESOURCE_TYPES = [
    {"resource_name": "SCORE", "mincore": 1, "maxcore": 1, "minrampercore": 0, "maxrampercore": 2000},
    {"resource_name": "SCORE_HIMEM", "mincore": 1, "maxcore": 1, "minrampercore": 2001, "maxrampercore": None},
    {"resource_name": "MCORE", "mincore": 2, "maxcore": None, "minrampercore": 0, "maxrampercore": 2000},
    {"resource_name": "MCORE_HIMEM", "mincore": 2, "maxcore": None, "minrampercore": 2001, "maxrampercore": None},
]


def from_v1(params):
    """Rename v1 parameters to their legacy names; legacy names pass through."""
    if V1_ALIASES.keys().isdisjoint(params):  # legacy already (every entry of a legacy updateJobsInBulk)
        return params
    return {V1_ALIASES.get(k, k): v for k, v in params.items()}


def acquire_jobs(params, identity):
    """getJob / pilot/acquire_jobs: claim up to nJobs matching jobs; return (definitions, bulk?, why none).

    ``params`` were checked against the route's declared offer (minipanda.api.params): numbers are integers in
    range or None, texts are strings within their column or None.
    """
    require_role(identity, PILOT_ROLES)
    queue = params.get("computingElement") or params.get("siteName")
    if not queue or not isinstance(queue, str):
        raise RequestError("computingElement or siteName: required (the queue the pilot serves)", SC_MISSING_KEY)
    harvester_id, worker_id = bound_ids(identity, params.get("harvester_id"), params.get("worker_id"))
    refusal = policy.queue_refusal(identity, queue)
    if refusal:
        raise AuthError(refusal, 403)
    cores = params.get("coreCount")
    pilot_label = params.get("prodSourceLabel") or "managed"
    served, queue_cores = queues.offer_rules(queue)
    labels, why_none = policy.claimable_labels(pilot_label, *served)
    if not labels:
        return [], params.get("nJobs") not in (None, ""), f"queue {queue} is {why_none}" if why_none == "offline" \
            else f"no jobs for this pilot on queue {queue}: {why_none}"
    offer = dispatch.Offer(labels=tuple(labels),
        queue=queue, prod_source_label=pilot_label,
        cores=cores if cores is not None else queue_cores,
        memory_mb=params.get("mem"), disk_mb=params.get("diskSpace"), walltime_s=params.get("remainingTime"),
        n_jobs=params.get("nJobs") or 1, node=params.get("node"), pilot_id=params.get("pilotID"),
        batch_id=params.get("batchID"), harvester_id=harvester_id, worker_id=worker_id)
    started = time.perf_counter()
    definitions = dispatch.claim_jobs(offer)
    metrics.observe_dispatch(time.perf_counter() - started, bool(definitions))
    definitions = file_server.with_server_url(definitions)  # prun jobs' ${SURL}: this server, as the pilot sees it
    why = "" if definitions else f"no jobs available for queue {queue} and this offer"
    return definitions, params.get("nJobs") not in (None, ""), why


def bound_ids(identity, harvester_id, worker_id):
    """(harvester id, worker id) a request acts for: refused (403) when the token is bound to others; filled in
    from the token when it is bound and the request leaves them out."""
    refusal = policy.harvester_refusal(identity, harvester_id, worker_id)
    if refusal:
        raise AuthError(refusal, 403)
    if identity.role == "admin" or identity.harvester_id is None:
        return harvester_id, worker_id
    return identity.harvester_id, worker_id if identity.worker_id is None else identity.worker_id


def update_job(params, identity):
    require_role(identity, PILOT_ROLES)
    return updates.update_job(params, policy.update_binding(identity), files.request_store())


def update_jobs_bulk(job_list, identity):
    """All updates in one transaction; one bad entry is refused alone and does not stop the others. Each entry's
    parameters are checked as updateJob's are (minipanda.api.params.UPDATE_V1: legacy and v1 names)."""
    require_role(identity, PILOT_ROLES)
    if isinstance(job_list, str):
        try:
            job_list = route_params.parse_json(job_list)
        except ValueError as exc:
            raise RequestError(f"jobList: expected a JSON list of updateJob parameter objects ({exc})") from None
    if not isinstance(job_list, list):
        raise RequestError("jobList: expected a list of updateJob parameter objects", SC_MISSING_KEY)
    return updates.update_jobs(job_list, check=lambda entry: from_v1(checked_entry(entry)),
                               binding=policy.update_binding(identity), store=files.request_store())


def checked_entry(entry):
    """One bulk entry's parameters, checked as a single update's are; a RequestError names each bad field."""
    try:
        return route_params.check(route_params.UPDATE_V1, entry)
    except pydantic.ValidationError as exc:
        raise RequestError("; ".join(route_params.problems(exc)[:20])) from None


def worker_pilot_status(params, identity):
    """updateWorkerPilotStatus: a pilot says it started or finished inside a harvester worker."""
    require_role(identity, PILOT_ROLES)
    errors = []
    worker_id, harvester_id, status = params.get("workerID"), params.get("harvesterID"), params.get("status")
    if worker_id is None:
        errors.append("workerID: required")
    if not harvester_id:
        errors.append("harvesterID: required")
    if status not in pilot_status.PILOT_STATUSES:
        errors.append(f"status: expected 'started' or 'finished', got {status!r}")
    if errors:
        raise RequestError("; ".join(errors), SC_MISSING_KEY)
    bound_ids(identity, harvester_id, worker_id)
    pilot_status.record(harvester_id, worker_id, status, params.get("site") or "", params.get("node_id"))
    return {"StatusCode": 0}


def submit(jobs_param, identity):
    """job/submit: the jobs may be a JSON string (panda-client) or a list; the role limits what they may ask."""
    if identity.role == "harvester":  # a harvester runs jobs for pilots; it has no business making them
        raise RequestError("role 'harvester' may not submit jobs", SC_ROLE, 403)
    if isinstance(jobs_param, str):
        try:
            jobs_param = route_params.parse_json(jobs_param)
        except ValueError as exc:
            raise RequestError(f"jobs: {exc}") from None
    return jobs.submit_jobs(jobs_param, identity.name, queue_ensurer=queues.ensure_queues, role=identity.role)


def job_ids(params, *names):
    """The job id list from whichever of ``names`` is present."""
    for name in names:
        if params.get(name) not in (None, ""):
            value = params[name]
            if isinstance(value, str) and value.lstrip().startswith("["):
                try:
                    value = route_params.parse_json(value)
                except ValueError as exc:
                    raise RequestError(f"{name}: {exc}") from None
            return jobs.parse_job_ids(value, name)
    raise RequestError(f"{names[0]}: required (a list of PandaIDs)", SC_MISSING_KEY)


def kill(params, identity):
    ids = job_ids(params, "job_ids", "ids")
    return jobs.kill_jobs(ids, identity.name, policy.manages_all(identity), params.get("code"))


def list_jobs(params):
    """Our own job listing (no PanDA equivalent): newest first, filtered by status, queue, user, task."""
    return jobs.list_jobs(params.get("limit") or 100, params.get("task_id"),
                          **{name: params[name] for name in ("status", "queue", "user") if params.get(name)})
