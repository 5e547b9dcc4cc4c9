"""Route parameters, declared: one pydantic model per route, checked before the route runs.

Every route names its parameters and their kinds here; the plugin in :mod:`minipanda.api.app` validates a
request's parameters against its route's model, so a wrong type, a number out of range or an unusable string is a
400 that names the field, and nothing is written. Parameters a route does not declare pass through unchanged
(PanDA clients send many the server ignores). Numbers are parsed leniently, as PanDA clients send them: ``"3"``,
``3.0`` and ``"2500.004"`` are integers; booleans are not. The same models make the OpenAPI description served
at ``/api/v1/openapi.json``.
"""
import functools
import json
import math
import re
from typing import Annotated, Any, Optional

import pydantic

INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
INT32_MAX = 2 ** 31 - 1
MAX_IDS = 10000
MAX_DEPTH = 64  # no route reads parameters nested deeper; deeper JSON is refused before anything uses it
NULLS = (None, "", "NULL", "None")


def clean_json(value, depth=0):
    """A parsed JSON ``value`` with every lone surrogate (``"\\ud800"``: valid JSON, not UTF-8) replaced by U+FFFD,
    so its text can be stored; ValueError when it is nested deeper than MAX_DEPTH. The request body and every
    JSON text inside a parameter (:data:`Json`) pass through here: one depth limit everywhere."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)
    if depth > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [clean_json(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {clean_json(key, depth + 1): clean_json(item, depth + 1) for key, item in value.items()}
    return value


# A lone surrogate can come only from a \\uD800-\\uDFFF escape: the text itself was decoded as strict UTF-8.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_CONTAINERS = frozenset((dict, list))


def check_depth(value):
    """Refuse (ValueError) what clean_json refuses, JSON with a value other than a text deeper than MAX_DEPTH,
    without a call per value (json.loads makes only dicts, lists, strs, numbers, booleans and None)."""
    level, containers = 0, [value] if type(value) in _CONTAINERS else []
    while containers:
        if level >= MAX_DEPTH and not all(type(item) is str for items in map(_items, containers) for item in items):
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        # one comprehension a level, not one a container: a 5,000-job submission holds 15,000 containers
        containers = [item for items in map(_items, containers) for item in items if type(item) in _CONTAINERS]
        level += 1


def _items(container):
    return container.values() if type(container) is dict else container


def cleaned(value, text):
    """``value``, parsed from the JSON ``text``, cleaned (:func:`clean_json`) when the text has a surrogate escape,
    else only its depth checked (the common case, without a call per value); ValueError when too deep."""
    if SURROGATE_ESCAPE.search(text):
        return clean_json(value)
    check_depth(value)
    return value


def parse_json(text):
    """The value of a JSON text, cleaned (:func:`cleaned`); ValueError saying what is wrong."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    return cleaned(value, text)


def _json_value(value):
    # A list or object may come as such (a JSON body, already cleaned) or as its JSON text (a form field, or a
    # client that encodes it twice, as panda-client and PanDA's harvester do): the text is parsed here.
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        return parse_json(value)
    return value


def _integer(value, minimum, maximum):
    if value in NULLS:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    try:
        number = value if isinstance(value, int) else int(value.strip()) if isinstance(value, str) and \
            value.strip().lstrip("-").isdigit() else float(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {str(value)[:40]!r}") from None
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"expected an integer, got {str(value)[:40]!r}")
        number = int(number)
    if not minimum <= number <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}, got {str(value)[:40]}")
    return number


class AsSent:
    """Marks a kind whose validator would give back the value itself for the commonest values, so :func:`check`
    need not run pydantic over parameters that are all such: None, an int (not a bool) in [minimum, maximum]
    (``kind`` int), a str of at most ``limit`` characters and no NUL (``kind`` str), anything that is no text of a JSON list or
    object (``kind`` json), anything at all (``kind`` any). Anything else goes through the kind's validator:
    ``convert``, the kind's own before-validator, when pydantic's type check after it keeps what it returns (an int
    or None for int, a str or None for str: a form's "2000"; anything for json: a JSON text), else pydantic."""

    def __init__(self, kind, minimum=None, maximum=None, limit=None, convert=None):
        self.kind, self.minimum, self.maximum, self.limit = kind, minimum, maximum, limit
        self.convert = convert

    def __call__(self, value):
        if value is None or self.kind == "any":
            return True
        if self.kind == "int":
            return type(value) is int and self.minimum <= value <= self.maximum
        if self.kind == "str":
            return type(value) is str and len(value) <= self.limit and "\x00" not in value
        return not (isinstance(value, str) and value.lstrip()[:1] in ("[", "{"))  # json


