"""Request bodies in and replies out: form or (gzipped) JSON in; URL-encoded or JSON legacy replies, v1 envelopes.

Nothing here knows about jobs; it only turns bytes into a params dict and a result into bytes, refusing
malformed or oversized input with a message that names what is wrong.
"""
import json
import urllib.parse
import zlib

from minipanda.errors import BodyTooLarge, RequestError


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
    if "json" in (content_type or "") or text.lstrip()[:1] in ("{", "["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RequestError(f"body: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RequestError("body: expected a JSON object of named parameters")
        return data
    params = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        if key in params:
            params[key] = (params[key] if isinstance(params[key], list) else [params[key]]) + [value]
        else:
            params[key] = value
    return params


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
        return "application/json", json.dumps(data, default=str)
    flat = {k: (v if isinstance(v, (str, int, float)) or v is None else json.dumps(v, default=str))
            for k, v in data.items()}
    return "text/plain; charset=utf-8", urllib.parse.urlencode({k: "NULL" if v is None else v for k, v in flat.items()})


def envelope(data=None, message="", success=True):
    """The v1 reply body."""
    return json.dumps({"success": success, "message": message, "data": data}, default=str)
