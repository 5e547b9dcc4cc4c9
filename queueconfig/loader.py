"""Loading a queue file: parse, map Harvester files, resolve templates, validate every queue, report all at once.

The pipeline is: :func:`queueconfig.parsing.parse` -> entries in our format (our file as it is, or a Harvester file
through :mod:`queueconfig.harvester`) -> for each entry, its template chain merged key by key -> pydantic
validation -> the cross-key rules of :mod:`queueconfig.checks`. Nothing stops at the first problem: every error of
every queue is collected, and a :class:`ConfigError` carries them all. :func:`load_partial` instead returns the
valid queues with the errors of the others by queue name, so that one broken queue stops only itself.

Internally an error is a ``(queue name or None, message)`` pair; None is an error of the file as a whole.
"""
import copy
import dataclasses
import difflib
import hashlib
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from pydantic import ValidationError

from queueconfig import checks, harvester
from queueconfig.errors import ConfigError, describe, key_text
from queueconfig.fields import name as check_name
from queueconfig.parsing import Entry, parse
from queueconfig.schema import Queue

FORMAT_VERSION = 1
_TOP_KEYS = ("version", "queues")


@dataclass(frozen=True)
class QueueConfig:
    """One loaded version of a queue file. Immutable.

    Attributes:
        queues: queue name -> :class:`Queue`, with templates resolved and defaults applied (templates left out).
        version_id: the first 12 hex digits of the SHA-256 of the file content; equal content, equal id.
        warnings: doubtful settings and ignored (Harvester) keys, one message each.
        source: the file it was read from.
        format: "minipanda" or "harvester" (the file's own format).
    """

    queues: Mapping[str, Queue]
    version_id: str
    warnings: tuple = ()
    source: str = "<string>"
    format: str = "minipanda"
    _document: Mapping = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, name):
        return self.queues[name]

    def __iter__(self):
        return iter(self.queues)

    def __len__(self):
        return len(self.queues)

    def __contains__(self, name):
        return name in self.queues

    def get(self, name, default=None):
        """The queue called ``name``, or ``default``."""
        return self.queues.get(name, default)

    def document(self):
        """The file in our format (templates kept, a fresh copy): what ``queueconfig convert`` writes."""
        return copy.deepcopy(dict(self._document))


def load(path):
    """Load and validate a queue file (YAML, JSON, or a Harvester ``panda_queueconfig.json``).

    Args:
        path: the file.

    Returns:
        The :class:`QueueConfig`.

    Raises:
        ConfigError: with every problem of the file in ``.errors``.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror}"], path) from None
    return loads(content, source=path)


def loads(content, source="<string>", syntax=None):
    """Load and validate queue-file content; see :func:`load`.

    Args:
        content: the text (str or bytes).
        source: a name for messages (the file name).
        syntax: "yaml" or "json"; guessed from ``source`` and the content by default.
    """
    config, issues = _load(content, source, syntax)
    errors = list(dict.fromkeys(message for _, message in issues))
    if errors:
        raise ConfigError(errors, source)
    return config


def load_partial(path):
    """Load a queue file keeping every valid queue, for a daemon that must not stop all queues for one typo.

    Args:
        path: the file.

    Returns:
        ``(config, queue_errors, file_errors)``: a :class:`QueueConfig` with only the valid queues; queue name ->
        its error messages, for each queue (or template) that failed (a queue whose template failed is listed
        too); and the errors of the file as a whole (unreadable, not YAML/JSON, unknown top-level keys). A file
        that cannot be read or parsed gives an empty config and only file errors.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as exc:
        return _empty(path), {}, [f"{path}: cannot read the file: {exc.strerror}"]
    return loads_partial(content, source=path)


def loads_partial(content, source="<string>", syntax=None):
    """:func:`load_partial` on content; arguments as for :func:`loads`."""
    try:
        config, issues = _load(content, source, syntax)
    except ConfigError as exc:
        return _empty(source), {}, list(exc.errors)
    by_queue, file_errors = {}, []
    for name, message in dict.fromkeys(issues):
        (file_errors if name is None else by_queue.setdefault(name, [])).append(message)
    good = {name: queue for name, queue in config.queues.items() if name not in by_queue}
    return dataclasses.replace(config, queues=MappingProxyType(good)), by_queue, file_errors