def integer(minimum=INT64_MIN, maximum=INT64_MAX):
    """An optional integer within [minimum, maximum] (the column's range by default), leniently parsed."""
    return Annotated[Optional[int], pydantic.BeforeValidator(lambda v: _integer(v, minimum, maximum)),
                     pydantic.WithJsonSchema({"type": ["integer", "string", "null"], "minimum": minimum,
                                              "maximum": maximum}),
                     AsSent("int", minimum, maximum, convert=lambda v: _integer(v, minimum, maximum))]


def _number(value):
    if value in NULLS:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number) or abs(number) > 1e15:
        raise ValueError(f"expected a finite number of at most 1e15, got {str(value)[:40]}")
    return number


def _text(value, limit):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    value = str(value)
    if len(value) > limit:
        raise ValueError(f"at most {limit} characters, got {len(value)}")
    if "\x00" in value:  # PostgreSQL's texts cannot hold one: a database error (500) wherever it went
        raise ValueError("a NUL character cannot be stored")
    return value


def text(limit=256):
    """An optional string of at most ``limit`` characters; numbers are taken as their text, lists and objects not."""
    return Annotated[Optional[str], pydantic.BeforeValidator(lambda v: _text(v, limit)),
                     AsSent("str", limit=limit, convert=lambda v: _text(v, limit))]


def _id_list(value):
    if value in NULLS:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = parse_json(text)
        else:
            value = [part for part in text.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of ids, got {type(value).__name__}")
    if len(value) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} ids per call, got {len(value)}")
    out = []
    for index, item in enumerate(value):
        try:
            out.append(_integer(item, 0, INT64_MAX))
        except ValueError as exc:
            raise ValueError(f"[{index}]: {exc}") from None
    return out


def _number_or_word(value):
    # A task id that is no number at all is left to the task service, which answers it with PanDA's return code
    # (panda-client reads only HTTP 200 replies), and a retry rule's code may be "any"; a number out of range can
    # match nothing and is refused here.
    if isinstance(value, str) and not value.strip().lstrip("-").replace(".", "", 1).isdigit():
        return value[:100]
    return _integer(value, INT64_MIN, INT64_MAX)


Int = integer()
Int32 = integer(-INT32_MAX - 1, INT32_MAX)
Count = integer(0, INT32_MAX)
Number = Annotated[Optional[float], pydantic.BeforeValidator(_number)]
Name = text(256)
Diag = text(1024 * 1024)  # long texts are cut (or refused) by the service, which knows each column's size
NumberOrWord = Annotated[Any, pydantic.BeforeValidator(_number_or_word),
                   pydantic.WithJsonSchema({"type": ["integer", "string", "null"]})]
Flag = Annotated[Any, pydantic.WithJsonSchema({"type": ["boolean", "string"]}), AsSent("any")]
# A JSON text (a pilot's final report's ``xml``, each entry of a bulk update) is parsed by the kind's own
# before-validator without pydantic: the check of a bulk update's entry cost more than the entry's update.
Json = Annotated[Any, pydantic.BeforeValidator(_json_value),
                 pydantic.WithJsonSchema({"description": "a JSON value, or its JSON text"}),
                 AsSent("json", convert=_json_value)]
Document = Annotated[Any, pydantic.WithJsonSchema({"description": "a JSON value or any text, stored as sent"}),
                     AsSent("any")]
Raw = Annotated[Any, pydantic.WithJsonSchema({"description": "checked by the route itself"}), AsSent("any")]
IdList = Annotated[Optional[list], pydantic.BeforeValidator(_id_list),
                   pydantic.WithJsonSchema({"description": "a list of integers, its JSON text, or comma-separated "
                                                           "integers"})]


class Params(pydantic.BaseModel):
    """Base of every route's parameters: undeclared parameters are kept as sent."""

    # built at its first use: a server (or a testbed) starting pays only for the routes it serves (~55 ms less)
    model_config = pydantic.ConfigDict(extra="allow", defer_build=True)


def model(model_name, **fields):
    """A route's parameter model: ``fields`` maps each parameter to its kind (all optional)."""
    return pydantic.create_model(model_name, __base__=Params, **{key: (kind, None) for key, kind in fields.items()})


def problems(error):
    """The ValidationError's problems as 'field: what is wrong' texts."""
    out = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"]) or "body"
        message = problem["msg"].removeprefix("Value error, ")
        out.append(f"{field}: {message}")
    return out


