"""The fields of harvester's calls, checked one by one before anything is written: a refusal is a RequestError
naming the field (and why), never a database error for the whole call. Numbers stay within their columns (PostgreSQL
refuses larger ones with an error), texts within their length and without NUL (PostgreSQL's texts cannot hold one).
"""
import datetime
import json
import math
import re

from minipanda.errors import RequestError

MAX_IDS = 10000
BIGINT_MAX, INT_MAX = 2 ** 63 - 1, 2 ** 31 - 1  # the column limits: PostgreSQL refuses larger numbers with an error
HARVESTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


def harvester_id_of(value, name="harvester_id"):
    if not isinstance(value, str) or not HARVESTER_ID.match(value):
        raise RequestError(f"{name}: expected 1-100 letters, digits, '.', '_' or '-' starting with a letter or "
                           f"digit, got {str(value)[:40]!r}")
    return value


def integer(value, name, minimum=0, maximum=BIGINT_MAX, required=True):
    if value is None or value == "":
        if required:
            raise RequestError(f"{name}: required")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(f"{name}: expected an integer, got {str(value)[:40]!r}")
    try:
        number = int(value)
    except ValueError:
        raise RequestError(f"{name}: expected an integer, got {value[:40]!r}") from None
    if number < minimum:
        raise RequestError(f"{name}: must be at least {minimum}, got {number}")
    if number > maximum:
        raise RequestError(f"{name}: must be at most {maximum}, got {number}")
    return number


def text(value, name, limit, required=False):
    if value is None or value == "":
        if required:
            raise RequestError(f"{name}: required")
        return None
    if isinstance(value, (dict, list, bool)):
        raise RequestError(f"{name}: expected a string, got {type(value).__name__}")
    value = str(value)[:limit]
    if "\x00" in value:  # PostgreSQL's texts cannot hold one: a database error (500) for the whole call
        raise RequestError(f"{name}: a NUL character cannot be stored")
    return value


def utc_time(value, name):
    """Naive UTC from an ISO 8601 string (``Z``, an offset, or none = UTC), or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(f"{name}: expected an ISO 8601 UTC time, got {str(value)[:40]!r}")
    try:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(f"{name}: expected an ISO 8601 UTC time, got {value[:40]!r}") from None
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return when


def json_value(value, name):
    """A list or object sent as such or as a JSON string (PanDA's harvester sends both)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            raise RequestError(f"{name}: not valid JSON") from None
    return value


def id_list(value, name, parse=None):
    value = json_value(value, name)
    if not isinstance(value, list):
        raise RequestError(f"{name}: expected a list")
    if len(value) > MAX_IDS:
        raise RequestError(f"{name}: at most {MAX_IDS} entries per call, got {len(value)}")
    return [(parse or (lambda v, n: integer(v, n)))(v, f"{name}[{i}]") for i, v in enumerate(value)]


def figure(value, name):
    """A finite, non-negative number (a count or seconds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RequestError(f"{name}: expected a non-negative number, got {str(value)[:40]!r}")
    return value


def iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None
