"""ConfigError, and turning pydantic's errors into messages a site admin can act on (with "did you mean").

Suggestions come from :mod:`difflib`: first among the keys of the section where the unknown key stands, then the
names other systems use for our keys (Harvester's ``queueStatus`` is our ``status``), then any key of any section
(``maxWorkers`` written at the top of a queue belongs in ``limits``).
"""
import difflib
import re
import typing

# Names used by Harvester, PanDA or other batch tools for which our key is not a close spelling.
HINTS = {
    "queueStatus": "status", "prodSourceLabel": "prodSourceLabels", "templateQueueName": "template",
    "isTemplateQueue": "is_template", "queue": "batch.partition", "localQueueName": "batch.partition",
    "nCore": "resources.corecount", "nCorePerNode": "resources.corecount", "cores": "resources.corecount",
    "memory": "resources.maxrss", "walltimeLimit": "batch.walltime", "sshUserName": "transport.user",
    "remoteHost": "transport.host", "privateKey": "transport.key_file", "jumpHost": "transport.jump_host",
    "accessPoint": "transport.workdir", "nJobsPerWorker": "jobsPerWorker", "env": "batch.environment",
    "directives": "batch.extra_directives", "scheduler": "batch.system", "copytools": "pilot.copytool",
}


class ConfigError(Exception):
    """A queue configuration that cannot be used.

    Attributes:
        errors: every problem found, one message each, naming the file, the queue and the key.
        source: the file (or "<string>").
    """

    def __init__(self, errors, source="<string>"):
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: {len(self.errors)} error(s) in the queue configuration:\n  "
                         + "\n  ".join(self.errors))


def model_at(loc, model=None):
    """The section model (of ``model``, default the queue) that holds the last key of ``loc`` (a tuple of keys from
    the queue), or None."""
    model = model or _queue_model()
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(key) if model else None
        model = _model_of(field.annotation) if field else None
    return model


def _queue_model():
    """The schema's Queue, imported when a message needs it: ConfigError is raised and caught by commands (the
    ``minipanda`` and ``harvester`` CLIs) that must start without pydantic's cost."""
    from queueconfig.schema import Queue

    return Queue


def _model_of(annotation):
    from pydantic import BaseModel

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def all_keys(model=None, prefix=""):
    """Every key of the schema (of ``model``, default the queue) as a dotted path from it (sections included)."""
    model = model or _queue_model()
    paths = []
    for key, field in model.model_fields.items():
        paths.append(prefix + key)
        sub = _model_of(field.annotation)
        if sub:
            paths.extend(all_keys(sub, prefix + key + "."))
    return paths


def suggest_key(key, loc):
    """A "did you mean" text for an unknown key at ``loc`` (the tuple ending in that key), or ""."""
    model = model_at(loc)
    here = list(model.model_fields) if model else []
    close = difflib.get_close_matches(key, here, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if key in HINTS:
        return f"did you mean '{HINTS[key]}'? ({key} is what other tools call it)"
    everywhere = all_keys()
    by_leaf = {path.rsplit(".", 1)[-1].lower(): path for path in everywhere}
    if key.lower() in by_leaf:
        return f"did you mean '{by_leaf[key.lower()]}'? (that key belongs in another section)"
    close = difflib.get_close_matches(key, list(by_leaf), n=1, cutoff=0.75)
    if close:
        return f"did you mean '{by_leaf[close[0]]}'?"
    return f"known keys here: {', '.join(here)}" if here else ""


def suggest_value(value, choices):
    """A "did you mean" text for a value that is not one of ``choices``, or ""."""
    if not isinstance(value, str):
        return ""
    lowered = {choice.lower(): choice for choice in choices}
    if value.lower() in lowered:
        return f"did you mean '{lowered[value.lower()]}'? (values are case-sensitive)"
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean '{lowered[close[0]]}'?" if close else ""


def describe(error):
    """A one-line explanation of one pydantic error dict: what was found, what was expected, a suggestion."""
    kind, loc, value = error["type"], error["loc"], error.get("input")
    msg = error["msg"]
    if kind == "extra_forbidden":
        return " ".join(filter(None, ["unknown key;", suggest_key(str(loc[-1]), loc)])).rstrip(";")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        hint = suggest_value(value, choices)
        text = f"{value!r} is not allowed; expected one of {', '.join(choices)}"
        return f"{text}; {hint}" if hint else text
    if kind in ("value_error", "assertion_error"):
        text = re.sub(r"^(Value|Assertion) error, ", "", msg)
        return text if isinstance(value, (list, tuple, dict)) else f"{_shown(value)} {text}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys (a section), got {_type_name(value)} {_shown(value)}"
    bounds = {"greater_than_equal": "at least {ge}", "less_than_equal": "at most {le}", "too_short": "at least "
              "{min_length} entries"}
    if kind in bounds:
        text = "must be " + bounds[kind].format(**error.get("ctx", {}))
        return f"{text}, got {_shown(value)}" + (" (a negative value has no meaning here)"
                                                 if isinstance(value, (int, float)) and value < 0 else "")
    expected = re.sub(r"^Input should be ", "expected ", msg)
    expected = expected.replace("a valid tuple", "a list").replace("a valid integer", "a whole number")
    expected = expected.replace("a valid ", "a ")
    text = f"{expected}, got {_type_name(value)} {_shown(value)}"
    if isinstance(value, bool) and kind == "string_type":
        text += " (YAML reads yes/no/on/off/true/false as booleans: put the value in quotes)"
    return text


def _type_name(value):
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)


def _shown(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key_text(loc):
    """``loc`` as the admin writes it: ``batch.extra_directives[2]``."""
    text = ""
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "(queue)"
