"""PanDA's job field names on the wire, and their mapping to minipanda's columns.

Three shapes cross the wire:
- a *submitted spec*: a dict keyed by PanDA JobSpec names (ours, or panda-client's list of positional values);
- a *job definition*: what getJob hands a pilot (PanDA's dispatcher keys: jobPars, inFiles, outFiles, ...);
- a *description*: what job/get_description returns, keyed by JobSpec names plus "Files".
"""
import json
import os
import re
import uuid

import peewee

from minipanda.core import models
from minipanda.errors import SpecError

# panda-client 2.2 serialises a JobSpec as its attribute values in this order (JobSpec._attributes), followed by
# the list of its files, each FileSpec._attributes values followed by one trailing null.
JOBSPEC_ATTRIBUTES = (
    "PandaID", "jobDefinitionID", "schedulerID", "pilotID", "creationTime", "creationHost", "modificationTime",
    "modificationHost", "AtlasRelease", "transformation", "homepackage", "prodSeriesLabel", "prodSourceLabel",
    "prodUserID", "assignedPriority", "currentPriority", "attemptNr", "maxAttempt", "jobStatus", "jobName",
    "maxCpuCount", "maxCpuUnit", "maxDiskCount", "maxDiskUnit", "ipConnectivity", "minRamCount", "minRamUnit",
    "startTime", "endTime", "cpuConsumptionTime", "cpuConsumptionUnit", "commandToPilot", "transExitCode",
    "pilotErrorCode", "pilotErrorDiag", "exeErrorCode", "exeErrorDiag", "supErrorCode", "supErrorDiag",
    "ddmErrorCode", "ddmErrorDiag", "brokerageErrorCode", "brokerageErrorDiag", "jobDispatcherErrorCode",
    "jobDispatcherErrorDiag", "taskBufferErrorCode", "taskBufferErrorDiag", "computingSite", "computingElement",
    "jobParameters", "metadata", "prodDBlock", "dispatchDBlock", "destinationDBlock", "destinationSE", "nEvents",
    "grid", "cloud", "cpuConversion", "sourceSite", "destinationSite", "transferType", "taskID", "cmtConfig",
    "stateChangeTime", "prodDBUpdateTime", "lockedby", "relocationFlag", "jobExecutionID", "VO", "pilotTiming",
    "workingGroup", "processingType", "prodUserName", "nInputFiles", "countryGroup", "batchID", "parentID",
    "specialHandling", "jobsetID", "coreCount", "nInputDataFiles", "inputFileType", "inputFileProject",
    "inputFileBytes", "nOutputDataFiles", "outputFileBytes", "jobMetrics", "workQueue_ID", "jediTaskID",
    "jobSubStatus", "actualCoreCount", "reqID", "maxRSS", "maxVMEM", "maxSWAP", "maxPSS", "avgRSS", "avgVMEM",
    "avgSWAP", "avgPSS", "maxWalltime", "nucleus", "eventService", "failedAttempt", "hs06sec", "gshare", "hs06",
    "totRCHAR", "totWCHAR", "totRBYTES", "totWBYTES", "rateRCHAR", "rateWCHAR", "rateRBYTES", "rateWBYTES",
    "resource_type", "diskIO", "memory_leak", "memory_leak_x2", "container_name", "job_label", "gco2_regional",
    "gco2_global", "cpu_architecture_level", "outputFileType",
)
FILESPEC_ATTRIBUTES = (
    "rowID", "PandaID", "GUID", "lfn", "type", "dataset", "status", "prodDBlock", "prodDBlockToken",
    "dispatchDBlock", "dispatchDBlockToken", "destinationDBlock", "destinationDBlockToken", "destinationSE",
    "fsize", "md5sum", "checksum", "scope",
)
MAX_JOBS_PER_SUBMIT = 5000
INT64_MAX, INT32_MAX = 2 ** 63 - 1, 2 ** 31 - 1
SAFE_SCOPE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
# A file name pilots use as a path and find in comma-joined lists (inFiles, outFiles): no separators (',', '/'),
# no control characters, no '%' (a URL-quoted '..' is '..' to the file store), no leading dot.
LFN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}\Z")  # the file store's names too

