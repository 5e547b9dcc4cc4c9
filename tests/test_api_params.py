"""Every route's parameters through the declared validation layer (minipanda/api/params.py), and a property-based
walk over every route: generated parameters of every kind (wrong types, huge numbers, lone surrogates, deep
nesting, form and JSON bodies, legacy names on v1 routes, JSON text nested inside fields, bodies shorter than
their Content-Length) never get a 5xx. Requests go to the WSGI app in-process, on a real SQLite file; the stalled
bodies go to a live server."""
import collections
import io
import json
import sys
import urllib.parse

import pydantic
import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from minipanda.api import params as route_params
from minipanda.api.app import ServerContext, make_app
from minipanda.api.handlers import V1_ALIASES
from minipanda.core import auth, models, schema

from conftest import examples

N_REQUESTS = examples(2100)  # at least 2,000 generated requests per run under CI (a fifth on a developer's run)


def call(app, method, path, body=b"", content_type="application/json", query="", headers=None, stream=None):
    """(HTTP status, reply body) of one request to the WSGI app; ``stream``: the body's file object (else one of
    ``body``)."""
    # As a WSGI server hands it over: the path unquoted, its bytes as latin-1.
    environ = {"REQUEST_METHOD": method, "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
               "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "25080", "HTTP_HOST": "127.0.0.1:25080", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body) if stream is None else stream, "wsgi.errors": sys.stderr,
               "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type, "REMOTE_ADDR": "127.0.0.1"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    if "HTTP_CONTENT_LENGTH" in environ:  # a length other than the body's: a client that stopped sending
        environ["CONTENT_LENGTH"] = environ.pop("HTTP_CONTENT_LENGTH")
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


def test_deeply_nested_json_is_a_400_on_every_post_route_and_unread_without_a_token(tmp_path):
    """A body nested past any sane depth is a 400 naming the body, never a 500; a route that needs a token refuses
    a caller without one first (401), its body not even parsed."""
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    secret = b"s" * 32
    app = make_app(ServerContext(home=str(tmp_path), secret=secret))
    admin = {"Authorization": "Bearer " + auth.create_token(secret, "admin", "admin")[0]}
    for path, without_token in (("/api/v1/job/submit", 401), ("/server/panda/updateJob", 401),
                                ("/api/v1/system/is_alive", 400)):
        status, reply = call(app, "POST", path, b"[" * 50000, headers=admin)
        assert status == 400 and b"body" in reply, (path, status, reply[:200])
        status, reply = call(app, "POST", path, b"[" * 50000)
        assert status == without_token, (path, status, reply[:200])
        assert (b"body" in reply) == (without_token == 400), (path, status, reply[:200])
    database.close()


@pytest.mark.parametrize("name", ["nJobs", "coreCount", "mem", "diskSpace", "remainingTime"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30, [1], {"a": 1}])
def test_legacy_names_on_the_v1_acquire_route_are_checked(app, name, value):
    status, reply = call(app, "POST", "/api/v1/pilot/acquire_jobs", json.dumps(
        {"computing_element": "Q", name: value}, allow_nan=True).encode())
    assert status == 400 and name.encode() in reply, reply


@pytest.mark.parametrize("body, field", [
    ({"computing_element": "Q", "prodSourceLabel": ["managed"]}, "prodSourceLabel"),
    ({"computing_element": "Q", "siteName": {"a": 1}}, "siteName"),
    ({"job_id": 1, "state": ["running"]}, "state"),
    ({"job_id": 1, "job_status": "running", "attemptNr": [1]}, "attemptNr"),
    ({"jobId": 1, "job_status": "running", "pilotErrorCode": "nan"}, "pilotErrorCode"),
])
def test_every_name_a_v1_pilot_route_accepts_is_declared(app, body, field):
    path = "/api/v1/pilot/acquire_jobs" if "computing_element" in body else "/api/v1/pilot/update_job"
    status, reply = call(app, "POST", path, json.dumps(body).encode())
    assert status == 400 and field.encode() in reply, reply


JSON_REPLY = {"Accept": "application/json"}  # legacy replies are JSON only when asked


def dispatched(app, queue="Q", **spec):
    status, reply = call(app, "POST", "/api/v1/job/submit", json.dumps({"jobs": [dict(
        {"computingSite": queue, "transformation": "t", "prodSourceLabel": "managed",
         "Files": [{"type": "output", "lfn": "out.dat"}]}, **spec)]}).encode())
    panda_id = json.loads(reply)["data"][0][0]
    call(app, "POST", "/server/panda/getJob", f"siteName={queue}".encode(), "application/x-www-form-urlencoded")
    return panda_id


def test_a_final_update_whose_xml_holds_a_lone_surrogate_is_stored(app):
    panda_id = dispatched(app)
    xml = json.dumps({"out.dat": {"guid": "g-\ud800", "fsize": 5, "adler32": "0a0b0c0d", "surl": "x"}})
    assert "\\ud800" in xml  # the escape, as a pilot's JSON encoder writes it
    for encoding in ("json", "form"):  # inside a JSON body, and inside a form field
        body = json.dumps({"jobId": panda_id, "state": "finished", "xml": xml}).encode() if encoding == "json" \
            else urllib.parse.urlencode({"jobId": panda_id, "state": "finished", "xml": xml}).encode()
        status, reply = call(app, "POST", "/server/panda/updateJob", body, "application/json" if encoding == "json"
                             else "application/x-www-form-urlencoded", headers=JSON_REPLY)
        assert status == 200 and json.loads(reply)["StatusCode"] == 0, reply
    assert models.Job.get_by_id(panda_id).status == "finished"
    (out,) = models.JobFile.select().where(models.JobFile.job == panda_id, models.JobFile.lfn == "out.dat")
    assert out.guid == "g-\ufffd" and out.status == "finished"


DEEP = "[" * 100000 + "]" * 100000
DEEPISH = "[" * 70 + "]" * 70  # parses, but deeper than the server reads


@pytest.mark.parametrize("text", [DEEP, DEEPISH, '{"a": ' * 70 + "1" + "}" * 70])
@pytest.mark.parametrize("path, field, body", [
    ("/server/panda/updateJob", "xml", {"jobId": 1, "state": "running"}),
    ("/api/v1/pilot/update_job", "xml", {"job_id": 1, "job_status": "running"}),
    ("/server/panda/updateJobsInBulk", "jobList", {}),
    ("/api/v1/pilot/update_jobs_bulk", "job_list", {}),
    ("/api/v1/job/submit", "jobs", {}),
    ("/api/v1/harvester/acknowledge_commands", "command_ids", {"harvester_id": "h1"}),
    ("/api/v1/harvester/update_workers", "workers", {"harvester_id": "h1"}),
    ("/api/v1/task/submit", "task_parameters", {}),
])
def test_nested_json_inside_a_field_has_the_bodys_depth_limit(app, path, field, body, text):
    for encoding in ("json", "form"):
        sent = dict(body, **{field: text})
        raw = json.dumps(sent).encode() if encoding == "json" else urllib.parse.urlencode(sent).encode()
        status, reply = call(app, "POST", path, raw, "application/json" if encoding == "json"
                             else "application/x-www-form-urlencoded", headers=JSON_REPLY)
        assert 400 <= status < 500 and field.encode() in reply and b"nested deeper" in reply, (encoding, reply[:300])


def test_a_bulk_entrys_nested_xml_and_surrogates_are_handled_like_a_single_updates(app):
    panda_id = dispatched(app)
    xml = json.dumps({"out.dat": {"guid": "\udfff"}})
    status, reply = call(app, "POST", "/server/panda/updateJobsInBulk", json.dumps({"jobList": [
        {"jobId": panda_id, "state": "running", "xml": DEEPISH}, {"jobId": panda_id, "state": ["running"]},
        {"jobId": panda_id, "state": "finished", "xml": xml}]}).encode(), headers=JSON_REPLY)
    results = json.loads(reply)["results"]
    assert status == 200 and [r["StatusCode"] for r in results] == [50, 50, 0], results
    assert "jobList[0]: xml: JSON nested deeper" in results[0]["ErrorDiag"]
    assert "jobList[1]: state" in results[1]["ErrorDiag"]
    assert models.Job.get_by_id(panda_id).status == "finished"


def test_a_job_with_100000_input_files_is_stored(app):
    files = [{"type": "input", "lfn": f"in.{n}.root", "scope": "mc"} for n in range(100000)]
    status, reply = call(app, "POST", "/api/v1/job/submit", json.dumps({"jobs": [{
        "computingSite": "Q", "transformation": "t", "prodSourceLabel": "managed", "Files": files}]}).encode())
    assert status == 200, reply[:300]
    panda_id = json.loads(reply)["data"][0][0]
    assert models.JobFile.select().where(models.JobFile.job == panda_id).count() == 100000


def test_the_openapi_paths_are_openapi_templates(app):
    """Not bottle's rule syntax (``<panda_id:int>``, ``{name:path}``): every template names its parameters."""
    import re

    description = json.loads(call(app, "GET", "/api/v1/openapi.json")[1])
    templated = [path for path in description["paths"] if "{" in path or "<" in path]
    assert "/monitor/jobs/{panda_id}/log/{name}" in templated and "/files/{scope}/{lfn}" in templated
    for path in templated:
        names = re.findall(r"\{([^}]*)\}", path)
        assert "<" not in path and all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in names), path
        for method, operation in description["paths"][path].items():
            declared = [p["name"] for p in operation["parameters"] if p["in"] == "path"]
            assert declared == names, (path, method)
    job = description["paths"]["/monitor/jobs/{panda_id}"]["get"]["parameters"][0]
    assert job["schema"]["type"] == "integer"


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
def fresh_job(app):
    """A dispatched job's PandaID, for updates that must reach the job itself."""
    status, reply = call(app, "POST", "/api/v1/job/submit", json.dumps(
        {"jobs": [{"computingSite": "Q", "transformation": "t", "prodSourceLabel": "managed"}]}).encode())
    call(app, "POST", "/server/panda/getJob", b"siteName=Q", "application/x-www-form-urlencoded")
    return json.loads(reply)["data"][0][0]


