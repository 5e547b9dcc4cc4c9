"""Request bodies in and replies out: form or (gzipped) JSON in; URL-encoded or JSON legacy replies, v1 envelopes.

Nothing here knows about jobs; it only turns bytes into a params dict and a result into bytes, refusing
malformed or oversized input with a message that names what is wrong.
"""
import json
import urllib.parse
import zlib

import orjson
from minipanda.api import params as route_params
from minipanda.errors import BodyTooLarge, RequestError

SIMPLE_TYPES = ("text/plain", "multipart/form-data")


def loggable(text):
    """``text`` from a request (its path, a refusal naming what it sent) fit for one line of a log: control
    characters written as escapes. A %0A in a URL is a newline once unquoted, and the rest of the path became a
    log line of the client's choosing; so did a job spec's key, named in its refusal."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")

def read_body(request, limit):
    """The raw request body, gunzipped when needed, never more than ``limit`` bytes."""
    declared = request.content_length
    if declared and declared > limit:
        raise BodyTooLarge(limit)
    raw = request.body.read(limit + 1)
    if len(raw) > limit:
        raise BodyTooLarge(limit)
    encoding = request.headers.get("Content-Encoding", "").lower()
    if encoding == "gzip" or raw[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise RequestError(f"body: gzip data is corrupt ({exc})") from None
        if len(raw) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(limit)
    return raw


def parse_body(raw, content_type):
    """A dict of parameters from a JSON object or a form-encoded body."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("body: not valid UTF-8") from None
    content_type = (content_type or "").lower()
    looks_json = text.lstrip()[:1] in ("{", "[")
    if looks_json and content_type.startswith(SIMPLE_TYPES):
        # A browser sends these types cross-site without asking first: JSON must say it is JSON.
        raise RequestError(f"Content-Type: a JSON body must be sent as application/json, not {content_type!r}",
                           http=415)
    if "json" in content_type or looks_json:
        try:
            data = json.loads(text)
        except RecursionError:
            raise RequestError("body: JSON nested deeper than the server reads") from None
        except ValueError as exc:
            raise RequestError(f"body: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RequestError("body: expected a JSON object of named parameters")
        try:
            return route_params.cleaned(data, text)
        except ValueError as exc:
            raise RequestError(f"body: {exc}") from None
    params = {}
    for key, value in form_pairs(text):
        if key in params:
            params[key] = (params[key] if isinstance(params[key], list) else [params[key]]) + [value]
        else:
            params[key] = value
    return params


def form_pairs(text):
    """``urllib.parse.parse_qsl(text, keep_blank_values=True)``, with the percent-decoding done in C: Python's own
    unquote loops in Python over every escape, and a 100-job updateJobsInBulk form carries ~3,200 of them (4 ms)."""
    pairs = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def unquote_plus(text):
    """``urllib.parse.unquote_plus(text)``: every %XX becomes \\xXX for the C ``unicode_escape`` decoder (the text's
    own backslashes doubled first); text that is not valid percent-encoding goes to urllib's own decoder."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    try:
        escaped = text.encode("utf-8").replace(b"\\", b"\\\\").replace(b"%", b"\\x")
        return escaped.decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
    except UnicodeError:  # a '%' without two hex digits after it: urllib keeps it as it is
        return urllib.parse.unquote(text)


_AS_STR = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(data):
    """JSON text of a reply: orjson (~10x faster than json for a bulk getJob's 100 job definitions); times as
    ``str(datetime)`` and anything else it does not know as ``str()``, as json.dumps(default=str) gave them.
    json.dumps still writes what orjson refuses (dict keys that are not strings, integers beyond 64 bits)."""
    try:
        return orjson.dumps(data, default=str, option=_AS_STR).decode()
    except TypeError:
        return json.dumps(data, default=str)


def read_params(request, limit):
    """Query-string parameters merged with body parameters (the body wins). GET bodies are ignored."""
    params = {}
    for key in request.query.keys():
        values = request.query.getall(key)
        params[key] = values[0] if len(values) == 1 else values
    if request.method in ("POST", "PUT"):
        params.update(parse_body(read_body(request, limit), request.content_type))
    return params


def wants_json(request):
    return "application/json" in request.headers.get("Accept", "")


def legacy_body(data, as_json):
    """(content type, body) of a legacy reply: JSON, or PanDA's URL-encoded form with nested values as JSON."""
    if as_json:
        return "application/json", dumps(data)
    flat = {k: (v if isinstance(v, (str, int, float)) or v is None else dumps(v))
            for k, v in data.items()}
    return "text/plain; charset=utf-8", urllib.parse.urlencode({k: "NULL" if v is None else v for k, v in flat.items()})


def envelope(data=None, message="", success=True):
    """The v1 reply body."""
    return dumps({"success": success, "message": message, "data": data})
