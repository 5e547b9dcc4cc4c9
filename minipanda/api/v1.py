"""The ``/api/v1/<module>/<method>`` family (panda-client 2.x, Harvester): replies ``{success, message, data}``."""
import bottle
from minipanda import errors
from minipanda.api import handlers, params as route_params, wire
from minipanda.core import jobs, queues
from minipanda.core.auth import PILOT_ROLES

BASE = "/api/v1"


def ok(data=None, message=""):
    bottle.response.content_type = "application/json"
    return wire.envelope(data, message)


def is_alive(params, identity):
    return ok(None, "alive")


def acquire_jobs(params, identity):
    definitions, _, why = handlers.acquire_jobs(handlers.from_v1(params), identity)
    return ok(definitions, f"{len(definitions)} jobs" if definitions else why)


def update_job(params, identity):
    reply = handlers.update_job(handlers.from_v1(params), identity)
    return ok(reply, reply.get("ErrorDiag", ""))


def update_jobs_bulk(params, identity):
    return ok(handlers.update_jobs_bulk(params.get("job_list", params.get("jobList")), identity))


def update_worker_node(params, identity):
    # pilot3 reports node hardware here; minipanda has no use for it yet and says so rather than failing the pilot.
    return ok(None, "worker node information accepted and not stored")


def get_status(params, identity):
    rows = jobs.get_status(handlers.job_ids(params, "job_ids", "ids"))
    return ok([{"job_id": pid, "status": status, "attempt_nr": attempt, "command": command}
               for pid, status, attempt, command in rows])


def submit(params, identity):
    if "jobs" not in params:
        raise errors.RequestError("jobs: required (a list of job specs, or that list as a JSON string)",
                                errors.SC_MISSING_KEY)
    return ok(handlers.submit(params["jobs"], identity), "succeeded")


def get_description(params, identity):
    return ok(jobs.describe_jobs(handlers.job_ids(params, "job_ids", "ids")))


def get_description_incl_archive(params, identity):
    return ok(jobs.describe_jobs(handlers.job_ids(params, "job_ids", "ids"), include_archive=True))


def kill(params, identity):
    return ok(handlers.kill(params, identity))


def list_jobs(params, identity):
    return ok(handlers.list_jobs(params))


def list_queues(params, identity):
    return ok(queues.queue_list())


def job_log(params, identity):
    panda_id = jobs.parse_job_id(params.get("job_id"), "job_id")
    return ok(jobs.status_log(panda_id))


READS = {"system/is_alive", "job/get_status", "job/get_description", "job/get_description_incl_archive",
         "job/list", "job/get_status_log", "queues"}


def register(app):
    routes = [
        ("system/is_alive", is_alive, None),
        ("pilot/acquire_jobs", acquire_jobs, PILOT_ROLES), ("pilot/update_job", update_job, PILOT_ROLES),
        ("pilot/update_jobs_bulk", update_jobs_bulk, PILOT_ROLES),
        ("pilot/update_worker_node", update_worker_node, PILOT_ROLES),
        ("pilot/update_worker_node_gpu", update_worker_node, PILOT_ROLES),
        ("job/get_status", get_status, None), ("job/submit", submit, "any"),
        ("job/get_description", get_description, None),
        ("job/get_description_incl_archive", get_description_incl_archive, None),
        ("job/kill", kill, "any"), ("job/list", list_jobs, None), ("job/get_status_log", job_log, None),
        ("queues", list_queues, None),
    ]
    for path, callback, role in routes:
        app.route(f"{BASE}/{path}", route_params.methods(path not in READS), callback, family="v1", role=role,
                  params_model=route_params.V1[path])
    from minipanda.api import harvester as harvester_routes, tasks as task_routes

    task_routes.register(app)
    harvester_routes.register(app)
