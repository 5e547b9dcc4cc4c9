"""Task parameters: validation of the two accepted forms and their normalised spec.

- The **flat form** (ours): exactly the keys in :data:`FLAT_KEYS`; ``exec`` is a shell command template with
  ``%IN``, ``%OUT`` / ``%OUT:name``, ``%RNDM:base``, ``%FIRSTEVENT``, ``%SKIPEVENTS``, ``%MAXEVENTS``.
- **PanDA's JEDI taskParamMap** (what prun and panda-client send), read by :mod:`minipanda.tasks.jediparams`:
  what maps is mapped, what only describes the client is kept without effect, everything else is refused with a
  message naming the key, never dropped.

Both are read with :mod:`minipanda.tasks.paramcheck` (typed values, the shared keys, the split rule).

:func:`normalise` returns the spec the generator works from; every error names its field, all at once.
"""
import re

from minipanda.core import models, policy
from minipanda.errors import TaskParamError
from minipanda.tasks import sandbox
from minipanda.tasks.datasets import DATASET_NAME
from minipanda.tasks.jediparams import jedi
from minipanda.tasks.paramcheck import MAX_COMMAND, Checker, base, split

FLAT_KEYS = ("taskName", "exec", "inDS", "nFilesPerJob", "nEventsPerJob", "nGBPerJob", "nJobs", "outputs", "site",
             "excludedSite", "coreCount", "ramCount", "walltime", "maxAttempt", "taskPriority", "nScouts",
             "prodSourceLabel", "vo", "workingGroup")
PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}\Z")
FLAT_PLACEHOLDER = re.compile(r"%([A-Z][A-Z0-9]*)(?::([A-Za-z0-9_.+-]+))?")
FLAT_NAMES = {"IN", "OUT", "RNDM", "FIRSTEVENT", "SKIPEVENTS", "MAXEVENTS"}


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
        spec, check = jedi(params, user)
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
    check = Checker(params)
    for key in params:
        if key not in FLAT_KEYS:
            check.errors.append(f"{key}: unknown parameter; the flat form takes {', '.join(FLAT_KEYS)}")
    spec = base(check)
    spec["form"] = "flat"
    command = check.str("exec", "")
    if not command.strip():
        check.errors.append("exec: required, the command to run (with %IN for the input files)")
    spec["exec"] = command
    spec["inDS"] = check.str("inDS", None)
    spec["outputs"] = _flat_outputs(check, spec["taskName"])
    spec["log"] = {"lfn": "${JEDITASKID}._${SN}.log.tgz", "dataset": f"{spec['taskName']}.log"}
    spec["split"] = split(check, spec["inDS"], None)
    spec["site"], spec["excludedSite"] = check.names("site"), check.names("excludedSite")
    spec["walltime"] = check.int("walltime", 0, 0)
    spec["transformation"] = "/bin/sh"
    spec["ipConnectivity"] = "none"
    _flat_placeholders(check, command, spec)
    return spec, check


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