def check(params_model, params):
    """``params`` with the declared ones parsed; raises pydantic.ValidationError naming each bad field. When every
    declared one is a value its kind keeps as sent (:class:`AsSent`), ``params`` itself: most requests (and each
    entry of a bulk update) are such, and pydantic's Python validators cost more than the update they guard. A
    value its kind converts (a form field's text of a number) is converted by the kind's own before-validator, as
    pydantic would; pydantic itself runs only for other kinds and for a value that one refuses (the error names
    the field)."""
    as_sent, fields = _as_sent(params_model), params_model.model_fields
    converted = None
    for key, value in params.items():
        test = as_sent.get(key)
        if test is None:
            if key in fields:
                return validated(params_model, params)
            continue
        if test(value):
            continue
        if test.convert is None:
            return validated(params_model, params)
        try:
            value = test.convert(value)
        except Exception:  # noqa: BLE001 - pydantic says what is wrong, in its own words
            return validated(params_model, params)
        if converted is None:
            converted = dict(params)
        converted[key] = value
    return params if converted is None else converted


def validated(params_model, params):
    """``params`` with the declared ones parsed by pydantic; raises pydantic.ValidationError naming each bad
    field."""
    parsed = params_model.model_validate(params)
    declared = {key: getattr(parsed, key) for key in params_model.model_fields if key in params}
    return {**params, **declared}


@functools.lru_cache(maxsize=None)
def _as_sent(params_model):
    """{declared name: its AsSent test} of the fields whose kind has one."""
    out = {}
    for name, field in params_model.model_fields.items():
        marks = [mark for mark in field.metadata if isinstance(mark, AsSent)]
        if marks:
            out[name] = marks[0]
    return out


# A route that changes nothing answers GET and POST; one that changes something (dispatch, an update, a submission,
# a kill, a command) answers POST only, so no link, image or redirect of a web page can make a browser call it.
READ_METHODS, CHANGE_METHODS = ["GET", "POST"], ["POST"]


def methods(changes):
    return CHANGE_METHODS if changes else READ_METHODS


# ---- the routes' parameters -----------------------------------------------------------------------------------

# A pilot's offer: what it runs on and the room it has (limits at least 0; cores and jobs at least 1).
_OFFER = {"siteName": Name, "computingElement": Name, "prodSourceLabel": text(32),
          "coreCount": integer(1, INT32_MAX), "mem": integer(0), "diskSpace": integer(0),
          "remainingTime": integer(0), "nJobs": integer(1, INT32_MAX), "node": Name, "pilotID": Name,
          "batchID": text(128), "harvester_id": text(128), "worker_id": integer(0)}
_UPDATE_INTS = ("transExitCode", "pilotErrorCode", "exeErrorCode", "cpuConsumptionTime", "nEvents", "maxRSS",
                "maxPSS", "maxVMEM", "avgRSS", "avgPSS")
_UPDATE = dict(jobId=Int, state=Name, attemptNr=Int32, pilotID=Name, batchID=Name, node=Name, pilotErrorDiag=Diag,
               exeErrorDiag=Diag, cpuConsumptionUnit=Name, pilotTiming=Diag, metaData=Document,
               jobMetrics=Document, xml=Json, coreCount=Int32,
               **{name: (Int32 if name.endswith("Code") else Int) for name in _UPDATE_INTS})
# The v1 names (minipanda.api.handlers.V1_ALIASES), each of the kind of the legacy name it stands for.
_V1_OFFER_NAMES = {"site_name": "siteName", "computing_element": "computingElement",
                   "prod_source_label": "prodSourceLabel", "core_count": "coreCount", "memory": "mem",
                   "disk_space": "diskSpace", "remaining_time": "remainingTime", "n_jobs": "nJobs",
                   "pilot_id": "pilotID", "batch_id": "batchID"}
_V1_UPDATE_NAMES = {"job_id": "jobId", "job_status": "state", "attempt_nr": "attemptNr", "pilot_id": "pilotID",
                    "batch_id": "batchID", "pilot_error_diag": "pilotErrorDiag", "exe_error_diag": "exeErrorDiag",
                    "cpu_consumption_unit": "cpuConsumptionUnit", "pilot_timing": "pilotTiming",
                    "meta_data": "metaData", "job_metrics": "jobMetrics", "core_count": "coreCount",
                    "trans_exit_code": "transExitCode", "pilot_error_code": "pilotErrorCode",
                    "exe_error_code": "exeErrorCode", "cpu_consumption_time": "cpuConsumptionTime",
                    "n_events": "nEvents", "max_rss": "maxRSS", "max_pss": "maxPSS", "max_vmem": "maxVMEM"}
