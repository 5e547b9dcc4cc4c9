"""The server's body decoding and reply encoding (minipanda/api/wire.py) against the standard library's: the fast
form decoder reads every text as urllib.parse.parse_qsl does, and the orjson replies carry what json.dumps did."""
import dataclasses
import datetime
import enum
import json
import urllib.parse

from hypothesis import given, settings, strategies as st

from minipanda.api import params as route_params, wire

from conftest import examples

# Form bodies as clients write them and as they should not: escapes valid and broken, '+', '=', '&', backslashes
# (the decoder's own escape character), non-ASCII text, lone '%' at the end.
PIECES = st.sampled_from(["%", "%2", "%2g", "%25", "%5C", "%5c", "\\", "\\x41", "\\u0041", "+", "=", "&", "%C3%A9",
                          "%C3", "%E2%82", "%FF", "é", "€", "a", "jobList", "%7B%22jobId%22", "%00", "%0A", "\\N"])
BODIES = st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=30).map("".join)


@settings(max_examples=examples(2000), deadline=None)
@given(BODIES)
def test_form_bodies_decode_as_parse_qsl_does(text):
    assert wire.form_pairs(text) == urllib.parse.parse_qsl(text, keep_blank_values=True)


def test_an_updatejobsinbulk_form_round_trips():
    entries = [{"jobId": 4000 + i, "state": "finished", "pilotErrorDiag": "50% done \\ \"quoted\" é €", "xml": "{}"}
               for i in range(100)]
    body = urllib.parse.urlencode({"jobList": json.dumps(entries), "extra": "a+b c"})
    assert dict(wire.form_pairs(body)) == {"jobList": json.dumps(entries), "extra": "a+b c"}


class Colour(str, enum.Enum):  # as JobStatus
    RED = "red"


@dataclasses.dataclass
class Offer:
    queue: str


@settings(max_examples=examples(500), deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20))
def test_replies_mean_what_json_dumps_wrote(value):
    assert json.loads(wire.dumps(value)) == json.loads(json.dumps(value, default=str))


def test_times_and_unknown_types_are_written_as_their_str():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000)
    for data in ({"time": when, "day": when.date(), "state": Colour.RED, "offer": Offer("Q")},
                 {7: "an integer key"}, {"big": 2 ** 80}, {"surrogate": "\ud800"}):
        assert json.loads(wire.dumps(data)) == json.loads(json.dumps(data, default=str)), data
    assert json.loads(wire.dumps({"time": when}))["time"] == "2026-01-02 03:04:05.678000"


def nested(depth, leaf):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(60, 70), st.sampled_from([0, "text", None, [], {}, ["a", "b"]]))
def test_the_depth_check_refuses_what_clean_json_refuses(depth, leaf):
    value = {"wrapped": nested(depth, leaf)}
    outcomes = []
    for check in (route_params.check_depth, route_params.clean_json):
        try:
            check(value)
            outcomes.append("kept")
        except ValueError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1], (depth, leaf, outcomes)


def test_a_json_body_with_a_lone_surrogate_escape_is_cleaned_and_one_without_is_kept():
    cleaned = wire.parse_body(b'{"a": "x\\ud800y", "b": ["\\ud83d\\ude00"]}', "application/json")
    assert cleaned == {"a": "x\ufffdy", "b": ["\U0001F600"]}
    assert wire.parse_body(b'{"a": "\\\\ud800"}', "application/json") == {"a": "\\ud800"}
