"""PanDA's JEDI taskParamMap (what prun and panda-client send), read into the task spec: ``jobParameters`` items,
``log``, ``noInput`` with ``nEvents``/``nEventsPerJob``, ``site``... as far as they map (:data:`JEDI_MAPPED`); keys
that only describe the client (:data:`JEDI_INFORMATIONAL`) are kept with the task and have no effect; everything
else is refused with a message naming the key, never dropped."""
import re

from minipanda.tasks.paramcheck import MAX_COMMAND, Checker, base, split

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
CONNECTIVITY = ("none", "http", "full")
# PanDA's runGen at the one base URL pilot3's generic user downloads transformations from; minipanda serves its own
# runGen at that path (minipanda/trf/), and both pilots fetch /trf/user/ from the server they talk to.
DEFAULT_TRANSFORMATION = "http://pandaserver-doma.cern.ch:25080/trf/user/runGen-00-00-02"
REGEX_ONLY = re.compile(r"[\\^$()+{}|]")
JEDI_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)(/[A-Z]+)?\}|\$(JEDITASKID)\b")
JEDI_NAMES = {"IN", "IN/T", "IN/L", "SN", "SN/P", "JEDITASKID", "SURL", "MAXEVENTS", "SKIPEVENTS", "FIRSTEVENT",
              "RNDMSEED", "SEQNUMBER"}
# prun's default input filter (log tarballs of earlier tasks), a regular expression, as the shell wildcards it means
PRUN_LOG_EXCLUDE = {r"\.log\.tgz(\.\d+)*$": ["*.log.tgz", "*.log.tgz.[0-9]*"]}


def jedi(params, user):
    check = Checker(params)
    for key in params:
        if key in JEDI_REFUSALS:
            check.errors.append(f"{key}: {JEDI_REFUSALS[key]}")
        elif key not in JEDI_MAPPED and key not in JEDI_INFORMATIONAL:
            check.errors.append(f"{key}: PanDA task parameter not supported by minipanda")
    if check.has("userName") and params["userName"] != user:
        check.errors.append(f"userName: tasks are submitted as the token's user ({user}), not {params['userName']!r}")
    spec = base(check)
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
    spec["split"] = split(check, spec["inDS"], n_events)
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
