"""The route plugin (minipanda/api/app.py): requests a browser makes for another site are refused before anything
runs, whatever their method, even with ``--auth none`` on loopback; state-changing routes refuse GET; without
tokens, a Host header that names no address of the server (DNS rebinding) is refused. In-process WSGI on a real
SQLite file."""
import json
import urllib.parse

import pytest
from minipanda.api.app import ServerContext, make_app
from minipanda.core import models, schema
from test_api_params import call

JOB = json.dumps({"jobs": [{"computingSite": "Q", "transformation": "/bin/sh", "jobParameters": "-c id",
                            "prodSourceLabel": "managed"}]}).encode()


@pytest.fixture
def open_app(tmp_path):
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    yield make_app(ServerContext(home=str(tmp_path), secret=b"s" * 32, auth_mode="none"))
    database.close()


@pytest.mark.parametrize("ctype, headers", [
    ("text/plain", {"Origin": "http://evil.example"}),
    ("application/x-www-form-urlencoded", {"Origin": "http://evil.example"}),
    ("application/json", {"Origin": "http://evil.example"}),
    ("text/plain", {"Sec-Fetch-Site": "cross-site"}),
    ("application/json", {"Origin": "null"}),
])
def test_a_cross_site_submit_is_refused_and_creates_no_job(open_app, ctype, headers):
    body = JOB if "form" not in ctype else b"jobs=" + JOB
    status, reply = call(open_app, "POST", "/api/v1/job/submit", body, ctype, headers=headers)
    assert status == 403 and b"Origin" in reply
    assert models.Job.select().count() == 0


def test_json_sent_as_text_plain_is_refused_without_an_origin_too(open_app):
    status, reply = call(open_app, "POST", "/api/v1/job/submit", JOB, "text/plain")
    assert status == 415 and b"Content-Type" in reply and models.Job.select().count() == 0


def test_the_servers_own_origin_and_clients_without_one_may_submit(open_app):
    status, _ = call(open_app, "POST", "/api/v1/job/submit", JOB, headers={"Origin": "http://127.0.0.1:25080"})
    assert status == 200
    status, _ = call(open_app, "POST", "/api/v1/job/submit", JOB)
    assert status == 200 and models.Job.select().count() == 2


def submitted(app):
    status, reply = call(app, "POST", "/api/v1/job/submit", JOB)
    return json.loads(reply)["data"][0][0]


def test_a_link_or_image_cannot_kill_or_submit(open_app):
    """A page's <img src=".../job/kill?job_ids=N"> is a GET without Origin: state-changing routes refuse GET."""
    panda_id = submitted(open_app)
    status, _ = call(open_app, "GET", "/api/v1/job/kill", query=f"job_ids={panda_id}")
    assert status == 405 and models.Job.get_by_id(panda_id).status == "activated"
    status, _ = call(open_app, "GET", "/api/v1/job/submit", query="jobs=" + urllib.parse.quote(
        json.dumps(json.loads(JOB)["jobs"])))
    assert status == 405 and models.Job.select().count() == 1


CHANGES = ["/server/panda/getJob", "/server/panda/updateJob", "/server/panda/updateJobsInBulk",
           "/server/panda/updateWorkerPilotStatus", "/api/v1/pilot/acquire_jobs", "/api/v1/pilot/update_job",
           "/api/v1/pilot/update_jobs_bulk", "/api/v1/job/submit", "/api/v1/job/kill", "/api/v1/task/submit",
           "/api/v1/task/kill", "/api/v1/task/finish", "/api/v1/task/retry", "/api/v1/task/pause",
           "/api/v1/task/resume", "/api/v1/dataset/add", "/api/v1/retry_rule/add", "/api/v1/retry_rule/remove",
           "/api/v1/harvester/heartbeat", "/api/v1/harvester/update_workers",
           "/api/v1/harvester/report_worker_statistics", "/api/v1/harvester/acquire_commands",
           "/api/v1/harvester/acknowledge_commands", "/api/v1/harvester/mint_pilot_token",
           "/api/v1/harvester/revoke_pilot_token", "/api/v1/harvester/add_command",
           "/api/v1/file_server/upload_cache_file", "/monitor/logout"]


@pytest.mark.parametrize("path", CHANGES)
def test_every_state_changing_route_refuses_get(open_app, path):
    assert call(open_app, "GET", path)[0] == 405


