"""Who may PUT which file (minipanda/api/files.py, minipanda/core/stageout.py): a pilot's or harvester's token stores
only an output or the log of a job dispatched to it, named in ``X-PandaID``, while the job runs; managers store any
name. A production token is held to the same rules when it names a job, else places files only in shared scopes and
its own; no token replaces a stored file. Every refusal comes before a byte of the body is read, and leaves nothing.
Token auth on, through the WSGI app in-process on SQLite and PostgreSQL and a real file store."""
import io
import json
import os
import zlib

import pytest
from minipanda.api.app import ServerContext, make_app
from minipanda.core import models, schema
from test_api_binding import SECRET, Api
from test_api_params import call

FILES = [{"type": "input", "lfn": "in.dat", "scope": "data"}, {"type": "output", "lfn": "out.dat", "scope": "mc"},
         {"type": "output", "lfn": "mine.dat", "scope": "user.alice"}, {"type": "log", "lfn": "log.tgz",
                                                                        "scope": "logs"}]


@pytest.fixture
def api(tmp_path, db_url):
    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    yield Api(make_app(ServerContext(home=str(tmp_path), secret=SECRET)))
    database.close()


class Watched(io.BytesIO):
    """A request body that counts the reads of it (a refusal must come before the first)."""

    reads = 0

    def read(self, *args):
        self.reads += 1
        return super().read(*args)

    def readinto(self, buffer):
        self.reads += 1
        return super().readinto(buffer)


def put(api, path, data=b"payload bytes", token=None, panda_id=None, watch=None, **headers):
    """(HTTP status, reply) of one PUT; ``panda_id`` sent as ``X-PandaID`` unless None; ``watch``: a list that gets
    the body's Watched stream."""
    headers = dict({"Authorization": f"Bearer {token or api.admin}",
                    "X-Checksum": f"ad:{zlib.adler32(data) & 0xffffffff:08x}"}, **headers)
    if panda_id is not None:
        headers["X-PandaID"] = str(panda_id)
    body = Watched(data)
    if watch is not None:
        watch.append(body)
    status, reply = call(api.app, "PUT", path, data, "application/octet-stream", headers=headers, stream=body)
    return status, json.loads(reply)


def submit(api, queue="TEST_PQ", files=FILES, **changes):
    """A job of ``queue`` with ``files``; its PandaID."""
    from conftest import make_job

    job = make_job(queue, Files=files, **changes)
    return api.ok("/api/v1/job/submit", {"jobs": [job]})[0][0]


def take(api, queue, token):
    """getJob on ``queue`` with ``token``: the PandaID dispatched."""
    return api.ok("/server/panda/getJob", {"computingElement": queue}, token)["PandaID"]


def stored(tmp_path):
    root = tmp_path / "files"
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture
def site(api):
    """A harvester h1 with minted tokens for its workers 5 and 6 of TEST_PQ, each with one job taken."""
    harvester = api.token("harvester", "h1")
    mine, sibling = api.mint(harvester, "h1", 5, "TEST_PQ"), api.mint(harvester, "h1", 6, "TEST_PQ")
    submit(api)
    submit(api)
    return {"harvester": harvester, "token": mine, "job": take(api, "TEST_PQ", mine), "sibling_token": sibling,
            "sibling_job": take(api, "TEST_PQ", sibling)}


def test_a_pilot_stores_its_jobs_outputs_and_log_once_each(api, site, tmp_path):
    token, job = site["token"], site["job"]
    for path in ("/files/mc/out.dat", "/files/user.alice/mine.dat", "/files/logs/log.tgz"):
        assert put(api, path, token=token, panda_id=job)[0] == 201, path
    status, reply = put(api, "/files/mc/out.dat", token=token, panda_id=job)  # a retry of the same bytes
    assert status == 200 and "already stored" in reply["message"]
    assert put(api, "/files/site.layout/log.tgz", token=token, panda_id=job)[0] == 201  # output_url's own scope
    assert stored(tmp_path) == ["logs/log.tgz", "mc/out.dat", "site.layout/log.tgz", "user.alice/mine.dat"]


