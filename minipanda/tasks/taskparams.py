"""Task parameters: validation of the two accepted forms and their normalised spec.

- The **flat form** (ours): exactly the keys in :data:`FLAT_KEYS`; ``exec`` is a shell command template with
  ``%IN``, ``%OUT`` / ``%OUT:name``, ``%RNDM:base``, ``%FIRSTEVENT``, ``%SKIPEVENTS``, ``%MAXEVENTS``.
- **PanDA's JEDI taskParamMap** (what prun and panda-client send): ``jobParameters`` items, ``log``, ``noInput``
  with ``nEvents``/``nEventsPerJob``, ``site``... as far as they map (:data:`JEDI_MAPPED`); keys that only describe
  the client (:data:`JEDI_INFORMATIONAL`) are kept with the task and have no effect; everything else is refused
  with a message naming the key, never dropped.

:func:`normalise` returns the spec the generator works from; every error names its field, all at once.
"""
import re

from minipanda.core import models, policy
from minipanda.core.jobspec import is_null
from minipanda.errors import TaskParamError
from minipanda.tasks import sandbox
from minipanda.tasks.datasets import DATASET_NAME

FLAT_KEYS = ("taskName", "exec", "inDS", "nFilesPerJob", "nEventsPerJob", "nGBPerJob", "nJobs", "outputs", "site",
             "excludedSite", "coreCount", "ramCount", "walltime", "maxAttempt", "taskPriority", "nScouts",
             "prodSourceLabel", "vo", "workingGroup")
SPLIT_KEYS = ("nFilesPerJob", "nEventsPerJob", "nGBPerJob", "nJobs")
JEDI_MAPPED = ("taskName", "userName", "vo", "prodSourceLabel", "workingGroup", "site", "excludedSite",
               "includedSite", "coreCount", "ramCount", "ramCountUnit", "walltime", "walltimeUnit", "maxWalltime",
               "maxAttempt", "taskPriority", "currentPriority", "nFilesPerJob", "nEventsPerJob", "nGBPerJob",
               "nEvents", "noInput", "nFiles", "nMaxFilesPerJob", "skipScout", "nScouts", "jobParameters", "log",
               "transPath", "sourceURL", "dsForIN", "ipConnectivity")
JEDI_INFORMATIONAL = ("cliParams", "osInfo", "processingType", "uniqueTaskName", "transUses", "transHome",
                      "architecture", "respectSplitRule", "taskType", "noEmail", "osMatching", "framework",
                      "debugMode")
JEDI_REFUSALS = {
    "buildSpec": "build jobs are not supported by minipanda; submit with prun --noBuild",
    "mergeSpec": "merge jobs are not supported by minipanda; drop --mergeOutput",
    "preproSpec": "pre-processing jobs are not supported by minipanda",
    "secondaryDSs": "only one input dataset per task is supported",
    "container_name": "containers are not supported by minipanda",
}
ITEM_KEYS = {"type", "value", "padding", "hidden", "param_type", "dataset", "container", "expand", "exclude",
             "include", "offset", "files", "token"}
LABELS = ("user", "panda", "test", "ptest", "managed", "prod_test", "rc_test")
CONNECTIVITY = ("none", "http", "full")
MAX_COMMAND = 4000  # characters of exec / assembled jobParameters
MAX_JOBS = 1_000_000
DEFAULT_SCOUTS = 3
# PanDA's runGen at the one base URL pilot3's generic user downloads transformations from; minipanda serves its own
# runGen at that path (minipanda/trf/), and both pilots fetch /trf/user/ from the server they talk to.
DEFAULT_TRANSFORMATION = "http://pandaserver-doma.cern.ch:25080/trf/user/runGen-00-00-02"
REGEX_ONLY = re.compile(r"[\\^$()+{}|]")
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,199}\Z")
PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}\Z")
FLAT_PLACEHOLDER = re.compile(r"%([A-Z][A-Z0-9]*)(?::([A-Za-z0-9_.+-]+))?")
FLAT_NAMES = {"IN", "OUT", "RNDM", "FIRSTEVENT", "SKIPEVENTS", "MAXEVENTS"}
JEDI_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)(/[A-Z]+)?\}|\$(JEDITASKID)\b")
JEDI_NAMES = {"IN", "IN/T", "IN/L", "SN", "SN/P", "JEDITASKID", "SURL", "MAXEVENTS", "SKIPEVENTS", "FIRSTEVENT",
              "RNDMSEED", "SEQNUMBER"}