# The API routes that change nothing: the only ones that may answer GET (besides the monitor's pages, the caches,
# the file store and transformations, which only read). A route added with GET must be added here, knowingly.
API_READS = {
    "/api/v1/dataset/list", "/api/v1/dataset/show", "/api/v1/file_server/validate_cache_file",
    "/api/v1/harvester/get_queue_demand", "/api/v1/harvester/get_sent_jobs", "/api/v1/harvester/list_commands",
    "/api/v1/harvester/list_instances", "/api/v1/harvester/list_workers", "/api/v1/job/get_description",
    "/api/v1/job/get_description_incl_archive", "/api/v1/job/get_status", "/api/v1/job/get_status_log",
    "/api/v1/job/list", "/api/v1/job/why", "/api/v1/openapi.json", "/api/v1/queues", "/api/v1/retry_rule/list",
    "/api/v1/system/is_alive", "/api/v1/task/get_details", "/api/v1/task/get_job_ids", "/api/v1/task/get_status",
    "/api/v1/task/get_status_log", "/api/v1/task/get_task_parameters",
    "/api/v1/task/get_tasks_detailed_info_since", "/api/v1/task/get_tasks_modified_since", "/metrics",
    "/server/panda/getResourceTypes", "/server/panda/getStatus", "/server/panda/isAlive"}
READ_PREFIXES = ("/monitor", "/cache/", "/files/", "/trf/")


def test_only_routes_that_change_nothing_answer_get(open_app):
    answering_get = {route.rule for route in open_app.routes if route.method == "GET"}
    api = {rule for rule in answering_get if not rule.startswith(READ_PREFIXES)}
    assert api <= API_READS, f"routes answering GET that are not known reads: {sorted(api - API_READS)}"
    assert not set(CHANGES) & answering_get


@pytest.mark.parametrize("method, path", [("GET", "/api/v1/queues"), ("GET", "/api/v1/job/list"),
                                          ("POST", "/api/v1/job/get_status"), ("GET", "/server/panda/isAlive")])
@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"}])  # another port of this host is another site
def test_reads_from_another_site_are_refused_too(open_app, method, path, headers):
    status, reply = call(open_app, method, path, b'{"job_ids": [1]}' if method == "POST" else b"", headers=headers)
    assert status == 403 and b"Origin" in reply


def test_a_link_from_another_site_opens_a_monitor_page(open_app):
    status, _ = call(open_app, "GET", "/monitor/jobs", headers={"Sec-Fetch-Site": "cross-site",
                                                                "Sec-Fetch-Mode": "navigate"})
    assert status == 200


def test_an_origin_of_another_scheme_is_another_site(open_app):
    status, reply = call(open_app, "POST", "/api/v1/job/submit", JOB, headers={"Origin": "https://127.0.0.1:25080"})
    assert status == 403 and models.Job.select().count() == 0


@pytest.mark.parametrize("host", ["evil.example:25080", "evil.example", "127.0.0.1.evil.example:25080",
                                  "localhost.evil.example", "[::2]:25080", "0.0.0.0:25080", "bad host:x"])
def test_without_tokens_a_host_that_is_not_the_servers_is_refused(open_app, host):
    """DNS rebinding: the page's own origin (Origin and Host both evil.example) now resolves to 127.0.0.1."""
    panda_id = submitted(open_app)
    status, reply = call(open_app, "POST", "/api/v1/job/kill", json.dumps({"job_ids": [panda_id]}).encode(),
                         headers={"Host": host, "Origin": f"http://{host}"})
    assert status == 403 and b"Host" in reply
    assert models.Job.get_by_id(panda_id).status == "activated" and models.Job.get_by_id(
        panda_id).command_to_pilot is None
    assert call(open_app, "GET", "/api/v1/queues", headers={"Host": host})[0] == 403  # nor read


@pytest.mark.parametrize("host", ["127.0.0.1:25080", "localhost:25080", "LOCALHOST", "[::1]:25080", "127.0.0.2",
                                  "panda.example.org:25080"])
def test_without_tokens_the_servers_own_names_are_served(tmp_path, host):
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    app = make_app(ServerContext(home=str(tmp_path), secret=b"s" * 32, auth_mode="none",
                                 server_names=("127.0.0.1", "panda.example.org")))
    assert call(app, "GET", "/api/v1/queues", headers={"Host": host})[0] == 200
    database.close()


def test_pilot3s_proxied_transformation_download_names_pandas_host(open_app):
    status, _ = call(open_app, "GET", "/trf/user/runGen-00-00-02", headers={"Host": "pandaserver-doma.cern.ch:25080"})
    assert status == 200


def test_with_tokens_the_host_is_not_checked(tmp_path):
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    app = make_app(ServerContext(home=str(tmp_path), secret=b"s" * 32))
    assert call(app, "GET", "/api/v1/queues", headers={"Host": "panda.example.org"})[0] == 200
    database.close()


def test_panda_clients_origin_header_naming_its_vo_is_not_a_browsers(open_app):
    status, _ = call(open_app, "POST", "/api/v1/job/submit", JOB, headers={"Origin": "minipanda"})
    assert status == 200