# JobSpec name -> (column, kind). Everything else a client sends is kept verbatim in Job.attributes.
COLUMNS = {
    "PandaID": ("panda_id", int), "jobDefinitionID": ("job_definition_id", int), "jobsetID": ("jobset_id", int),
    "jediTaskID": ("task_id", int), "taskID": ("task_id", int), "jobName": ("job_name", str),
    "jobStatus": ("status", str), "computingSite": ("computing_site", str),
    "prodSourceLabel": ("prod_source_label", str), "prodUserName": ("prod_user_name", str),
    "workingGroup": ("working_group", str), "VO": ("vo", str), "transformation": ("transformation", str),
    "jobParameters": ("job_pars", str), "attemptNr": ("attempt_nr", int), "maxAttempt": ("max_attempt", int),
    "currentPriority": ("current_priority", int), "assignedPriority": ("assigned_priority", int),
    "coreCount": ("core_count", int), "minRamCount": ("min_ram_count", int), "maxWalltime": ("max_walltime", int),
    "maxCpuCount": ("max_cpu_count", int), "maxDiskCount": ("max_disk_count", int),
    "resource_type": ("resource_type", str), "creationTime": ("creation_time", "time"),
    "modificationTime": ("modification_time", "time"), "stateChangeTime": ("state_changed_time", "time"),
    "startTime": ("start_time", "time"), "endTime": ("end_time", "time"), "pilotID": ("pilot_id", str),
    "batchID": ("batch_id", str), "modificationHost": ("node", str), "commandToPilot": ("command_to_pilot", str),
    "transExitCode": ("trans_exit_code", int), "pilotErrorCode": ("pilot_error_code", int),
    "pilotErrorDiag": ("pilot_error_diag", str), "exeErrorCode": ("exe_error_code", int),
    "exeErrorDiag": ("exe_error_diag", str), "supErrorCode": ("sup_error_code", int),
    "supErrorDiag": ("sup_error_diag", str), "cpuConsumptionTime": ("cpu_consumption_time", int),
    "cpuConsumptionUnit": ("cpu_consumption_unit", str), "nEvents": ("n_events", int), "maxRSS": ("max_rss", int),
    "maxPSS": ("max_pss", int), "maxVMEM": ("max_vmem", int), "avgRSS": ("avg_rss", int), "avgPSS": ("avg_pss", int),
    "actualCoreCount": ("actual_core_count", int), "jobMetrics": ("job_metrics", str),
    "pilotTiming": ("pilot_timing", str), "metadata": ("metadata", str),
}
# Set by the server, never taken from a submission.
SERVER_OWNED = {"PandaID", "jobStatus", "creationTime", "modificationTime", "stateChangeTime", "startTime", "endTime",
                "pilotID", "batchID", "modificationHost", "commandToPilot", "prodUserName"}
FILE_TYPES = {"input", "output", "log", "pseudo_input"}
NUL_REFUSED = "a NUL character cannot be stored"  # PostgreSQL's texts cannot hold one
NOT_NEGATIVE = ("coreCount", "minRamCount", "maxWalltime", "maxDiskCount", "maxCpuCount", "maxAttempt", "attemptNr")


def is_null(value):
    """PanDA's ways of saying "no value": None, "", and panda-client's string "NULL"."""
    return value is None or value == "" or value == "NULL"


def to_int(value, name, errors, maximum=INT64_MAX):
    """Parse an integer leniently (pilots send "2500.004" and "3"), recording an error naming ``name``; a number
    beyond ``maximum`` either way (the column's range) is an error too, never a database failure."""
    if type(value) is int and -maximum <= value <= maximum:  # what a pilot's JSON report holds: kept as it is
        return value
    if is_null(value):
        return None
    if isinstance(value, bool):
        errors.append(f"{name}: expected an integer, got {value!r}")
        return None
    try:
        number = value if isinstance(value, int) else int(value) if str(value).strip().lstrip("-").isdigit() \
            else int(float(value))
    except (TypeError, ValueError, OverflowError):
        errors.append(f"{name}: expected an integer, got {str(value)[:40]!r}")
        return None
    if abs(number) > maximum:
        errors.append(f"{name}: must be between {-maximum} and {maximum}, got {str(value)[:40]}")
        return None
    return number


def column_maximum(column):
    """The largest number a Job column holds: INTEGER columns are 32-bit on PostgreSQL."""
    field = models.Job._meta.columns.get(column)
    return INT64_MAX if field is None or isinstance(field, peewee.BigIntegerField) else INT32_MAX


INT_COLUMN_MAXIMUM = {column: column_maximum(column) for column, kind in COLUMNS.values() if kind is int}
STR_COLUMN_LIMIT = {column: models.Job._meta.columns[column].max_length for column, kind in COLUMNS.values()
                     if kind is str and getattr(models.Job._meta.columns[column], "max_length", None)}


