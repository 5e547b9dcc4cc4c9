"""minipanda/workers/fields.py: each field of a harvester call checked before anything is written, a refusal naming
the field: integers within their column (a bool is no integer), texts cut to their length and without NUL (which
PostgreSQL cannot store), ISO 8601 times to naive UTC, id lists capped, figures finite and non-negative."""
import datetime

import pytest

from minipanda.errors import RequestError
from minipanda.workers import fields


@pytest.mark.parametrize("call, field", [
    (lambda: fields.integer(True, "n"), "n: expected an integer"),
    (lambda: fields.integer("x", "n"), "n: expected an integer"),
    (lambda: fields.integer(-1, "n"), "n: must be at least 0"),
    (lambda: fields.integer(2 ** 63, "n"), "n: must be at most"),
    (lambda: fields.integer(None, "n"), "n: required"),
    (lambda: fields.text("a\x00b", "diag", 10), "diag: a NUL character"),
    (lambda: fields.text({"a": 1}, "diag", 10), "diag: expected a string"),
    (lambda: fields.utc_time("yesterday", "when"), "when: expected an ISO 8601 UTC time"),
    (lambda: fields.id_list(list(range(fields.MAX_IDS + 1)), "ids"), "ids: at most 10000 entries"),
    (lambda: fields.id_list("[1, 2", "ids"), "ids: not valid JSON"),
    (lambda: fields.id_list([1, "x"], "ids"), r"ids\[1\]: expected an integer"),
    (lambda: fields.figure(float("nan"), "f"), "f: expected a non-negative number"),
    (lambda: fields.harvester_id_of("-bad", "harvester_id"), "harvester_id: expected 1-100 letters"),
])
def test_a_bad_field_is_refused_by_name(call, field):
    with pytest.raises(RequestError, match=field):
        call()


def test_good_fields_come_back_as_stored():
    assert fields.integer("42", "n") == 42 and fields.integer("", "n", required=False) is None
    assert fields.text("abcdef", "t", 3) == "abc"
    assert fields.utc_time("2026-01-02T03:04:05+02:00", "t") == datetime.datetime(2026, 1, 2, 1, 4, 5)
    assert fields.utc_time("2026-01-02T03:04:05Z", "t") == datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert fields.id_list("[1, 2]", "ids") == [1, 2] and fields.json_value('{"a": 1}', "o") == {"a": 1}
    assert fields.iso(datetime.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z" and fields.iso(None) is None