@pytest.mark.parametrize("case, status, words", [
    ("another queue's job", 403, "queue OTHER_PQ"),
    ("another worker's job", 403, "worker 6"),
    ("a finished job", 409, "has ended"),
    ("a queued job", 409, "not dispatched"),
    ("an unknown job", 404, "unknown"),
    ("a PandaID of 2**64", 400, "X-PandaID: expected a PandaID"),
    ("a PandaID that is no number", 400, "X-PandaID: expected a PandaID"),
    ("no PandaID", 400, "X-PandaID: required with a pilot token"),
    ("a name the job did not declare", 403, "not an output or a log file"),
    ("an input's name", 403, "not an output or a log file"),
    ("another user's scope", 403, "user.bob is a user's scope"),
    ("traversal", 400, "lfn"),
    ("a size other than the job's", 400, "Content-Length"),
    ("an adler32 other than the job's", 400, "X-Checksum"),
    ("no checksum", 400, "X-Checksum: required with a pilot token"),
])
def test_a_pilot_token_may_not_store_what_its_job_does_not_write(api, site, tmp_path, case, status, words):
    token, job, path, headers = site["token"], site["job"], "/files/mc/out.dat", {}
    if case == "another queue's job":
        submit(api, "OTHER_PQ")
        job = take(api, "OTHER_PQ", api.token("pilot", "sitewide"))
    elif case == "another worker's job":
        job = site["sibling_job"]
    elif case == "a finished job":
        api.ok("/server/panda/updateJob", {"jobId": job, "state": "finished"}, token)
    elif case == "a queued job":
        job = submit(api)
    elif case == "an unknown job":
        job = 999999
    elif case == "a PandaID of 2**64":
        job = 2 ** 64
    elif case == "a PandaID that is no number":
        job = "1e3"
    elif case == "no PandaID":
        job = None
    elif case == "a name the job did not declare":
        path = "/files/mc/planted.dat"
    elif case == "an input's name":
        path = "/files/data/in.dat"
    elif case == "another user's scope":
        path = "/files/user.bob/out.dat"
    elif case == "traversal":
        path = "/files/mc/..%2F..%2Fout.dat"
    elif case in ("a size other than the job's", "an adler32 other than the job's"):
        declared = {"fsize": 3} if "size" in case else {"checksum": "ad:00000001"}
        models.JobFile.update(**declared).where(models.JobFile.job == job, models.JobFile.lfn == "out.dat").execute()
    elif case == "no checksum":
        headers["X-Checksum"] = ""
    watch = []
    reply_status, reply = put(api, path, token=token, panda_id=job, watch=watch, **headers)
    assert (reply_status, reply["success"]) == (status, False), reply
    assert words in reply["message"], reply
    assert stored(tmp_path) == [] and watch[0].reads == 0


def test_a_harvester_token_stores_only_files_of_jobs_dispatched_to_its_harvester(api, site, tmp_path):
    """File mode: harvester stages a job's outputs out for a pilot without network."""
    assert put(api, "/files/mc/out.dat", token=site["harvester"], panda_id=site["job"])[0] == 201
    other = api.token("harvester", "h2")
    status, reply = put(api, "/files/mc/out.dat", token=other, panda_id=site["sibling_job"])
    assert status == 403 and "harvester h2" in reply["message"], reply
    status, reply = put(api, "/files/mc/out.dat", token=other)
    assert status == 400 and "X-PandaID: required with a harvester token" in reply["message"], reply
    assert stored(tmp_path) == ["mc/out.dat"]


def test_managers_place_files_without_naming_a_job_production_in_shared_scopes_and_its_own(api, tmp_path):
    """What a production robot writes without a job: a task's inputs in shared scopes, files in its own
    user.<name>; the same upload again is a success answered before the body is read. The admin writes anywhere."""
    prod = api.token("production", "prod")
    assert put(api, "/files/data/in.dat")[0] == 201  # an input placed by the admin
    assert put(api, "/files/user.carol/anything.dat")[0] == 201  # the admin: any scope
    assert put(api, "/files/data/in2.dat", token=prod)[0] == 201
    assert put(api, "/files/user.prod/mine.dat", token=prod)[0] == 201
    watch = []
    status, reply = put(api, "/files/data/in2.dat", token=prod, watch=watch)  # a retry of the same bytes
    assert status == 200 and "already stored" in reply["message"] and watch[0].reads == 0, reply
    assert reply["data"]["adler32"] == f"{zlib.adler32(b'payload bytes'):08x}"
    assert put(api, "/files/sc/x.dat", token=api.token("user", "dave"))[0] == 403  # users never PUT
    assert stored(tmp_path) == ["data/in.dat", "data/in2.dat", "user.carol/anything.dat", "user.prod/mine.dat"]


