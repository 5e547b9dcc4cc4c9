"""What both forms of task parameters are read with: :class:`Checker` (typed values from the parameter dict, every
error collected with its field), the keys both forms share (:func:`base`) and how a task is split into jobs
(:func:`split`)."""
import re

from minipanda.core.jobspec import is_null

SPLIT_KEYS = ("nFilesPerJob", "nEventsPerJob", "nGBPerJob", "nJobs")
LABELS = ("user", "panda", "test", "ptest", "managed", "prod_test", "rc_test")
MAX_COMMAND = 4000  # characters of exec / assembled jobParameters
MAX_JOBS = 1_000_000
DEFAULT_SCOUTS = 3
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,199}\Z")


class Checker:
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


def base(check):
    return {
        "taskName": check.str("taskName", "", TASK_NAME) or missing(check, "taskName"),
        "vo": check.str("vo", "minipanda"), "workingGroup": check.str("workingGroup", None),
        "prodSourceLabel": check.str("prodSourceLabel", "user", choices=LABELS),
        "coreCount": check.int("coreCount", 1, 1, 1024), "ramCount": check.int("ramCount", 0, 0),
        "maxAttempt": check.int("maxAttempt", 3, 1, 100), "taskPriority": check.int("taskPriority", None, 0, 100000),
        "nScouts": check.int("nScouts", DEFAULT_SCOUTS, 0, 1000),
    }


def missing(check, key):
    if key not in check.params:
        check.errors.append(f"{key}: required")
    return ""


def split(check, in_ds, n_events_total):
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