# Valid parameters of the routes whose deeper checks a random request rarely reaches; the drawn ones are merged in
# (into the list entry, for the routes that take a list).
VALID = {
    "/server/panda/getJob": lambda app, sent: {"siteName": "Q", **sent},
    "/api/v1/pilot/acquire_jobs": lambda app, sent: {"computing_element": "Q", **sent},
    "/server/panda/updateJob": lambda app, sent: {"jobId": fresh_job(app), "state": "running", **sent},
    "/api/v1/pilot/update_job": lambda app, sent: {"job_id": fresh_job(app), "job_status": "running", **sent},
    "/server/panda/updateJobsInBulk": lambda app, sent: {"jobList": [
        {"jobId": fresh_job(app), "state": "running", **sent}]},
    "/api/v1/pilot/update_jobs_bulk": lambda app, sent: {"job_list": [
        {"job_id": fresh_job(app), "job_status": "running", **sent}]},
    "/api/v1/job/submit": lambda app, sent: {"jobs": [{"computingSite": "Q", "transformation": "t", **sent}]},
    "/api/v1/harvester/update_workers": lambda app, sent: {"harvester_id": "h1", "workers": [
        {"workerID": 1, "computingSite": "Q", "status": "running", **sent}]},
    "/api/v1/harvester/acknowledge_commands": lambda app, sent: {"harvester_id": "h1", **sent},
}
# Names some route reads though another declares them: the legacy names v1 routes accept, the nested JSON fields.
EXTRA_NAMES = sorted(set(V1_ALIASES) | set(V1_ALIASES.values()) | {"xml", "jobList", "job_list", "jobs",
                                                                   "command_ids", "workers", "state"})
