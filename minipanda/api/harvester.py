"""The ``/api/v1/harvester/*`` routes: what harvester calls (role harvester or admin), and the admin routes behind
``minipanda worker list`` and ``minipanda harvester ...``. Routes parse and authorise; minipanda/workers/harvesters.py,
commands.py and pilot_tokens.py do the work. Refusals are HTTP 4xx with the field named in ``message``; see
docs/harvester.md."""
import bottle
from minipanda import errors
from minipanda.api import file_server, params as route_params, wire
from minipanda.core import dispatch, policy
from minipanda.core.auth import HARVESTER_ROLES
from minipanda.workers import commands, fields, harvesters, pilot_tokens

BASE = "/api/v1/harvester"
ADMIN = frozenset({"admin"})


def ok(data=None, message=""):
    bottle.response.content_type = "application/json"
    return wire.envelope(data, message)


def _harvester(params, identity):
    """The request's harvester_id, refused (403, both names) when the token is another harvester's."""
    harvester_id = fields.harvester_id_of(params.get("harvester_id"))
    refusal = policy.harvester_refusal(identity, harvester_id)
    if refusal:
        raise errors.AuthError(refusal, 403)
    return harvester_id


def heartbeat(params, identity):
    return ok(harvesters.heartbeat(_harvester(params, identity), params.get("version"), params.get("start_time"),
                                   params.get("host"), agents=params.get("agents"), queues=params.get("queues"),
                                   home=params.get("home")))


def update_workers(params, identity):
    harvester_id = _harvester(params, identity)
    results = harvesters.update_workers(harvester_id, params.get("workers"),
                                        wake=bottle.request.app.config["minipanda.context"].wake)
    refused = results.count(False)
    return ok(results, f"{len(results) - refused} stored, {refused} refused (the server log says why)"
              if refused else f"{len(results)} stored")


def report_worker_statistics(params, identity):
    harvesters.report_worker_statistics(_harvester(params, identity), params.get("panda_queue"),
                                        params.get("statistics"))
    return ok(None, "statistics stored")


def acquire_commands(params, identity):
    harvester_id = _harvester(params, identity)
    n_commands = fields.integer(params.get("n_commands", 1), "n_commands", minimum=1, maximum=1000)
    return ok(commands.acquire_commands(harvester_id, n_commands))


def acknowledge_commands(params, identity):
    harvester_id = _harvester(params, identity)
    ids = fields.id_list(params.get("command_ids"), "command_ids")
    return ok(None, f"{commands.acknowledge_commands(harvester_id, ids)} commands acknowledged")


def get_queue_demand(params, identity):
    _harvester(params, identity)
    names = fields.json_value(params.get("queues"), "queues")
    if not isinstance(names, list):
        raise errors.RequestError("queues: expected a list of queue names")
    return ok(harvesters.queue_demand(names))


def mint_pilot_token(params, identity):
    secret = bottle.request.app.config["minipanda.context"].secret
    return ok(pilot_tokens.mint_pilot_token(secret, _harvester(params, identity), params.get("worker_id"),
                                          params.get("queue"), params.get("lifetime"),
                                          panda_ids=params.get("panda_ids")))


def revoke_pilot_token(params, identity):
    return ok({"revoked": pilot_tokens.revoke_pilot_tokens(_harvester(params, identity), params.get("jtis"))})


# ---- admin: the CLI's view and control -------------------------------------------------------------------------

def _optional_harvester(params):
    value = params.get("harvester_id")
    return None if value in (None, "") else fields.harvester_id_of(value)


def list_workers(params, identity):
    limit = fields.integer(params.get("limit", 100), "limit", minimum=1, maximum=10000)
    return ok(harvesters.list_workers(
        queue=fields.text(params.get("queue"), "queue", 128), status=fields.text(params.get("status"),
                                                                                          "status", 32),
        harvester_id=_optional_harvester(params), limit=limit))


def list_instances(params, identity):
    return ok(harvesters.list_instances())


def add_command(params, identity):
    command_id = commands.add_command(params.get("command"), params.get("params"), _optional_harvester(params))
    return ok({"command_id": command_id}, f"command {command_id} queued")


def list_commands(params, identity):
    limit = fields.integer(params.get("limit", 100), "limit", minimum=1, maximum=10000)
    return ok(commands.list_commands(limit))


def get_sent_jobs(params, identity):
    """The jobs this harvester acquired for a queue that are still ``sent`` (adopted after a crash)."""
    harvester_id = _harvester(params, identity)
    queue = fields.text(params.get("queue"), "queue", 128, required=True)
    after = fields.integer(params.get("after", 0), "after")
    limit = fields.integer(params.get("limit", dispatch.SENT_PAGE), "limit", minimum=1,
                               maximum=dispatch.SENT_PAGE)
    return ok(file_server.with_server_url(dispatch.sent_to_harvester(harvester_id, queue, after, limit)))


READS = {"get_queue_demand", "get_sent_jobs", "list_workers", "list_instances", "list_commands"}


def register(app):
    routes = [
        ("heartbeat", heartbeat, HARVESTER_ROLES), ("update_workers", update_workers, HARVESTER_ROLES),
        ("report_worker_statistics", report_worker_statistics, HARVESTER_ROLES),
        ("acquire_commands", acquire_commands, HARVESTER_ROLES),
        ("acknowledge_commands", acknowledge_commands, HARVESTER_ROLES),
        ("get_queue_demand", get_queue_demand, HARVESTER_ROLES), ("get_sent_jobs", get_sent_jobs, HARVESTER_ROLES),
        ("mint_pilot_token", mint_pilot_token, HARVESTER_ROLES),
        ("revoke_pilot_token", revoke_pilot_token, HARVESTER_ROLES),
        ("list_workers", list_workers, ADMIN), ("list_instances", list_instances, ADMIN),
        ("add_command", add_command, ADMIN), ("list_commands", list_commands, ADMIN),
    ]
    for path, callback, role in routes:
        app.route(f"{BASE}/{path}", route_params.methods(path not in READS), callback, family="v1", role=role,
                  params_model=route_params.HARVESTER[path])
