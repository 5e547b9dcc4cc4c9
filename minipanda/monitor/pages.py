"""Rendering: the package's Jinja2 templates (``minipanda/monitor/templates``), HTML-escaped by default.

Templates get the page's data (what ``?json`` returns) plus ``root`` (the monitor's URL prefix) and the helpers
below; every value they show passes through autoescaping, so a job name holding ``<script>`` is shown as text.
The pages have no scripts at all, and the routes send a Content-Security-Policy that forbids them.
"""
import json
import urllib.parse

import jinja2

from minipanda.monitor import charts

_ENV = None


def environment():
    global _ENV
    if _ENV is None:
        env = jinja2.Environment(loader=jinja2.PackageLoader("minipanda.monitor", "templates"), autoescape=True,
                                 undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.filters["seg"] = lambda value: urllib.parse.quote(str(value), safe="")
        env.filters["pretty"] = lambda value: json.dumps(value, indent=1, sort_keys=True, default=str)
        env.filters["qs"] = query_string
        env.filters["mb"] = lambda value: "" if value is None else f"{value / 1e6:.1f}"
        env.globals["state_class"] = state_class
        env.globals["bars"], env.globals["lines"] = charts.bars, charts.lines
        _ENV = env
    return _ENV


def query_string(filters, **changes):
    """``?a=1&b=2`` of the filters with ``changes`` applied (None removes one)."""
    merged = {k: v for k, v in dict(filters, **changes).items() if v not in (None, "")}
    return "?" + urllib.parse.urlencode(merged) if merged else ""


GOOD, BAD, BUSY = {"finished", "done", "running", "online"}, {"failed", "broken", "aborted", "cancelled",
                                                              "missed", "offline", "closed"}, \
    {"sent", "starting", "transferring", "holding", "merging", "submitted", "ready", "scouting"}


def state_class(state):
    """A CSS class for a state's colour."""
    return "good" if state in GOOD else "bad" if state in BAD else "busy" if state in BUSY else "idle"


def render(template, data, root):
    return environment().get_template(template).render(data=data, root=root)