OFFER_LEGACY = model("GetJob", **_OFFER)
UPDATE_LEGACY = model("UpdateJob", **_UPDATE)
# A v1 route accepts the legacy names too (panda-client and pilots send either): both are declared and checked.
OFFER_V1 = model("AcquireJobs", **_OFFER, **{v1: _OFFER[legacy] for v1, legacy in _V1_OFFER_NAMES.items()})
UPDATE_V1 = model("UpdateJobV1", **_UPDATE, **{v1: _UPDATE[legacy] for v1, legacy in _V1_UPDATE_NAMES.items()})
WORKER_PILOT_STATUS = model("UpdateWorkerPilotStatus", workerID=integer(0), harvesterID=text(128), status=Name,
                            site=text(128), node_id=Name)
NONE = model("NoParams")
LEGACY = {"getJob": OFFER_LEGACY, "updateJob": UPDATE_LEGACY, "updateJobsInBulk": model("UpdateJobsInBulk",
          jobList=Json), "getStatus": model("GetStatus", ids=IdList, job_ids=IdList),
          "updateWorkerPilotStatus": WORKER_PILOT_STATUS, "getResourceTypes": NONE, "isAlive": NONE}

JOB_IDS = model("JobIds", job_ids=IdList, ids=IdList)
V1 = {
    "system/is_alive": NONE, "pilot/acquire_jobs": OFFER_V1, "pilot/update_job": UPDATE_V1,
    "pilot/update_jobs_bulk": model("UpdateJobsBulk", job_list=Json, jobList=Json),
    "pilot/update_worker_node": NONE, "pilot/update_worker_node_gpu": NONE,
    "job/get_status": JOB_IDS, "job/submit": model("SubmitJobs", jobs=Json), "job/get_description": JOB_IDS,
    "job/get_description_incl_archive": JOB_IDS, "job/kill": model("KillJobs", job_ids=IdList, ids=IdList,
                                                                     code=Int32),
    "job/list": model("ListJobs", limit=integer(1, INT32_MAX), status=Name, queue=Name, user=Name,
                      task_id=integer(0)),
    "job/get_status_log": model("JobStatusLog", job_id=Int), "queues": NONE,
}
TASK_ID = model("TaskId", task_id=NumberOrWord)
TASK_COMMAND = model("TaskCommand", task_id=NumberOrWord, soft=Flag, new_parameters=Json)
TASKS = {
    "task/submit": model("SubmitTask", task_parameters=Json, parent_tid=Int),
    "task/kill": TASK_COMMAND, "task/finish": TASK_COMMAND, "task/retry": TASK_COMMAND,
    "task/pause": TASK_COMMAND, "task/resume": TASK_COMMAND, "task/get_status": TASK_ID,
    "task/get_details": model("TaskDetails", task_id=NumberOrWord, include_parameters=Flag),
    "task/get_job_ids": TASK_ID, "task/get_task_parameters": TASK_ID, "task/get_status_log": TASK_ID,
    "task/get_tasks_modified_since": model("TasksModifiedSince", since=Name, min_task_id=Int,
                                           prod_source_label=Name),
    "task/get_tasks_detailed_info_since": model("TasksDetailedInfoSince", since=Name, filters=Json,
                                                n_tasks=Count),
    "dataset/add": model("AddDataset", name=Name, files=Json), "dataset/list": model("ListDatasets", user=Name,
                                                                                    pattern=Name),
    "dataset/show": model("ShowDataset", name=Name), "retry_rule/list": NONE,
    "retry_rule/add": model("AddRetryRule", source=Name, code=NumberOrWord, diag=Name, action=Name, parameter=Number,
                            description=Name),
    "retry_rule/remove": model("RemoveRetryRule", id=Int), "job/why": model("JobWhy", job_id=Int),
}
# harvester's routes check each field themselves (minipanda.workers.harvesters); the lists and objects among them
# are parsed here, with the one depth limit.
_HARVESTER_JSON = {"workers", "statistics", "command_ids", "queues", "jtis", "params", "agents", "home", "panda_ids"}
HARVESTER = {name: model("Harvester_" + name, **{key: Json if key in _HARVESTER_JSON else Raw for key in keys})
             for name, keys in {
    "heartbeat": ("harvester_id", "version", "start_time", "host", "agents", "queues", "home"),
    "update_workers": ("harvester_id", "workers"),
    "report_worker_statistics": ("harvester_id", "panda_queue", "statistics"),
    "acquire_commands": ("harvester_id", "n_commands"),
    "acknowledge_commands": ("harvester_id", "command_ids"),
    "get_queue_demand": ("harvester_id", "queues"), "get_sent_jobs": ("harvester_id", "queue", "after", "limit"),
    "mint_pilot_token": ("harvester_id", "worker_id", "queue", "lifetime", "panda_ids"),
    "revoke_pilot_token": ("harvester_id", "jtis"),
    "list_workers": ("harvester_id", "queue", "status", "limit"),
    "list_instances": (), "add_command": ("harvester_id", "command", "params"), "list_commands": ("limit",),
}.items()}
