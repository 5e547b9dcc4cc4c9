"""A finished job's report held to what the server stored (minipanda/core/stageout.py fail_mismatched_finals, called
by minipanda/core/updates.py): in HTTP stage-out mode a ``finished`` report whose output or log has another size or
adler32 than the copy in the server's file store fails the job with 1172, logged; the adler32 the store recorded at
PUT time is used, never the file's bytes again. Token auth on, through the WSGI app in-process, on SQLite and
PostgreSQL and a real file store."""
import json
import logging
import os
import shutil
import zlib
from unittest import mock

import pytest
from minipanda.core import filestore, models
from test_api_stageout import api, put, submit, take  # noqa: F401 (the api fixture)

OUT, LOG = b"the output bytes\n", b"a log tarball"
FILES = [{"type": "output", "lfn": "out.dat", "scope": "mc"}, {"type": "log", "lfn": "log.tgz", "scope": "logs"}]


def adler(data):
    return f"{zlib.adler32(data) & 0xffffffff:08x}"


def report(data, lfn="out.dat", scope="mc", **changes):
    return {lfn: dict({"guid": "g-1", "fsize": len(data), "adler32": adler(data),
                       "surl": f"http://127.0.0.1:25080/files/{scope}/{lfn}"}, **changes)}


@pytest.fixture
def running(api):  # noqa: F811
    """(pilot token, PandaID) of a job dispatched to that token, its output and log stored by it."""
    token = api.token("pilot", "site")
    job = submit(api, files=FILES)
    assert take(api, "TEST_PQ", token) == job
    assert put(api, "/files/mc/out.dat", OUT, token=token, panda_id=job)[0] == 201
    assert put(api, "/files/logs/log.tgz", LOG, token=token, panda_id=job)[0] == 201
    return token, job


def final(api, token, job, xml, route="/server/panda/updateJob"):  # noqa: F811
    params = {"jobId": job, "state": "finished", "transExitCode": 0, "xml": json.dumps(xml)}
    if route.endswith("InBulk"):
        params = {"jobList": [params]}
    return api.ok(route, params, token)


def outcome(job):
    row = models.Job.get_by_id(job)
    return row.status, row.pilot_error_code, row.pilot_error_diag or ""


@pytest.mark.parametrize("route", ["/server/panda/updateJob", "/server/panda/updateJobsInBulk"])
def test_a_report_that_matches_the_stored_files_finishes_the_job(api, running, route):  # noqa: F811
    token, job = running
    with mock.patch.object(filestore, "file_adler32", side_effect=AssertionError("a stored file read again")):
        final(api, token, job, {**report(OUT), **report(LOG, "log.tgz", "logs")}, route)
    assert outcome(job)[:2] == ("finished", None)
    row = models.JobFile.get(models.JobFile.job == job, models.JobFile.lfn == "out.dat")
    assert (row.fsize, row.checksum, row.status) == (len(OUT), "ad:" + adler(OUT), "finished")


@pytest.mark.parametrize("case, words", [
    ("another size", "out.dat is reported with fsize '999', its copy mc/out.dat in the server's store has 17 bytes"),
    ("a size that is no number", "fsize 'lots'"),
    ("another adler32", "out.dat is reported with adler32 '00000001', its copy mc/out.dat in the server's store has"),
    ("another adler32 as checksum", "adler32 'ad:00000002'"),
    ("an adler32 that is no adler32", "adler32 'zz'"),
    ("the log's adler32", "log.tgz is reported with adler32 '00000003', its copy logs/log.tgz"),
    ("another adler32 in bulk", "out.dat is reported with adler32 '00000001'"),
])
def test_a_report_that_differs_from_the_stored_file_fails_the_job_with_1172(
        api, running, caplog, case, words):  # noqa: F811
    token, job = running
    xml = {**report(OUT), **report(LOG, "log.tgz", "logs")}
    route = "/server/panda/updateJobsInBulk" if "bulk" in case else "/server/panda/updateJob"
    if case == "another size":
        xml["out.dat"]["fsize"] = 999
    elif case == "a size that is no number":
        xml["out.dat"]["fsize"] = "lots"
    elif case in ("another adler32", "another adler32 in bulk"):
        xml["out.dat"]["adler32"] = "00000001"
    elif case == "another adler32 as checksum":
        del xml["out.dat"]["adler32"]
        xml["out.dat"]["checksum"] = "ad:00000002"
    elif case == "an adler32 that is no adler32":
        xml["out.dat"]["adler32"] = "zz"
    elif case == "the log's adler32":
        xml["log.tgz"]["adler32"] = "00000003"
    with caplog.at_level(logging.WARNING, logger="minipanda.core.stageout"), \
            mock.patch.object(filestore, "file_adler32", side_effect=AssertionError("a stored file read again")):
        reply = final(api, token, job, xml, route)
    status, code, diag = outcome(job)
    assert (status, code) == ("failed", 1172) and words in diag, (reply, diag)
    assert any(f"job {job} reported finished" in r.getMessage() and words in r.getMessage() and "1172" in
               r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert models.JobFile.get(models.JobFile.job == job, models.JobFile.lfn == "out.dat").status == "failed"


def test_the_copy_the_surl_names_is_checked_and_a_file_stored_elsewhere_is_not(api, running, tmp_path):  # noqa: F811
    token, job = running
    shutil.move(tmp_path / "files" / "mc" / "out.dat", tmp_path / "elsewhere.dat")  # not in the store any more
    elsewhere = report(b"other bytes", surl=f"file://{tmp_path}/elsewhere.dat")  # a queue's own storage
    final(api, token, job, elsewhere)
    assert outcome(job)[:2] == ("finished", None)

    other = submit(api, files=[{"type": "log", "lfn": "log2.tgz", "scope": "logs"}])
    assert take(api, "TEST_PQ", token) == other
    assert put(api, "/files/site.layout/log2.tgz", LOG, token=token, panda_id=other)[0] == 201  # output_url's scope
    final(api, token, other, report(LOG[:-1], "log2.tgz", "site.layout"))
    status, code, diag = outcome(other)
    assert (status, code) == ("failed", 1172) and "its copy site.layout/log2.tgz" in diag, diag


def test_a_file_copied_into_the_store_by_hand_is_read_to_check_it(api, running, tmp_path):  # noqa: F811
    """No adler32 recorded (a file put there without the store, or a file system without extended attributes):
    the check reads the file."""
    token, job = running
    path = tmp_path / "files" / "mc" / "out.dat"
    os.removexattr(path, filestore.RECORD)
    assert filestore.stored_adler32(str(path)) == adler(OUT)
    final(api, token, job, report(OUT, adler32=adler(b"the output byteZ\n")))
    assert outcome(job)[:2] == ("failed", 1172)


def test_the_store_records_the_adler32_it_measured(tmp_path):
    store = filestore.FileStore(str(tmp_path))
    import io

    store.put("sc", "a.dat", io.BytesIO(OUT), len(OUT), 1 << 20, None)
    path = os.path.join(str(tmp_path), "sc", "a.dat")
    assert os.getxattr(path, filestore.RECORD) == adler(OUT).encode()
    os.setxattr(path, filestore.RECORD, b"0000abcd")  # what is recorded is what a check reads, not the bytes
    assert filestore.stored_adler32(path) == "0000abcd"
