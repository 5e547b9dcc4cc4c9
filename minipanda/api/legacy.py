"""The legacy pilot family ``/server/panda/<method>``: what PanDA pilot3 calls.

Replies are JSON when the client sends ``Accept: application/json`` (pilot3 always does), else PanDA's
URL-encoded ``StatusCode=0&...`` form.
"""
import bottle
from minipanda.api import handlers, params as route_params, wire
from minipanda.core import jobs
from minipanda.errors import SC_NO_JOBS, SC_OK

BASE = "/server/panda"


def reply(data):
    ctype, body = wire.legacy_body(data, wire.wants_json(bottle.request))
    bottle.response.content_type = ctype
    return body


def get_job(params, identity):
    definitions, bulk, why = handlers.acquire_jobs(params, identity)
    if bulk:
        reply_data = {"StatusCode": SC_OK if definitions else SC_NO_JOBS, "jobs": definitions, "nSent": len(definitions)}
        return reply(dict(reply_data, errorDialog=why) if why else reply_data)
    if not definitions:
        return reply({"StatusCode": SC_NO_JOBS, "errorDialog": why})
    return reply(dict(definitions[0], StatusCode=SC_OK))


def update_job(params, identity):
    return reply(handlers.update_job(params, identity))


def update_jobs_in_bulk(params, identity):
    return reply({"StatusCode": SC_OK, "results": handlers.update_jobs_bulk(params.get("jobList"), identity)})


def get_status(params, identity):
    rows = jobs.get_status(handlers.job_ids(params, "ids", "job_ids"))
    return reply({"StatusCode": SC_OK, "status": [r[1] for r in rows], "attemptNr": [r[2] for r in rows],
                  "command": [r[3] for r in rows]})


def update_worker_pilot_status(params, identity):
    return reply(handlers.worker_pilot_status(params, identity))


def get_resource_types(params, identity):
    return reply({"StatusCode": SC_OK, "ResourceTypes": handlers.RESOURCE_TYPES})


def is_alive(params, identity):
    return reply({"alive": "yes"})


READS = {"getStatus", "getResourceTypes", "isAlive"}


def register(app):
    pilot = handlers.PILOT_ROLES
    routes = [
        ("getJob", get_job, pilot), ("updateJob", update_job, pilot),
        ("updateJobsInBulk", update_jobs_in_bulk, pilot), ("getStatus", get_status, None),
        ("updateWorkerPilotStatus", update_worker_pilot_status, pilot),
        ("getResourceTypes", get_resource_types, None), ("isAlive", is_alive, None),
    ]
    for name, callback, role in routes:
        app.route(f"{BASE}/{name}", route_params.methods(name not in READS), callback, family="legacy", role=role,
                  params_model=route_params.LEGACY[name])
