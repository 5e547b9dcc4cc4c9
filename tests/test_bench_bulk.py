"""bench/bulk.py's clients: the same request bytes as urllib's form encoding, whatever the text."""
import json
import os
import sys
import urllib.parse

from conftest import examples
from hypothesis import HealthCheck, given, settings, strategies as st

# appended, not first: bench/harvester.py and bench/testbed.py must not hide the packages of those names
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bulk  # noqa: E402


def test_a_bulk_update_form_is_urllibs_own():
    entries = [{"jobId": 4000000 + i, "state": "finished", "pilotID": "pilot-3-17", "transExitCode": 0,
                "pilotErrorCode": 0, "node": "bench-node-3"} for i in range(100)]
    for fields in ({"jobList": json.dumps(entries)},
                   {"computingElement": "BULK_1", "prodSourceLabel": "managed", "mem": "2000", "nJobs": "100"}):
        assert bulk.form(fields) == urllib.parse.urlencode(fields)


@settings(max_examples=examples(500), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.text(), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8).map(json.dumps)), max_size=4))
def test_any_form_is_urllibs_own(fields):
    assert bulk.form(fields) == urllib.parse.urlencode(fields)