def positional_to_dict(values, where):
    """Turn panda-client's positional JobSpec list into a dict keyed by JobSpec names."""
    errors = []
    if len(values) != len(JOBSPEC_ATTRIBUTES) + 1 or not isinstance(values[-1], list):
        raise SpecError([f"{where}: a positional job must hold {len(JOBSPEC_ATTRIBUTES)} JobSpec values and a "
                         f"list of files (panda-client 2.2 layout); got {len(values)} items"])
    # is_null written out: a call per value was most of a panda-client submission's checks (126 values a job)
    spec = {name: value for name, value in zip(JOBSPEC_ATTRIBUTES, values)
            if not (value is None or value == "" or value == "NULL")}
    files = []
    for index, fvalues in enumerate(values[-1]):
        if not isinstance(fvalues, list) or len(fvalues) < len(FILESPEC_ATTRIBUTES):
            errors.append(f"{where}.Files[{index}]: expected {len(FILESPEC_ATTRIBUTES)} FileSpec values")
            continue
        files.append({n: v for n, v in zip(FILESPEC_ATTRIBUTES, fvalues) if not (v is None or v == "" or v == "NULL")})
    if errors:
        raise SpecError(errors)
    spec["Files"] = files
    return spec


# A file's optional texts: JobFile column -> the spec's key, and the column's length (scope's pattern has its own)
FILE_TEXT_KEYS = {"guid": "GUID", "dataset": "dataset", "destination_dblock": "destinationDBlock",
                  "checksum": "checksum"}
FILE_TEXT_LIMIT = {column: models.JobFile._meta.columns[column].max_length for column in FILE_TEXT_KEYS}


def parse_file(entry, where, errors):
    """Validate one file of a submitted spec; return JobFile column values."""
    if not isinstance(entry, dict):
        errors.append(f"{where}: expected an object with lfn and type")
        return None
    lfn, ftype = entry.get("lfn"), entry.get("type")
    if not isinstance(lfn, str) or not LFN.match(lfn) or lfn.strip(".") == "":
        errors.append(f"{where}.lfn: expected a plain file name (letters, digits, '._-', no leading dot, at "
                      f"most 255 characters), got {str(lfn)[:80]!r}")
    if not isinstance(ftype, str) or ftype not in FILE_TYPES:  # a list or an object is no type (nor hashable)
        errors.append(f"{where}.type: expected one of {sorted(FILE_TYPES)}, got {ftype!r}")
    scope = entry.get("scope")
    if not is_null(scope) and not (isinstance(scope, str) and SAFE_SCOPE.match(scope)):
        errors.append(f"{where}.scope: expected letters, digits, '.', '_' or '-' (it becomes a directory name), "
                      f"got {scope!r}")
    guid = entry.get("GUID", entry.get("guid"))
    row = {
        "type": ftype, "lfn": lfn, "guid": None if is_null(guid) else str(guid),
        "scope": None if is_null(entry.get("scope")) else str(entry["scope"]),
        "dataset": None if is_null(entry.get("dataset")) else str(entry["dataset"]),
        "destination_dblock": None if is_null(entry.get("destinationDBlock")) else str(entry["destinationDBlock"]),
        "fsize": to_int(entry.get("fsize"), f"{where}.fsize", errors),
        "checksum": None if is_null(entry.get("checksum")) else str(entry["checksum"]),
    }
    for column, limit in FILE_TEXT_LIMIT.items():  # PostgreSQL refuses a longer one, failing every job
        if row[column] is not None and (len(row[column]) > limit or "\x00" in row[column]):
            key = ("GUID" if "GUID" in entry else "guid") if column == "guid" else FILE_TEXT_KEYS[column]
            errors.append(f"{where}.{key}: at most {limit} characters, got {len(row[column])}"
                          if len(row[column]) > limit else f"{where}.{key}: {NUL_REFUSED}")
    return row