NESTED = ["[" * 70 + "]" * 70, "[" * 100000, '{"a": ' * 70 + "1" + "}" * 70, '{"x": "\\ud800"}',
          '[{"jobId": 1, "state": "running", "xml": "[[[[[["}]', '{"f": {"guid": "\\udfff", "fsize": "nan"}}',
          '[{"jobId": 1, "state": ["running"], "nJobs": 1e30}]', '{"jobs": [{"Files": [[[[]]]]}]}']
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
        keys = st.one_of(st.sampled_from(sorted(set(names) | set(EXTRA_NAMES))), st.text(max_size=8))
        sent = data.draw(st.dictionaries(keys, values, max_size=6), label="params")
        if rule in VALID and data.draw(st.booleans(), label="valid base"):  # reach past the route's first checks
            sent = VALID[rule](app, sent)
        segments = data.draw(st.lists(st.sampled_from(SPECIALS + ["ok.txt", "user.alice", "..", ".", "Q"]),
                                      min_size=3, max_size=3), label="path")
        path = fill_path(rule, segments)
        kind = data.draw(st.sampled_from(["json", "json", "form", "query", "deep", "raw", "nested", "short"]),
                         label="kind")
        query, ctype = "", "application/json"
        if kind == "nested":  # JSON text inside a field: deep, or with lone surrogates, in a JSON or a form body
            sent[data.draw(keys, label="field")] = data.draw(st.sampled_from(NESTED), label="nested")
            if data.draw(st.booleans(), label="as form"):
                kind, ctype = "form", "application/x-www-form-urlencoded"
        if kind == "short":  # a client that stopped sending: CONTENT_LENGTH promises more than arrives
            body = json.dumps(sent, allow_nan=True).encode()
            headers = {"Content-Length": str(len(body) + data.draw(st.integers(1, 10 ** 6), label="missing"))}
            status, reply = call(app, method if method != "GET" else "POST", path, body[:len(body) // 2],
                                 ctype, "", headers)
            counts[f"{status // 100}xx"] += 1
            assert status < 500, (method, path, kind, sent, reply[:300])
            return
        if kind in ("json", "nested"):
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
    assert total >= min(2000, N_REQUESTS) and counts["5xx"] == 0


def outcome(check, model, params):
    try:
        return check(model, params)
    except pydantic.ValidationError as exc:
        return sorted(route_params.problems(exc))


def test_parameters_kept_as_sent_are_exactly_what_the_validators_give(app):
    """check() skips pydantic when every declared parameter is a value its kind keeps as sent; for any parameters of
    any route, its outcome (the parameters, or the problems) is the validators' own."""
    models_ = sorted({route.config["params_model"] for route in app.routes if route.config.get("params_model")}
                     | {route_params.UPDATE_V1}, key=lambda model: model.__name__)
    plain = st.one_of(st.none(), st.integers(-2 ** 64, 2 ** 64), st.text(max_size=20), st.sampled_from(SPECIALS),
                      st.booleans(), st.floats(allow_nan=True),
                      st.sampled_from(["x" * n for n in (32, 33, 128, 129, 256, 257, 1025)]),  # around the limits
                      st.sampled_from(NESTED + [' {"a": [1, "x"]}', "[1, 2]", '{"a": 1} x']))  # JSON texts (Json)
    kept = collections.Counter()

    @settings(max_examples=examples(800), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(model=st.sampled_from(models_), data=st.data())
    def one(model, data):
        keys = st.one_of(st.sampled_from(sorted(model.model_fields) or ["x"]), st.text(max_size=6))
        params = data.draw(st.dictionaries(keys, st.one_of(plain, values), max_size=5), label="params")
        sent = dict(params)
        fast = outcome(route_params.check, model, sent)
        assert fast == outcome(route_params.validated, model, dict(params)), (model.__name__, params)
        kept[fast is sent] += 1  # the parameters themselves: pydantic was skipped

    one()
    assert kept[True] and kept[False], kept  # both ways were taken


def test_a_stalled_body_on_any_route_is_answered_408_and_the_server_goes_on(tmp_path):
    """Headers sent, body never finished, on every route that takes a body, all at once: each gets 408 when the
    body deadline (--body-timeout 1 here) passes, none a 5xx, and the server still answers."""
    import socket

    from conftest import LiveServer

    class Server(LiveServer):
        def argv(self):
            return super().argv() + ["--body-timeout", "1"]

    server = Server(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "minipanda.db"), threads=2)
    sockets = []
    try:
        app = make_app(ServerContext(home=str(tmp_path), secret=b"s" * 32))
        for method, rule, _ in routes_of(app):
            if method not in ("POST", "PUT"):
                continue
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            path = fill_path(rule, ["user.admin", "x.txt", "x"])
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer "
                         f"{server.admin_token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                         '{"a": '.encode())
            sockets.append((path, sock))
        statuses = collections.Counter()
        for path, sock in sockets:
            head = sock.recv(4096).split(b"\r\n", 1)[0]
            statuses[head.decode()] += 1
            assert head.startswith(b"HTTP/1.1 408"), (path, head)
        assert requests.get(server.url + "/api/v1/system/is_alive", timeout=30).status_code == 200
        print(f"\nstalled bodies: {len(sockets)} routes: {dict(statuses)}")
    finally:
        for _, sock in sockets:
            sock.close()
        server.stop()


def test_a_routes_parameter_model_is_built_at_its_first_use_and_then_checks_as_before():
    """Params' defer_build: importing the module builds none of the ~25 route models (start-up CPU), the first
    check builds that one model, and a bad value is still refused naming its field."""
    import subprocess

    code = ("from minipanda.api import params as p\n"
            "models = [m for m in p.Params.__subclasses__()]\n"
            "print(len(models), sum(bool(m.__pydantic_complete__) for m in models))\n"
            "p.UPDATE_V1.model_validate({'jobId': '5', 'state': 'running'})\n"
            "print(sum(bool(m.__pydantic_complete__) for m in models), bool(p.UPDATE_V1.__pydantic_complete__))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 20 and out[1:] == ["0", "1", "True"], out
    with pytest.raises(pydantic.ValidationError) as caught:
        route_params.check(route_params.UPDATE_V1, {"jobId": "not a number", "state": "running"})
    assert any(problem.startswith("jobId:") for problem in route_params.problems(caught.value))


NUL_REQUESTS = [  # (path, form or JSON parameters, the field the refusal names)
    ("/server/panda/getJob", {"siteName": "Q", "node": "n\x00"}, "node"),
    ("/server/panda/getJob", {"siteName": "Q", "pilotID": "\x00p"}, "pilotID"),
    ("/server/panda/getJob", {"siteName": "Q\x00"}, "siteName"),
    ("/server/panda/updateWorkerPilotStatus", {"workerID": 1, "harvesterID": "h", "status": "started",
                                               "site": "s\x00"}, "site"),
    ("/api/v1/job/list", {"user": "a\x00"}, "user"),
    ("/api/v1/retry_rule/add", {"source": "pilot", "code": 1, "diag": "d\x00", "action": "no_retry"}, "diag"),
]


@pytest.mark.parametrize("path, sent, field", NUL_REQUESTS)
def test_a_nul_character_in_a_text_parameter_is_refused_by_name(live_server, path, sent, field):
    """PostgreSQL's texts cannot hold a NUL: it reached the database and failed the request with a 500 there
    (a getJob's node or pilotID on the claim, a list's filter); it is refused naming the field, on either
    database, and nothing is dispatched. Both the kinds' validator and the fast path that takes a text as sent."""
    headers = live_server.headers()
    requests.post(live_server.url + "/api/v1/job/submit", json={"jobs": [
        {"computingSite": "Q", "transformation": "t", "prodSourceLabel": "managed"}]}, headers=headers, timeout=60)
    if path.startswith("/server/panda/"):
        reply = requests.post(live_server.url + path, data=sent, headers=headers, timeout=60)
    else:
        reply = requests.post(live_server.url + path, json=sent, headers=headers, timeout=60)
    assert reply.status_code == 400, reply.text
    assert f"{field}: a NUL character cannot be stored" in reply.text
    listed = requests.post(live_server.url + "/api/v1/job/list", json={}, headers=headers, timeout=60).json()
    assert [job["jobStatus"] for job in listed["data"]] == ["activated"], listed
