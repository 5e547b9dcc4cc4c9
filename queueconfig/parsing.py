"""Reading a queue file: YAML or JSON text to plain data, with the line of every key and duplicate keys caught.

PyYAML and :mod:`json` both keep the last of two equal keys without a word; a queue defined twice is a classic
slip, so both parsers here report it. JSON is parsed by :mod:`json` (Harvester files are often tab-indented, which
YAML refuses) and its key lines are taken from a YAML parse of the same text with tabs made spaces, which is
exact because valid JSON has tabs only between tokens.
"""
import json
from dataclasses import dataclass, field

import yaml

from queueconfig.errors import ConfigError


@dataclass
class Entry:
    """One queue or template of a file, already in our format.

    Attributes:
        name: the queue name.
        raw: its keys in our format (as written, before templates and defaults).
        keymap: for a converted (Harvester) entry, our key path -> the key path written in the file.
        line_prefix: the path of this entry in the file, to find the line of a key.
    """

    name: str
    raw: dict
    keymap: dict = field(default_factory=dict)
    line_prefix: tuple = ()

    def source_path(self, loc):
        """The path, as written in the file, of our key path ``loc``."""
        for size in range(len(loc), 0, -1):
            if loc[:size] in self.keymap:
                return self.keymap[loc[:size]] + tuple(loc[size:])
        return tuple(loc)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """A safe loader (the C one when PyYAML has it) that records duplicate keys instead of keeping the last."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates = []

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        first = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in first:
                self.duplicates.append((key, key_node.start_mark.line + 1, first[key]))
            else:
                first.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def parse(text, source, syntax=None):
    """Parse queue-file text.

    Args:
        text: the file content (str or bytes, UTF-8).
        source: the file name, for messages.
        syntax: "yaml" or "json"; by default JSON when the file name ends in .json or the text starts with '{'.

    Returns:
        ``(data, lines)``: the parsed data and a dict from key path (a tuple) to its 1-based line number.

    Raises:
        ConfigError: the text is not valid YAML/JSON, is empty, or repeats a key.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"], source) from None
    if syntax is None:
        syntax = "json" if source.endswith(".json") or text.lstrip().startswith("{") else "yaml"
    data, lines, duplicates = _parse_json(text, source) if syntax == "json" else _parse_yaml(text, source)
    if duplicates:
        raise ConfigError([_duplicate(source, *duplicate) for duplicate in duplicates], source)
    if data is None:
        raise ConfigError([f"{source}: the file is empty; expected 'version: 1' and a 'queues' mapping"], source)
    return data, lines


def _duplicate(source, key, line, first):
    where = f"{source}:{line}" if line else source
    earlier = f" (first at line {first})" if first else ""
    return (f"{where}: key {key!r} appears twice in the same mapping{earlier}; only one can be in force, so "
            "remove or rename one")


def _parse_yaml(text, source):
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([f"{where}: not valid YAML: {exc.problem or exc.context}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"], source) from None
    finally:
        loader.dispose()
    lines = {}
    if node is not None:
        _positions(node, (), lines)
    return data, lines, loader.duplicates


def _parse_json(text, source):
    duplicates = []

    def pairs(items):
        seen = {}
        for key, value in items:
            if key in seen:
                duplicates.append((key, None, None))
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"], source) from None
    lines = {}
    try:
        loader = _Loader(text.replace("\t", " "))
        node = loader.get_single_node()
        if node is not None:
            loader.construct_document(node)
            duplicates = loader.duplicates or duplicates
            _positions(node, (), lines)
    except yaml.YAMLError:
        pass  # line numbers are a convenience; the JSON parse above is the authority
    return data, lines, duplicates


def _positions(node, path, lines):
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            lines.setdefault(path + (key,), key_node.start_mark.line + 1)
            _positions(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault(path + (index,), item.start_mark.line + 1)
            _positions(item, path + (index,), lines)
