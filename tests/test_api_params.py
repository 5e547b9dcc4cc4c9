"""Every route's parameters through the declared validation layer (minipanda/api/params.py), and a property-based
walk over every route: generated parameters of every kind (wrong types, huge numbers, lone surrogates, deep
nesting, form and JSON bodies) never get a 5xx. Requests go to the WSGI app in-process, on a real SQLite file."""
import collections
import io
import json
import sys
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minipanda.api.app import ServerContext, make_app
from minipanda.core import models, schema

N_REQUESTS = 2100  # at least 2,000 generated requests per run


def call(app, method, path, body=b"", content_type="application/json", query="", headers=None):
    """(HTTP status, reply body) of one request to the WSGI app."""
    # As a WSGI server hands it over: the path unquoted, its bytes as latin-1.
    environ = {"REQUEST_METHOD": method, "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
               "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "25080", "HTTP_HOST": "127.0.0.1:25080", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
               "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type, "REMOTE_ADDR": "127.0.0.1"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    seen = []
    reply = b"".join(app(environ, lambda status, headers, exc_info=None: seen.append(int(status.split()[0]))))
    return seen[0], reply


@pytest.fixture
def app(tmp_path):
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    yield make_app(ServerContext(home=str(tmp_path), secret=b"s" * 32, auth_mode="none"))
    database.close()


def test_a_lone_surrogate_in_a_pilot_report_is_stored_with_a_replacement_character(app):
    status, reply = call(app, "POST", "/api/v1/job/submit", json.dumps(
        {"jobs": [{"computingSite": "Q", "transformation": "t", "prodSourceLabel": "managed"}]}).encode())
    panda_id = json.loads(reply)["data"][0][0]
    call(app, "POST", "/server/panda/getJob", b"siteName=Q", "application/x-www-form-urlencoded")
    status, reply = call(app, "POST", "/server/panda/updateJob", json.dumps(
        {"jobId": panda_id, "state": "failed", "pilotErrorDiag": "bad \ud800 text"}).encode())
    assert status == 200, reply
    job = models.Job.get_by_id(panda_id)
    assert job.status == "failed" and job.pilot_error_diag == "bad \ufffd text"


@pytest.mark.parametrize("path, body, field", [
    ("/server/panda/getJob", {"siteName": "Q", "mem": 1e30}, "mem"),
    ("/api/v1/job/get_status", {"job_ids": [9223372036854775808]}, "job_ids"),
    ("/api/v1/task/get_status", {"task_id": 2 ** 64}, "task_id"),
    ("/server/panda/updateJob", {"jobId": "9" * 30, "state": "running"}, "jobId"),
    ("/api/v1/dataset/list", {"pattern": 7}, None),
    ("/api/v1/dataset/show", {"name": [1, 2, 3]}, "name"),
    ("/api/v1/retry_rule/add", {"action": {}, "diag": "x"}, "action"),
    ("/api/v1/retry_rule/add", {"action": "no_retry", "diag": 5}, None),
])
def test_the_inputs_that_gave_500_get_a_4xx_naming_the_field(app, path, body, field):
    before = models.RetryRule.select().count()
    status, reply = call(app, "POST", path, json.dumps(body).encode())
    assert status < 500, reply
    if field is not None:
        assert 400 <= status < 500 and field.encode() in reply, reply
    if status >= 400:
        assert models.RetryRule.select().count() == before


def test_deeply_nested_json_is_a_400_on_every_post_route_even_without_a_token(tmp_path):
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    app = make_app(ServerContext(home=str(tmp_path), secret=b"s" * 32))
    for path in ("/api/v1/job/submit", "/server/panda/updateJob", "/api/v1/system/is_alive"):
        status, reply = call(app, "POST", path, b"[" * 50000)
        assert 400 <= status < 500 and b"body" in reply, (path, status, reply[:200])
    database.close()


def test_the_openapi_description_lists_every_route_with_its_parameters(app):
    status, reply = call(app, "GET", "/api/v1/openapi.json")
    description = json.loads(reply)
    assert status == 200 and description["openapi"].startswith("3.")
    offer = description["paths"]["/server/panda/getJob"]["post"]["requestBody"]["content"]["application/json"]
    assert "mem" in offer["schema"]["properties"]
    assert "/api/v1/dataset/list" in description["paths"] and "/api/v1/harvester/update_workers" in \
        description["paths"]


SPECIALS = ["\ud800", "\udfff x", "NULL", "", "a,..", "%2e%2e", "a\x00b", "1e30", "9" * 30, "-1", "2500.004",
            "nan", "inf", "[1,2", "{}", "[]", "true", "TEST_PQ", "managed", "running", "finished", "user"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(SPECIALS),
                    st.text(alphabet=st.characters(exclude_categories=()), max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def routes_of(app):
    """[(method, path rule, declared parameter names)] of every route."""
    out = []
    for route in app.routes:
        model = route.config.get("params_model")
        names = sorted(model.model_fields) if model is not None else []
        out.append((route.method, route.rule, names))
    return out


def fill_path(rule, segments):
    parts = iter(segments)
    out = []
    for piece in rule.split("/"):
        if "<" in piece:
            prefix, _, rest = piece.partition("<")
            suffix = rest.partition(">")[2]
            piece = prefix + urllib.parse.quote(next(parts), safe="", errors="surrogatepass") + suffix
        out.append(piece)
    return "/".join(out)


def test_no_generated_request_to_any_route_gets_a_5xx(app):
    counts = collections.Counter()
    route_list = routes_of(app)

    @settings(max_examples=N_REQUESTS, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(route_list), data=st.data())
    def one_request(route, data):
        method, rule, names = route
        keys = st.one_of(st.sampled_from(names), st.text(max_size=8)) if names else st.text(max_size=8)
        sent = data.draw(st.dictionaries(keys, values, max_size=6), label="params")
        segments = data.draw(st.lists(st.sampled_from(SPECIALS + ["ok.txt", "user.alice", "..", ".", "Q"]),
                                      min_size=3, max_size=3), label="path")
        path = fill_path(rule, segments)
        kind = data.draw(st.sampled_from(["json", "json", "form", "query", "deep", "raw"]), label="kind")
        query, ctype = "", "application/json"
        if kind == "json":
            body = json.dumps(sent, allow_nan=True).encode()
        elif kind == "form":
            body = urllib.parse.urlencode({k: json.dumps(v) if isinstance(v, (list, dict)) else v
                                           for k, v in sent.items()}, encoding="utf-8", errors="surrogatepass"
                                          ).encode()
            ctype = "application/x-www-form-urlencoded"
        elif kind == "query":
            body = b""
            query = urllib.parse.urlencode({k: str(v) for k, v in sent.items()}, errors="surrogatepass")
        elif kind == "deep":
            body = b"[" * data.draw(st.integers(1000, 60000), label="depth")
        else:
            body = data.draw(st.binary(max_size=200), label="body")
            ctype = data.draw(st.sampled_from(["application/json", "text/plain", ""]), label="ctype")
        if method == "PUT":
            headers = {"X-Checksum": data.draw(st.sampled_from(["", "ad:00000001", "zz"]), label="checksum")}
        else:
            headers = {}
        status, reply = call(app, method if kind != "query" or method == "PUT" else "GET" if "GET" in method
                             else method, path, body, ctype, query, headers)
        counts[f"{status // 100}xx"] += 1
        assert status < 500, (method, path, kind, sent, reply[:300])

    one_request()
    total = sum(counts.values())
    print(f"\nproperty-based route test: {total} generated requests over {len(route_list)} routes: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert total >= 2000 and counts["5xx"] == 0
