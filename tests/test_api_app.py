"""The route plugin (minipanda/api/app.py): requests a browser makes for another site are refused before anything
runs, even with ``--auth none`` on loopback; reads stay open. In-process WSGI on a real SQLite file."""
import json

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


def test_reads_from_another_origin_stay_open(open_app):
    status, _ = call(open_app, "GET", "/api/v1/queues", headers={"Origin": "http://evil.example"})
    assert status == 200


def test_panda_clients_origin_header_naming_its_vo_is_not_a_browsers(open_app):
    status, _ = call(open_app, "POST", "/api/v1/job/submit", JOB, headers={"Origin": "minipanda"})
    assert status == 200