def parse_submitted(spec, where):
    """Validate one submitted job dict; return (column values, attributes dict, file rows). Raises SpecError."""
    errors = []
    if not isinstance(spec, dict):
        raise SpecError([f"{where}: expected a job object or a panda-client positional list"])
    columns, attributes = {}, {}
    for name, value in spec.items():
        if name in ("Files", "files") or name in SERVER_OWNED or is_null(value):
            continue
        if type(value) is dict and set(value) == {"_datetime_object"}:  # panda-client's datetime encoding
            value = str(value["_datetime_object"])
        known = COLUMNS.get(name)
        if known is None:
            if not isinstance(value, (str, int, float, bool)):
                errors.append(f"{where}.{name}: expected a plain value")
            attributes[name] = value
            continue
        column, kind = known
        if kind is int:
            number = value if type(value) is int and -INT32_MAX <= value <= INT32_MAX else None  # most of them
            columns[column] = number if number is not None else to_int(value, f"{where}.{name}", errors,
                                                                        INT_COLUMN_MAXIMUM[column])
        elif kind is str:
            value = str(value)
            if len(value) > STR_COLUMN_LIMIT.get(column, len(value)):  # PostgreSQL refuses it, failing every job
                errors.append(f"{where}.{name}: at most {STR_COLUMN_LIMIT[column]} characters, got {len(value)}")
            elif "\x00" in value:  # PostgreSQL cannot store it (as the pilot's updates, core/updates.py)
                errors.append(f"{where}.{name}: {NUL_REFUSED}")
            columns[column] = value
    if "jobPars" in spec and "job_pars" not in columns and not is_null(spec["jobPars"]):
        columns["job_pars"] = str(spec["jobPars"])
        if "\x00" in columns["job_pars"]:
            errors.append(f"{where}.jobPars: {NUL_REFUSED}")
    attributes.pop("jobPars", None)
    if not columns.get("computing_site"):
        errors.append(f"{where}.computingSite: required; name the queue the job must run on")
    if not columns.get("transformation"):
        errors.append(f"{where}.transformation: required; the program or script URL the pilot runs")
    # attemptNr is kept as submitted: a client that resubmits a job echoes it in its updates.
    for name in NOT_NEGATIVE:
        col = COLUMNS[name][0]
        if columns.get(col) is not None and columns[col] < 0:
            errors.append(f"{where}.{name}: must not be negative, got {columns[col]}")
    raw_files = spec.get("Files", spec.get("files", []))
    if not isinstance(raw_files, list):
        errors.append(f"{where}.Files: expected a list")
        raw_files = []
    files = [parse_file(f, f"{where}.Files[{i}]", errors) for i, f in enumerate(raw_files)]
    if errors:
        raise SpecError(errors)
    return {k: v for k, v in columns.items() if v is not None}, attributes, files


def csv(values):
    """PanDA's comma-joined list form; missing entries become empty strings."""
    return ",".join(["" if v is None else str(v) for v in values])


# What job_definition reads: dispatch asks the database for these columns only (all integers and texts, so the
# rows need no conversion), and gives job_definition rows that have them as attributes.
DEFINITION_COLUMNS = ("panda_id", "jobset_id", "task_id", "job_definition_id", "job_name", "attempt_nr",
                      "max_attempt", "prod_source_label", "prod_user_name", "transformation", "job_pars", "core_count",
                      "min_ram_count", "max_walltime", "max_cpu_count", "max_disk_count", "current_priority",
                      "resource_type", "attributes")
DEFINITION_FILE_COLUMNS = ("row_id", "panda_id", "type", "lfn", "guid", "fsize", "checksum", "scope", "dataset",
                           "surl", "destination_dblock")
_NO_INPUTS = dict.fromkeys(("prodDBlocks", "inFiles", "GUID", "fsize", "checksum", "scopeIn", "realDatasetsIn",
                            "dispatchDblock", "ddmEndPointIn", "surlIn"), "")


def _inputs(inputs):
    """The input-file keys of a job definition (a job that reads nothing, most of them, takes _NO_INPUTS)."""
    datasets = csv(f.dataset for f in inputs)
    return {"prodDBlocks": datasets, "inFiles": csv(f.lfn for f in inputs), "GUID": csv(f.guid for f in inputs),
            "fsize": csv(f.fsize for f in inputs), "checksum": csv(f.checksum for f in inputs),
            "scopeIn": csv(f.scope for f in inputs), "realDatasetsIn": datasets, "dispatchDblock": datasets,
            "ddmEndPointIn": ",".join("" for _ in inputs),
            "surlIn": csv(f.surl if f.surl and "," not in f.surl else "" for f in inputs)}  # registered location


# Job attributes a definition carries: (definition key, attribute name, value when the job has none).
_ATTRIBUTE_KEYS = (("swRelease", "AtlasRelease", ""), ("homepackage", "homepackage", ""),
                   ("cmtConfig", "cmtConfig", ""), ("container_name", "container_name", ""),
                   ("processingType", "processingType", ""), ("transferType", "transferType", ""),
                   ("eventService", "eventService", "False"), ("allowNoOutput", "allowNoOutput", ""),
                   ("destinationSE", "destinationSE", ""), ("cloud", "cloud", ""))
_NO_ATTRIBUTES = {key: default for key, _, default in _ATTRIBUTE_KEYS}


