"""The task, dataset and retry-rule routes of ``/api/v1`` (panda-client 2.2's task/* and ours).

panda-client unwraps only HTTP 200 replies: a task call the server refuses (unknown task, not yours, wrong state,
bad parameters) still answers 200 with ``success: false``, PanDA's return code in ``data`` and the reason in
``message``, as the real server does. Only a missing or bad token is an HTTP error.
"""
import json

import bottle
from minipanda.api import params as route_params, wire
from minipanda.core import policy
from minipanda.core.jobs import parse_job_id
from minipanda.errors import RequestError, TaskParamError
from minipanda.tasks import datasets, retry, sandbox, service, why

BASE = "/api/v1"


def reply(data=None, message="", success=True):
    bottle.response.content_type = "application/json"
    return wire.envelope(data, message, success)


def _context():
    return bottle.request.app.config["minipanda.context"]


def _flag(value):
    return value is True or str(value).lower() in ("true", "1", "yes")


def _json_param(params, name, default=None):
    value = params.get(name, default)
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return route_params.parse_json(value)
        except ValueError as exc:
            raise RequestError(f"{name}: {exc}") from None
    return value


def submit(params, identity):
    task_params = _json_param(params, "task_parameters")
    try:
        parent = params.get("parent_tid")
        parent = int(parent) if parent not in (None, "", "None") else None
        task_id = service.submit_task(task_params, identity, parent, sandbox.Sandboxes(_context().home))
    except TaskParamError as exc:
        return reply(exc.code, f"task parameters refused: {exc}", success=False)
    except (TypeError, ValueError):
        return reply(4, "parent_tid: expected an integer jediTaskID", success=False)
    _context().wake("generator")
    return reply(task_id, f"succeeded. new jediTaskID={task_id}")


def _command(action):
    def route(params, identity):
        code, message = service.command(params.get("task_id"), identity, action, soft=_flag(params.get("soft")),
                                        new_params=_json_param(params, "new_parameters"), wake=_context().wake)
        # A refusal is never a success (PanDA answers a refused retry with success true); panda-client's retryTask
        # reads only data and message, so it sees the same code either way.
        return reply(code, message, success=code == service.OK)
    return route


def _task(params):
    task = service.get_task(params.get("task_id"))
    if task is None:
        raise LookupError
    return task


def get_status(params, identity):
    try:
        return reply(_task(params).status)
    except LookupError:
        return reply(None, "Task not found", success=False)


def get_details(params, identity):
    try:
        task = _task(params)
    except LookupError:
        return reply(None, "Task not found", success=False)
    return reply(service.details(task, _flag(params.get("include_parameters"))))


def get_job_ids(params, identity):
    try:
        return reply(service.job_ids(_task(params).jedi_task_id))
    except LookupError:
        return reply(None, "Task not found", success=False)


def get_task_parameters(params, identity):
    try:
        return reply(json.loads(_task(params).params))
    except LookupError:
        return reply(None, "Task not found", success=False)


def get_task_log(params, identity):
    try:
        return reply(service.task_log(_task(params).jedi_task_id))
    except LookupError:
        return reply(None, "Task not found", success=False)


def modified_since(params, identity):
    since = service.parse_time(params.get("since"))
    min_id = params.get("min_task_id")
    min_id = int(min_id) if min_id not in (None, "", "None") and str(min_id).isdigit() else None
    label = params.get("prod_source_label")
    return reply(service.modified_since(identity, since, min_id, None if label in (None, "", "None") else label))


def detailed_info_since(params, identity):
    since = service.parse_time(params.get("since"))
    filters = _json_param(params, "filters") or {}
    if not isinstance(filters, dict):
        raise RequestError("filters: expected a JSON object of {attribute: value}")
    limit = params.get("n_tasks", 1000)
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise RequestError(f"n_tasks: expected an integer, got {str(limit)[:20]!r}") from None
    return reply(service.find_tasks(identity, since, filters, limit))


def dataset_add(params, identity):
    return reply(datasets.add_files(params.get("name"), _json_param(params, "files"), identity.name,
                                    policy.manages_all(identity)))


def dataset_list(params, identity):
    return reply(datasets.list_datasets(params.get("user") or None, params.get("pattern") or None))


def dataset_show(params, identity):
    return reply(datasets.show_dataset(params.get("name")))


def rule_list(params, identity):
    return reply(retry.list_rules())


def rule_add(params, identity):
    code = params.get("code")
    try:
        code = int(code) if code not in (None, "", "any") else None
        parameter = float(params["parameter"]) if params.get("parameter") not in (None, "") else None
    except (TypeError, ValueError):
        raise RequestError("code, parameter: expected numbers") from None
    return reply(retry.add_rule(params.get("source", "any"), code, params.get("diag") or "", params.get("action"),
                                parameter, params.get("description") or ""))


def rule_remove(params, identity):
    rule_id = parse_job_id(params.get("id"), "id")
    if not retry.remove_rule(rule_id):
        raise RequestError(f"id: no retry rule {rule_id}", http=404)
    return reply(None, f"retry rule {rule_id} removed")


def job_why(params, identity):
    return reply(why.explain(parse_job_id(params.get("job_id"), "job_id")))


READS = {"task/get_status", "task/get_details", "task/get_job_ids", "task/get_task_parameters",
         "task/get_status_log", "task/get_tasks_modified_since", "task/get_tasks_detailed_info_since",
         "dataset/list", "dataset/show", "retry_rule/list", "job/why"}


def register(app):
    routes = [
        ("task/submit", submit, "any"), ("task/kill", _command("kill"), "any"),
        ("task/finish", _command("finish"), "any"), ("task/retry", _command("retry"), "any"),
        ("task/pause", _command("pause"), "any"), ("task/resume", _command("resume"), "any"),
        ("task/get_status", get_status, "any"), ("task/get_details", get_details, "any"),
        ("task/get_job_ids", get_job_ids, "any"), ("task/get_task_parameters", get_task_parameters, "any"),
        ("task/get_status_log", get_task_log, "any"),
        ("task/get_tasks_modified_since", modified_since, "any"),
        ("task/get_tasks_detailed_info_since", detailed_info_since, "any"),
        ("dataset/add", dataset_add, "any"), ("dataset/list", dataset_list, "any"),
        ("dataset/show", dataset_show, "any"),
        ("retry_rule/list", rule_list, "any"), ("retry_rule/add", rule_add, {"admin"}),
        ("retry_rule/remove", rule_remove, {"admin"}), ("job/why", job_why, "any"),
    ]
    for path, callback, role in routes:
        app.route(f"{BASE}/{path}", route_params.methods(path not in READS), callback, family="v1", role=role,
                  params_model=route_params.TASKS[path])