@pytest.mark.parametrize("case, status, words", [
    ("another user's scope", 403, "scope: user.carol is another user's scope"),
    ("a scope its name only begins", 403, "scope: user.prod.jr is another user's scope"),
    ("an existing file, other bytes", 409, "data/in.dat is already stored"),
    ("an existing file, no X-Checksum", 409, "declares 13 bytes, no X-Checksum"),
    ("an existing file, its adler32 but another size", 409, "declares 13 bytes, adler32"),
    ("an existing file, the admin", 409, "stored files never change"),
    ("a directory where the name is", 409, "something other than a file"),
    ("a leading dot", 400, "lfn: '.hidden'"),
    ("a scope outside the rules", 400, "scope: 'a b'"),
    ("a user's scope outside the rules", 400, "scope: 'user.carol x'"),
    ("traversal", 400, "lfn"),
    ("naming a job: an input's name", 403, "not an output or a log file"),
    ("naming a job: another user's scope", 403, "user.bob is a user's scope"),
    ("naming a job: an ended job", 409, "has ended"),
    ("naming a job: an unknown job", 404, "unknown"),
    ("naming a job: no checksum", 400, "X-Checksum: required with a production token"),
])
def test_a_production_token_may_not_write_another_users_scope_replace_a_file_or_break_the_rules(
        api, tmp_path, case, status, words):
    prod, path, data, headers, job = api.token("production", "prod"), "/files/data/x.dat", b"payload bytes", {}, None
    assert put(api, "/files/data/in.dat", b"the first bytes")[0] == 201
    before = stored(tmp_path)
    if case == "another user's scope":
        path = "/files/user.carol/x.dat"
    elif case == "a scope its name only begins":
        path = "/files/user.prod.jr/x.dat"
    elif case.startswith("an existing file"):
        path = "/files/data/in.dat"
        if "no X-Checksum" in case:
            headers["X-Checksum"] = ""
        if "another size" in case:  # refused on the headers alone: the body is never read to find it differs
            headers["X-Checksum"] = f"ad:{zlib.adler32(b'the first bytes'):08x}"
        if "admin" in case:
            prod = None
    elif case == "a directory where the name is":
        os.makedirs(tmp_path / "files" / "data" / "x.dat")
    elif case == "a leading dot":
        path = "/files/data/.hidden"
    elif case == "a scope outside the rules":
        path = "/files/a%20b/x.dat"
    elif case == "a user's scope outside the rules":
        path = "/files/user.carol%20x/x.dat"
    elif case == "traversal":
        path = "/files/data/..%2F..%2Fx.dat"
    elif case.startswith("naming a job"):
        job = submit(api)
        assert take(api, "TEST_PQ", prod) == job
        path = {"naming a job: an input's name": "/files/data/in2.dat",
                "naming a job: another user's scope": "/files/user.bob/out.dat"}.get(case, "/files/mc/out.dat")
        if case == "naming a job: an input's name":
            models.JobFile.update(lfn="in2.dat").where(models.JobFile.job == job,
                                                       models.JobFile.type == "input").execute()
        elif case == "naming a job: an ended job":
            api.ok("/server/panda/updateJob", {"jobId": job, "state": "finished"}, prod)
        elif case == "naming a job: an unknown job":
            job = 999999
        elif case == "naming a job: no checksum":
            headers["X-Checksum"] = ""
    watch = []
    reply_status, reply = put(api, path, data, token=prod, panda_id=job, watch=watch, **headers)
    assert (reply_status, reply["success"]) == (status, False), reply
    assert words in reply["message"], reply
    assert watch[0].reads == 0 and stored(tmp_path) == before
    with open(tmp_path / "files" / "data" / "in.dat", "rb") as handle:
        assert handle.read() == b"the first bytes"


def test_a_production_token_naming_its_job_stores_its_outputs_as_a_pilot_does(api, tmp_path):
    """A pilot run with a production token: the job named, its declared output and log in their scopes."""
    prod = api.token("production", "prod")
    job = submit(api)
    assert take(api, "TEST_PQ", prod) == job
    for path in ("/files/mc/out.dat", "/files/user.alice/mine.dat", "/files/logs/log.tgz"):
        assert put(api, path, token=prod, panda_id=job)[0] == 201, path
    assert stored(tmp_path) == ["logs/log.tgz", "mc/out.dat", "user.alice/mine.dat"]


def test_the_bulk_log_route_holds_its_entries_to_the_same_rules(api, site, tmp_path):
    """The bulk log route (minipanda/api/logs_bulk.py) judges each entry as a PUT is judged, logs only."""
    from test_api_logs_bulk import entry, upload

    token, job = site["token"], site["job"]
    ended = submit(api)
    ended_token = api.mint(site["harvester"], "h1", 7, "TEST_PQ")
    assert take(api, "TEST_PQ", ended_token) == ended
    api.ok("/server/panda/updateJob", {"jobId": ended, "state": "failed"}, ended_token)
    bodies = [b"log", b"an output", b"a user's", b"ended"]
    entries = [entry(job, bodies[0], lfn="log.tgz"), entry(job, bodies[1], lfn="out.dat", scope="mc"),
               entry(job, bodies[2], lfn="log.tgz", scope="user.bob"), entry(ended, bodies[3], lfn="log.tgz")]
    status, reply = upload(api, entries, bodies, token=token)
    results = reply["data"]["results"]
    assert status == 200 and [r["status"] for r in results] == [201, 403, 403, 409], reply
    assert "not a log file" in results[1]["message"] and "user's scope" in results[2]["message"]
    status, reply = upload(api, entries[3:], bodies[3:], token=ended_token)
    assert reply["data"]["results"][0]["status"] == 409 and "has ended" in reply["data"]["results"][0]["message"]
    assert stored(tmp_path) == ["logs/log.tgz"]