def _outputs(outputs, logs):
    """The output- and log-file keys of a job definition."""
    out_all = outputs + logs
    empty = ",".join("" for _ in out_all)
    log = logs[0] if logs else None
    return {"outFiles": csv(f.lfn for f in out_all), "scopeOut": csv(f.scope for f in outputs),
            "realDatasets": csv(f.dataset for f in out_all),
            "destinationDblock": csv(f.destination_dblock or f.dataset for f in out_all),
            "ddmEndPointOut": empty, "fileDestinationSE": empty,
            "logFile": log.lfn if log else "", "logGUID": (log.guid or "") if log else "",
            "scopeLog": (log.scope or "") if log else ""}


def job_definition(job, files):
    """The getJob reply for one job: PanDA dispatcher keys, comma-separated file lists. ``job`` and ``files`` are
    models or any rows with the DEFINITION_COLUMNS and DEFINITION_FILE_COLUMNS as attributes."""
    attrs = json.loads(job.attributes) if job.attributes and job.attributes != "{}" else None
    inputs, outputs, logs = [], [], []
    for f in files:
        kind = f.type
        if kind == "input":
            inputs.append(f)
        elif kind == "output":
            outputs.append(f)
        elif kind == "log":
            logs.append(f)
    definition = {
        "PandaID": job.panda_id, "jobsetID": job.jobset_id, "taskID": job.task_id or 0,
        "jobDefinitionID": job.job_definition_id, "jobName": job.job_name, "attemptNr": job.attempt_nr,
        "maxAttempt": job.max_attempt, "prodSourceLabel": job.prod_source_label,
        "prodUserID": attrs.get("prodUserID", job.prod_user_name) if attrs else job.prod_user_name,
        "transformation": job.transformation, "jobPars": job.job_pars, "coreCount": job.core_count,
        "minRamCount": job.min_ram_count, "maxWalltime": job.max_walltime, "maxCpuCount": job.max_cpu_count,
        "maxDiskCount": job.max_disk_count, "currentPriority": job.current_priority,
        "resource_type": job.resource_type or "",
    }
    definition.update({key: attrs.get(name, default) for key, name, default in _ATTRIBUTE_KEYS} if attrs
                      else _NO_ATTRIBUTES)
    definition["eventService"] = str(definition["eventService"])
    definition.update(_inputs(inputs) if inputs else _NO_INPUTS)
    if not outputs and len(logs) == 1:  # the common shape: a log and nothing else
        log = logs[0]
        lfn, dataset = log.lfn, log.dataset
        definition.update({"outFiles": lfn, "scopeOut": "", "realDatasets": "" if dataset is None else dataset,
                           "destinationDblock": log.destination_dblock or ("" if dataset is None else dataset),
                           "ddmEndPointOut": "", "fileDestinationSE": "", "logFile": lfn, "logGUID": log.guid or "",
                           "scopeLog": log.scope or ""})
    else:
        definition.update(_outputs(outputs, logs))
    return definition


def _wire_time(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else None


def describe(job, files):
    """job/get_description's entry: every JobSpec name (None when unset) plus Files keyed by FileSpec names."""
    attrs = json.loads(job.attributes or "{}")
    out = {name: attrs.get(name) for name in JOBSPEC_ATTRIBUTES}
    for name, (column, kind) in COLUMNS.items():
        value = getattr(job, column)
        out[name] = _wire_time(value) if kind == "time" else value
    out["jobParameters"] = job.job_pars
    out["Files"] = [
        {"rowID": f.row_id, "PandaID": job.panda_id, "GUID": f.guid, "lfn": f.lfn, "type": f.type,
         "dataset": f.dataset, "status": f.status, "destinationDBlock": f.destination_dblock, "fsize": f.fsize,
         "checksum": f.checksum, "scope": f.scope, "surl": f.surl}
        for f in files
    ]
    return out


def new_guid():
    """A GUID for a file the submitter did not name one for (logs, outputs)."""
    return str(uuid.uuid4())


def new_guids(n):
    """``n`` GUIDs as new_guid makes them (random UUIDs, version 4), from one read of the random source (a read
    per GUID was a tenth of a 5,000-job submission), written from the hex digits directly: a UUID object per
    GUID was still a tenth of what is left. As uuid.UUID(bytes=..., version=4) does, the version digit is 4 and
    the variant's two top bits are 10 (the digit 8, 9, a or b)."""
    digits = os.urandom(16 * n).hex()
    return [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
            for h in (digits[i:i + 32] for i in range(0, 32 * n, 32))]


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def load_files(panda_ids):
    """{panda_id: [JobFile, ...]} for the given jobs, in one query."""
    by_job = {pid: [] for pid in panda_ids}
    if panda_ids:
        for f in models.JobFile.select().where(models.JobFile.job.in_(list(panda_ids))).order_by(models.JobFile.row_id):
            by_job[f.panda_id].append(f)
    return by_job
