"""Placeholders in ``pilot.command`` and ``pilot.environment``: ``{access_point}``, ``{queue}`` and a few more.

Only the names in :data:`NAMES` are replaced, by plain text substitution: no ``str.format`` (whose ``{0.attr}`` and
``{x[key]}`` reach into objects), no nesting, no format specs. ``{{`` and ``}}`` stand for literal braces; any other
brace is an error, so a typo is caught when the file is loaded and not when a pilot is started.
"""
import re

NAMES = ("access_point", "queue", "queuedata", "storagedata", "walltime", "server", "token_file")
"""access_point: the worker's directory; queue: the queue name; queuedata: the queuedata file in the access point;
storagedata: the storage endpoints file beside it (pilot3's --storagedata-url); walltime: the worker's walltime in
s; server: the server URL; token_file: the pilot token's file."""

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _pieces(template):
    """Split ``template`` into literal text and placeholder names (``(is_name, text)``), or raise ValueError."""
    pieces, pos = [], 0
    for match in _TOKEN.finditer(template):
        pieces.append((False, template[pos:match.start()]))
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            pieces.append((False, token[0]))
        elif name is None:
            raise ValueError(f"has a lone {token!r} at position {match.start()} (write {token * 2} for a literal "
                             f"brace); allowed placeholders: {allowed()}")
        elif name not in NAMES:
            raise ValueError(f"has an unknown placeholder {token}; allowed placeholders: {allowed()} ({{{{ and }}}} "
                             "are literal braces)")
        else:
            pieces.append((True, name))
        pos = match.end()
    pieces.append((False, template[pos:]))
    return pieces


def allowed():
    """The allowed placeholders as text: ``{access_point}, {queue}, ...``."""
    return ", ".join(f"{{{name}}}" for name in NAMES)


def check(template):
    """The placeholder names ``template`` uses (a set).

    Raises:
        ValueError: an unknown placeholder or a brace that opens or closes nothing, saying which.
    """
    return {text for is_name, text in _pieces(template) if is_name}


def expand(template, values):
    """``template`` with each allowed placeholder replaced by ``str(values[name])``.

    Args:
        template: text with ``{name}`` placeholders (names from :data:`NAMES`).
        values: name -> value; other keys are ignored.

    Raises:
        ValueError: the template is malformed (see :func:`check`) or uses a name missing from ``values``.
    """
    out = []
    for is_name, text in _pieces(template):
        if is_name and text not in values:
            raise ValueError(f"{template!r}: no value for placeholder {{{text}}}")
        out.append(str(values[text]) if is_name else text)
    return "".join(out)


def expand_all(templates, values):
    """:func:`expand` over an argv list (a tuple back) or the values of a mapping (a dict back)."""
    if isinstance(templates, dict) or hasattr(templates, "items"):
        return {key: expand(value, values) for key, value in templates.items()}
    return tuple(expand(template, values) for template in templates)