# prun's default input filter (log tarballs of earlier tasks), a regular expression, as the shell wildcards it means
PRUN_LOG_EXCLUDE = {r"\.log\.tgz(\.\d+)*$": ["*.log.tgz", "*.log.tgz.[0-9]*"]}


class _Checker:
    """Collects errors while reading typed values from a parameter dict."""

    def __init__(self, params):
        self.params, self.errors = params, []

    def has(self, key):
        return key in self.params and not is_null(self.params[key])

    def int(self, key, default=None, minimum=None, maximum=None):
        if not self.has(key):
            return default
        value = self.params[key]
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.append(f"{key}: expected an integer, got {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.errors.append(f"{key}: must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.errors.append(f"{key}: must be at most {maximum}, got {value}")
        return value

    def number(self, key, minimum_exclusive=0):
        value = self.params.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= minimum_exclusive:
            self.errors.append(f"{key}: expected a positive number, got {value!r}")
            return None
        return float(value)

    def str(self, key, default=None, pattern=None, choices=None):
        if not self.has(key):
            return default
        value = self.params[key]
        if not isinstance(value, str):
            self.errors.append(f"{key}: expected a string, got {type(value).__name__}")
            return default
        if pattern is not None and not pattern.match(value):
            self.errors.append(f"{key}: {value[:80]!r} is not a valid name (letters, digits and ._:/+-)")
        if choices is not None and value not in choices:
            self.errors.append(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    def names(self, key):
        """A list of names from a list or a comma-separated string."""
        if not self.has(key):
            return []
        value = self.params[key]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.errors.append(f"{key}: expected a list of names or a comma-separated string")
            return []
        return value


def normalise(params, user, role="user", sandboxes=None):
    """Validate task parameters in either form; return the normalised spec.

    Args:
        params: the ``task_parameters`` dict as received.
        user: the submitting user (from the token).
        role: the token's role; production labels need production or admin.
        sandboxes: the server's :class:`minipanda.tasks.sandbox.Sandboxes`; when given, a runGen task's ``-a``
            archive must be a sandbox the user uploaded.

    Raises:
        TaskParamError: listing every bad field.
    """
    if not isinstance(params, dict):
        raise TaskParamError(["task_parameters: expected a JSON object"])
    if "jobParameters" in params and "exec" in params:
        raise TaskParamError(["exec, jobParameters: give the flat form (exec) or the JEDI form (jobParameters), "
                              "not both"])
    if "jobParameters" in params:
        spec, check = _jedi(params, user)
    elif "exec" in params:
        spec, check = _flat(params)
    else:
        raise TaskParamError(["exec: required (or jobParameters, for PanDA's taskParamMap form)"])
    _in_user_scope(spec, user, role)
    _common(spec, check, role)
    if sandboxes is not None and spec["form"] == "jedi" and is_run_gen(spec["transformation"]):
        check.errors += sandbox.check_task_sandbox(sandboxes, spec["jobPars"], user)
    if check.errors:
        raise TaskParamError(check.errors)
    return spec


def is_run_gen(transformation):
    """Whether a transformation (URL or path) is PanDA's runGen, which minipanda serves as its own."""
    return re.sub(r"[?#].*$", "", transformation or "").rstrip("/").rsplit("/", 1)[-1].startswith("runGen-")


def _in_user_scope(spec, user, role):
    """Put a user task's output and log datasets in the user's scope (``user.<name>.``), as PanDA names them, so
    two users' tasks of the same name never clash. A manager (admin, production) may name any user scope."""
    if spec["prodSourceLabel"] in policy.PRODUCTION_LABELS:
        return
    scope = f"user.{user}."
    for entry in (spec.get("outputs") or []) + [spec.get("log") or {}]:
        name = entry.get("dataset")
        if not isinstance(name, str) or name.startswith(scope):
            continue
        if not (name.startswith("user.") and role in policy.MANAGER_ROLES):
            entry["dataset"] = scope + name


def _flat(params):
    check = _Checker(params)
    for key in params:
        if key not in FLAT_KEYS:
            check.errors.append(f"{key}: unknown parameter; the flat form takes {', '.join(FLAT_KEYS)}")
    spec = _base(check)
    spec["form"] = "flat"
    command = check.str("exec", "")
    if not command.strip():
        check.errors.append("exec: required, the command to run (with %IN for the input files)")
    spec["exec"] = command
    spec["inDS"] = check.str("inDS", None)
    spec["outputs"] = _flat_outputs(check, spec["taskName"])
    spec["log"] = {"lfn": "${JEDITASKID}._${SN}.log.tgz", "dataset": f"{spec['taskName']}.log"}
    spec["split"] = _split(check, spec["inDS"], None)
    spec["site"], spec["excludedSite"] = check.names("site"), check.names("excludedSite")
    spec["walltime"] = check.int("walltime", 0, 0)
    spec["transformation"] = "/bin/sh"
    spec["ipConnectivity"] = "none"
    _flat_placeholders(check, command, spec)
    return spec, check


def _base(check):
    return {
        "taskName": check.str("taskName", "", TASK_NAME) or _missing(check, "taskName"),
        "vo": check.str("vo", "minipanda"), "workingGroup": check.str("workingGroup", None),
        "prodSourceLabel": check.str("prodSourceLabel", "user", choices=LABELS),
        "coreCount": check.int("coreCount", 1, 1, 1024), "ramCount": check.int("ramCount", 0, 0),
        "maxAttempt": check.int("maxAttempt", 3, 1, 100), "taskPriority": check.int("taskPriority", None, 0, 100000),
        "nScouts": check.int("nScouts", DEFAULT_SCOUTS, 0, 1000),
    }


def _missing(check, key):
    if key not in check.params:
        check.errors.append(f"{key}: required")
    return ""


def _flat_outputs(check, task_name):
    names = check.params.get("outputs", [])
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, list):
        check.errors.append("outputs: expected a list of file names")
        return []
    outputs = []
    for name in names:
        if not isinstance(name, str) or not PLAIN.match(name):
            check.errors.append(f"outputs: {str(name)[:80]!r} is not a plain file name")
            continue
        outputs.append({"name": name, "lfn": "${JEDITASKID}._${SN}." + name, "dataset": f"{task_name}_{name}"})
    if len({o["name"] for o in outputs}) != len(outputs):
        check.errors.append("outputs: the same name is given twice")
    return outputs


def _flat_placeholders(check, command, spec):
    if len(command) > MAX_COMMAND:
        check.errors.append(f"exec: {len(command)} characters, longer than the limit of {MAX_COMMAND}")
    names = {o["name"] for o in spec["outputs"]}
    for match in FLAT_PLACEHOLDER.finditer(command):
        name, arg = match.group(1), match.group(2)
        if name not in FLAT_NAMES:
            check.errors.append(f"exec: unknown placeholder %{name}; known: %IN, %OUT, %OUT:name, %RNDM:base, "
                                "%FIRSTEVENT, %SKIPEVENTS, %MAXEVENTS")
        elif name == "IN" and not spec["inDS"]:
            check.errors.append("exec: %IN needs an input dataset (inDS)")
        elif name == "RNDM" and (arg is None or not arg.isdigit()):
            check.errors.append("exec: %RNDM needs a numeric base, as in %RNDM:100")
        elif name == "OUT" and (not names or (arg is not None and arg not in names)):
            check.errors.append(f"exec: %{match.group(0)[1:]} names no declared output (outputs: {sorted(names)})")


def _split(check, in_ds, n_events_total):
    given = [k for k in SPLIT_KEYS if check.has(k)]
    if "nFilesPerJob" in given and "nEventsPerJob" in given:
        check.errors.append("nFilesPerJob, nEventsPerJob: give one of them, not both")
        return None
    if len(given) > 1 and n_events_total is None:
        check.errors.append(f"{', '.join(given)}: give only one way of splitting")
        return None
    if in_ds is None and n_events_total is None:
        for key in given:
            if key != "nJobs":
                check.errors.append(f"{key}: needs an input dataset (inDS); without input, use nJobs")
        return {"rule": "jobs", "value": check.int("nJobs", 1, 1, MAX_JOBS)}
    if n_events_total is not None:
        return {"rule": "events", "value": check.int("nEventsPerJob", 1, 1), "nEvents": n_events_total}
    if not given:
        return {"rule": "files", "value": 1}
    key = given[0]
    if key == "nGBPerJob":
        return {"rule": "gb", "value": check.number(key)}
    rule = {"nFilesPerJob": "files", "nEventsPerJob": "events", "nJobs": "jobs"}[key]
    return {"rule": rule, "value": check.int(key, 1, 1, MAX_JOBS)}


def _common(spec, check, role):
    """Checks shared by both forms: the input dataset, queues, labels, output dataset names."""
    names = [("outputs", o.get("dataset")) for o in spec.get("outputs") or []]
    names.append(("log.dataset", (spec.get("log") or {}).get("dataset")))
    seen = set()
    for field, name in names:
        if not isinstance(name, str) or not DATASET_NAME.match(name):
            check.errors.append(f"{field}: dataset name {name!r} is not valid (letters, digits, '._:/-', "
                                "starting with a letter or digit)")
        elif name in seen:
            check.errors.append(f"{field}: dataset {name!r} is named twice in this task; each output and the log "
                                "need their own dataset")
        seen.add(name if isinstance(name, str) else None)
    label = spec["prodSourceLabel"]
    if not policy.may_submit_label(role, label):
        check.errors.append(f"prodSourceLabel: {label!r} tasks need the production or admin role")
    if spec.get("inDS"):
        dataset = models.Dataset.get_or_none(models.Dataset.name == spec["inDS"])
        if dataset is None:
            check.errors.append(f"inDS: dataset {spec['inDS']!r} is not registered (minipanda dataset add)")
        elif not models.DatasetFile.select().where(models.DatasetFile.dataset == dataset.id).exists():
            check.errors.append(f"inDS: dataset {spec['inDS']!r} has no files")
    wanted = set(spec["site"]) | set(spec["excludedSite"]) | set(spec.get("includedSite") or [])
    known = {q.name for q in models.Queue.select(models.Queue.name).where(models.Queue.name.in_(list(wanted)))}
    for key in ("site", "excludedSite", "includedSite"):
        for name in spec.get(key) or []:
            if name not in known:
                check.errors.append(f"{key}: queue {name!r} does not exist")


def duplicate_datasets(spec):
    """Names of the task's output and log datasets that already exist."""
    names = [o["dataset"] for o in spec["outputs"]] + [spec["log"]["dataset"]]
    return sorted(d.name for d in models.Dataset.select(models.Dataset.name).where(models.Dataset.name.in_(names)))


# ---- PanDA's taskParamMap ------------------------------------------------------------------------------------------

def _jedi(params, user):
    check = _Checker(params)
    for key in params:
        if key in JEDI_REFUSALS:
            check.errors.append(f"{key}: {JEDI_REFUSALS[key]}")
        elif key not in JEDI_MAPPED and key not in JEDI_INFORMATIONAL:
            check.errors.append(f"{key}: PanDA task parameter not supported by minipanda")
    if check.has("userName") and params["userName"] != user:
        check.errors.append(f"userName: tasks are submitted as the token's user ({user}), not {params['userName']!r}")
    spec = _base(check)
    spec["form"] = "jedi"
    if check.has("currentPriority") and spec["taskPriority"] is None:
        spec["taskPriority"] = check.int("currentPriority", None, 0, 100000)
    if params.get("skipScout") is True:
        spec["nScouts"] = 0
    spec["ramCount"] = _jedi_ram(check, spec)
    spec["walltime"] = _jedi_walltime(check)
    site = check.str("site", None)
    spec["site"] = [] if site in (None, "AUTO") else [s for s in site.split(",") if s]
    spec["excludedSite"] = check.names("excludedSite")
    spec["includedSite"] = check.names("includedSite")
    spec["transformation"] = check.str("transPath", DEFAULT_TRANSFORMATION)
    spec["sourceURL"] = check.str("sourceURL", "")
    _jedi_items(check, spec)
    _jedi_log(check, spec)
    no_input = params.get("noInput") is True
    if no_input and spec["inDS"]:
        check.errors.append("noInput: the task also has an input template item (dataset "
                            f"{spec['inDS']!r}); give one or the other")
    n_events = None
    if no_input:
        n_events = check.int("nEvents", None, 1, 10 ** 12)
        if n_events is None:
            check.errors.append("nEvents: required with noInput (the number of events to generate)")
    elif check.has("nEvents"):
        check.errors.append("nEvents: only used with noInput")
    spec["split"] = _split(check, spec["inDS"], n_events)
    spec["nFiles"] = check.int("nFiles", None, 1)
    spec["nMaxFilesPerJob"] = check.int("nMaxFilesPerJob", None, 1)
    if check.has("dsForIN") and params["dsForIN"] != spec["inDS"]:
        check.errors.append(f"dsForIN: {params['dsForIN']!r} is not the input item's dataset {spec['inDS']!r}")
    uses_surl = "${SURL}" in spec["jobPars"]
    spec["ipConnectivity"] = check.str("ipConnectivity", "http" if uses_surl else "none", choices=CONNECTIVITY)
    if uses_surl and not spec["sourceURL"]:
        check.errors.append("jobParameters: ${SURL} is used but sourceURL is not given")
    return spec, check


def _jedi_ram(check, spec):
    ram = check.int("ramCount", 0, 0)
    unit = check.str("ramCountUnit", "MB", choices=("MB", "MBPerCore", "MBPerCoreFixed", "MBFixed"))
    return ram * spec["coreCount"] if unit and unit.startswith("MBPerCore") else ram


def _jedi_walltime(check):
    if check.has("maxWalltime"):  # prun --maxWalltime is in hours
        return check.int("maxWalltime", 0, 0) * 3600
    walltime = check.int("walltime", 0, 0)
    unit = check.str("walltimeUnit", "s", choices=("s", "sec", "mins", "hours"))
    return walltime * {"s": 1, "sec": 1, "mins": 60, "hours": 3600}.get(unit or "s", 1)


def _jedi_items(check, spec):
    items = check.params.get("jobParameters")
    if not isinstance(items, list):
        check.errors.append("jobParameters: expected a list of {type, value} items")
        items = []
    words, outputs, spec["inDS"], spec["inputFilter"] = [], [], None, {}
    spec["seqOffset"] = 0
    for index, item in enumerate(items):
        where = f"jobParameters[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            check.errors.append(f"{where}: expected an object with a string value")
            continue
        for key in item:
            if key not in ITEM_KEYS:
                check.errors.append(f"{where}.{key}: not supported by minipanda")
        kind, ptype = item.get("type"), item.get("param_type")
        if kind == "template" and ptype == "input":
            _jedi_input(check, spec, item, where)
        elif kind == "template" and ptype == "output":
            outputs.append(_jedi_output(check, item, where))
        elif kind == "template" and ptype == "pseudo_input" and item.get("dataset") == "seq_number":
            _jedi_seq_number(check, spec, item, where)  # prun's %RNDM:N
        elif kind == "template" and ptype == "number":
            pass  # prun's %FIRSTEVENT, %SKIPEVENTS, %MAXEVENTS: the placeholder in the value is filled per job
        elif kind == "template":
            check.errors.append(f"{where}.param_type: {ptype!r} templates are not supported (input and output are)")
            continue
        elif kind != "constant":
            check.errors.append(f"{where}.type: expected constant or template, got {kind!r}")
            continue
        if not item.get("hidden"):
            words.append((item["value"], item.get("padding", True) is not False))
    spec["jobPars"] = "".join(value + (" " if pad else "") for value, pad in words).strip()
    spec["outputs"] = [o for o in outputs if o]
    if len(spec["jobPars"]) > MAX_COMMAND:
        check.errors.append(f"jobParameters: {len(spec['jobPars'])} characters, longer than the limit of "
                            f"{MAX_COMMAND}")
    for match in JEDI_PLACEHOLDER.finditer(spec["jobPars"] + " ".join(o["lfn"] for o in spec["outputs"])):
        name = match.group(3) or match.group(1) + (match.group(2) or "")
        if name not in JEDI_NAMES:
            hint = "; ${LIB} comes with build jobs, use prun --noBuild" if name == "LIB" else ""
            check.errors.append(f"jobParameters: unknown placeholder ${{{name}}}{hint}")
        elif name.startswith("IN") and not spec["inDS"]:
            check.errors.append(f"jobParameters: ${{{name}}} needs an input template item with a dataset")


def _jedi_input(check, spec, item, where):
    if spec["inDS"]:
        check.errors.append(f"{where}: a second input dataset; only one input dataset per task is supported")
        return
    dataset = item.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        check.errors.append(f"{where}.dataset: required for an input template")
        return
    spec["inDS"] = dataset
    filters = {}
    for key in ("include", "exclude"):
        if item.get(key):
            patterns = []
            for pattern in (p for p in str(item[key]).split(",") if p):
                patterns += PRUN_LOG_EXCLUDE.get(pattern, [pattern]) if key == "exclude" else [pattern]
            for pattern in patterns:
                if REGEX_ONLY.search(pattern) or len(pattern) > 255:
                    check.errors.append(f"{where}.{key}: {pattern!r}: minipanda takes shell-style wildcards "
                                        "(such as '*.root' or 'data_?.txt'), not regular expressions")
            filters[key] = patterns
    if item.get("offset") is not None:
        if not isinstance(item["offset"], int) or item["offset"] < 0:
            check.errors.append(f"{where}.offset: expected a non-negative integer")
        filters["offset"] = item["offset"]
    if item.get("files") is not None:
        if not isinstance(item["files"], list):
            check.errors.append(f"{where}.files: expected a list of file names")
        filters["files"] = item["files"]
    spec["inputFilter"] = filters


def _jedi_seq_number(check, spec, item, where):
    offset = item.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        check.errors.append(f"{where}.offset: expected a non-negative integer (the base of %RNDM)")
        return
    spec["seqOffset"] = offset


def _jedi_output(check, item, where):
    dataset = item.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        check.errors.append(f"{where}.dataset: required for an output template")
        return None
    if "${SN" not in item["value"]:
        check.errors.append(f"{where}.value: an output name must contain ${{SN}} so that every job's file is "
                            "unique")
    return {"name": item["value"], "lfn": item["value"], "dataset": dataset}


def _jedi_log(check, spec):
    log = check.params.get("log")
    if log is None:
        spec["log"] = {"lfn": "${JEDITASKID}._${SN}.log.tgz", "dataset": f"{spec['taskName'].rstrip('/')}.log"}
        return
    if not isinstance(log, dict) or not isinstance(log.get("value"), str) or not log.get("dataset"):
        check.errors.append("log: expected an object with value (the log file name template) and dataset")
        spec["log"] = {"lfn": "", "dataset": ""}
        return
    for key in log:
        if key not in {"type", "param_type", "value", "dataset", "container", "token"}:
            check.errors.append(f"log.{key}: not supported by minipanda")
    if "${SN" not in log["value"]:
        check.errors.append("log.value: the log name must contain ${SN} so that every job's log is unique")
    spec["log"] = {"lfn": log["value"], "dataset": log["dataset"]}