def _load(content, source, syntax):
    """Parse and build: ``(config with the queues that validated, issues)``; raises ConfigError if unparsable."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    version_id = hashlib.sha256(data).hexdigest()[:12]
    document, lines = parse(data, source, syntax)
    fmt, entries, issues, warnings = _entries(document, source)
    queues, more_issues, more_warnings = _build(entries, source, lines)
    ours = {"version": FORMAT_VERSION, "queues": {entry.name: entry.raw for entry in entries}}
    config = QueueConfig(queues=MappingProxyType(queues), version_id=version_id,
                         warnings=tuple(in_line_order(dict.fromkeys(warnings + more_warnings), source)),
                         source=source, format=fmt, _document=MappingProxyType(ours))
    return config, in_line_order(issues + more_issues, source, key=lambda issue: issue[1])


def in_line_order(messages, source, key=lambda message: message):
    """``messages`` sorted by the line they name (``file:LINE: ...``), as an editor walks the file; the file's own
    messages (no line) first; equal lines keep their order (the schema's, then the cross-key rules')."""
    prefix = f"{source}:"

    def line(item):
        text = key(item)
        digits = text[len(prefix):].split(":", 1)[0] if text.startswith(prefix) else ""
        return int(digits) if digits.isdigit() else 0

    return sorted(messages, key=line)


def _empty(source):
    return QueueConfig(queues=MappingProxyType({}), version_id="", source=source)


def _entries(document, source):
    """Split a parsed file into entries in our format: ``(format, entries, errors, warnings)``."""
    if isinstance(document, dict) and ("queues" in document or "version" in document):
        entries, errors = _our_entries(document, source)
        return "minipanda", entries, errors, []
    if isinstance(document, dict) and document and all(isinstance(v, dict) for v in document.values()):
        entries, errors, warnings = harvester.to_entries(document, source)
        return "harvester", entries, errors, warnings
    return "minipanda", [], [(None, f"{source}: expected a mapping with 'version: 1' and 'queues' (minipanda "
                                    "format), or a Harvester panda_queueconfig.json mapping of queue names to "
                                    "attributes")], []


def _our_entries(document, source):
    errors = []
    for key in document:
        if key not in _TOP_KEYS:
            close = difflib.get_close_matches(str(key), _TOP_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; expected only {' and '.join(_TOP_KEYS)}"
            errors.append((None, f"{source}: top level: unknown key {key!r}{hint}"))
    if document.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        errors.append((None, f"{source}: top level: version: {document['version']!r} is not supported; "
                             "expected 1"))
    queues = document.get("queues")
    if not isinstance(queues, dict):
        errors.append((None, f"{source}: top level: queues: expected a mapping of queue name to settings, got "
                             f"{type(queues).__name__}"))
        return [], errors
    entries = []
    for name, raw in queues.items():
        where = f"{source}: queue {name!r}"
        try:
            check_name(name if isinstance(name, str) else "")
        except ValueError as exc:
            errors.append((str(name), f"{where}: invalid queue name: {exc}"))
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append((name, f"{where}: expected a mapping of settings, got {type(raw).__name__} {raw!r}"))
            continue
        if "name" in raw:
            errors.append((name, f"{where}: name: remove this key; a queue's name is its key under 'queues'"))
            raw = {k: v for k, v in raw.items() if k != "name"}
        entries.append(Entry(name, raw, line_prefix=("queues", name)))
    return entries, errors


def _build(entries, source, lines):
    """Resolve templates, validate and check every entry: ``(queues, errors, warnings)``, errors by entry name."""
    by_name = {entry.name: entry for entry in entries}
    queues, errors, warnings, used = {}, [], [], set()
    for entry in entries:
        chain, problem = _chain(entry, by_name)
        if problem:
            owner, text = problem
            errors.append((entry.name, _message(source, lines, owner, ("template",), text)))
            continue
        used.update(e.name for e in chain[1:])
        merged = {**_merge(chain), "name": entry.name}
        found = []
        queue, invalid = _validate(merged, chain, source, lines, found)
        errors.extend((entry.name, message) for message in found)
        if queue is None or queue.is_template:
            continue
        for problem in checks.problems(queue):
            if any(_overlaps(loc, bad) for loc in (problem.loc, *problem.related) for bad in invalid):
                continue  # the other side of this conflict is itself invalid and already reported
            owner, text = _owner(chain, problem.loc), problem.text
            if owner is not entry:
                text += f" (value from template {owner.name})"
            message = _message(source, lines, entry, problem.loc, text)
            if problem.level == checks.ERROR:
                errors.append((entry.name, message))
            else:
                warnings.append(message)
        if not invalid:
            queues[entry.name] = queue
    for entry in entries:
        if entry.raw.get("is_template") is True and entry.name not in used:
            warnings.append(f"{source}: template {entry.name}: not used by any queue")
    if not queues and not errors:
        warnings.append(f"{source}: no queues defined (only templates or nothing)")
    return queues, errors, warnings


def _validate(merged, chain, source, lines, errors):
    """Validate one merged entry: ``(queue, invalid locs)``.

    When keys are invalid their errors are added to ``errors``, and the entry is validated again without them, so
    that the cross-key rules can still run on the rest (the queue returned then is only for those rules).
    """
    try:
        return Queue.model_validate(merged, context={"checks": False}), []
    except ValidationError as exc:
        invalid = [tuple(err["loc"]) for err in exc.errors()]
        for err, loc in zip(exc.errors(), invalid):
            errors.append(_message(source, lines, _owner(chain, loc), loc, describe(err)))
    pruned = copy.deepcopy(merged)
    for loc in invalid:
        _remove(pruned, loc)
    try:
        return Queue.model_validate(pruned, context={"checks": False}), invalid
    except ValidationError:
        return None, invalid


def _remove(raw, loc):
    """Remove the key at ``loc`` (for a list entry: the whole list) from nested dicts, if it is there."""
    keys = [key for key in loc if not isinstance(key, int)][:len(loc)]
    node = raw
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if keys and isinstance(node, dict):
        node.pop(keys[-1], None)
    elif not keys:
        raw.clear()


def _overlaps(loc, bad):
    size = min(len(loc), len(bad))
    return tuple(loc[:size]) == tuple(bad[:size])


def _chain(entry, by_name):
    """``[entry, its template, that template's template, ...]`` or ``(None, (owner, problem))``."""
    chain = [entry]
    while "template" in chain[-1].raw and chain[-1].raw["template"] is not None:
        current, parent = chain[-1], chain[-1].raw["template"]
        if not isinstance(parent, str):
            return None, (current, f"expected the name of another queue, got {parent!r}")
        if parent not in by_name:
            close = difflib.get_close_matches(parent, list(by_name), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return None, (current, f"template {parent!r} is not defined in this file{hint}")
        names = [e.name for e in chain]
        if parent in names:
            cycle = names[names.index(parent):]
            start = cycle.index(min(cycle))
            cycle = cycle[start:] + cycle[:start]
            owner = by_name[cycle[-1]]
            return None, (owner, "template cycle: " + " -> ".join(cycle + [cycle[0]])
                          + "; a queue cannot inherit from itself")
        chain.append(by_name[parent])
    return chain, None


def _merge(chain):
    """The entry's keys over its templates' keys, sections merged key by key (lists are replaced, not joined)."""
    merged = {}
    for entry in reversed(chain):
        raw = entry.raw if entry is chain[0] else {k: v for k, v in entry.raw.items()
                                                   if k not in ("template", "is_template")}
        merged = _deep_merge(merged, raw)
    return merged


def _deep_merge(base, over):
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _owner(chain, loc):
    """The entry of ``chain`` that wrote the value at ``loc`` (or the nearest enclosing key)."""
    for size in range(len(loc), 0, -1):
        for entry in chain:
            if _has(entry.raw, loc[:size]):
                return entry
    return chain[0]


def _has(raw, path):
    node = raw
    for key in path:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return False
    return True


def _message(source, lines, entry, loc, text):
    """``file:line: queue NAME: key: text``; the key as written in the file (and ours, if it was converted)."""
    written = entry.source_path(loc)
    line = None
    for size in range(len(written), -1, -1):
        line = lines.get(entry.line_prefix + tuple(written[:size]))
        if line:
            break
    where = f"{source}:{line}" if line else source
    kind = "template" if entry.raw.get("is_template") is True else "queue"
    key = key_text(written)
    if written != tuple(loc) and loc:
        key += f" (minipanda key {key_text(loc)})"
    return f"{where}: {kind} {entry.name}: {key}: {text}"
