"""A job's files in and out through the zipapp pilot (pilot.staging): inputs checked and staged in, file names
refused, outputs and logs through the server's file store."""
import os
import tarfile
import zlib

import pytest
import requests

from test_pilot_jobrun import adler

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def test_stagein_checksum_mismatch_fails_with_1145(site):
    inputs = os.path.join(site.base, "inputs")
    os.makedirs(os.path.join(inputs, "data"))
    with open(os.path.join(inputs, "data", "in.dat"), "wb") as handle:
        handle.write(b"payload input\n")
    marker = os.path.join(site.base, "payload-ran")
    pid = site.submit(transformation="/bin/touch", jobParameters=marker,
                      Files=[{"type": "input", "lfn": "in.dat", "scope": "data", "fsize": 14,
                              "checksum": "ad:00000001"}, {"type": "log", "lfn": "l.tgz"}])
    code, log = site.run("--input-dir", inputs)
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1145), log
    assert not os.path.exists(marker)  # the payload never started
    assert os.path.exists(os.path.join(inputs, "data", "in.dat"))  # the source is never moved


def test_stagein_good_input_and_missing_input(site):
    inputs = os.path.join(site.base, "inputs")
    os.makedirs(inputs)
    data = b"abc\n"
    with open(os.path.join(inputs, "in.dat"), "wb") as handle:
        handle.write(data)
    good = site.submit(transformation="/bin/sh", jobParameters="-c 'cat in.dat > out.dat'",
                       Files=[{"type": "input", "lfn": "in.dat", "fsize": 4,
                               "checksum": f"ad:{zlib.adler32(data):08x}"},
                              {"type": "output", "lfn": "out.dat"}, {"type": "log", "lfn": "l.tgz"}])
    code, log = site.run("--input-dir", inputs)
    assert site.job(good)["jobStatus"] == "finished", log
    with tarfile.open(os.path.join(site.outputs(), "l.tgz")) as tar:
        assert not [n for n in tar.getnames() if n.endswith("in.dat")]  # inputs stay out of the log
    missing = site.submit(transformation="/bin/true", jobParameters="",
                          Files=[{"type": "input", "lfn": "gone.dat"}, {"type": "log", "lfn": "l2.tgz"}])
    site.run("--input-dir", inputs)
    assert site.job(missing)["pilotErrorCode"] == 1331


def test_unsafe_file_names_are_refused(site):
    # A name or a scope that would climb out of the work area is refused by the server already (and by the
    # pilot's own checks, see test_pilot_jobdata, for jobs that arrive through files).
    for unsafe in ({"lfn": "..tgz"}, {"lfn": "x.tgz", "scope": ".."}):
        with pytest.raises(requests.HTTPError, match="400"):
            site.submit(transformation="/bin/true", jobParameters="", Files=[dict(type="log", **unsafe)])


def test_http_stage_in_and_stage_out_through_the_server_file_store(site):
    server = site.server
    data = b"input from the file store\n"
    put = requests.put(server.url + "/files/data/in.dat", data=data, timeout=30,  # the input placed by the admin
                       headers=dict(server.headers(json_reply=False), **{"X-Checksum": f"ad:{zlib.adler32(data):08x}"}))
    assert put.status_code == 201, put.text
    pid = site.submit(transformation="/bin/sh", jobParameters="-c 'cat in.dat in.dat > out.dat'",
                      Files=[{"type": "input", "lfn": "in.dat", "scope": "data", "fsize": len(data),
                              "checksum": f"ad:{zlib.adler32(data):08x}"},
                             {"type": "output", "lfn": "out.dat", "scope": "user"},
                             {"type": "log", "lfn": "job.log.tgz", "scope": "user"}])
    qd = site.queuedata(copytool="http", input_url="/files/{scope}/{lfn}", output_url="/files/{scope}/{lfn}")
    code, log = site.run(qd=qd)
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("finished", 0), log
    stored = os.path.join(server.home, "files", "user", "out.dat")
    with open(stored, "rb") as handle:
        assert handle.read() == data * 2
    files = {f["lfn"]: f for f in job["Files"]}
    assert files["out.dat"]["checksum"] == "ad:" + adler(stored)
    assert files["out.dat"]["surl"] == server.url + "/files/user/out.dat"
    assert files["job.log.tgz"]["surl"] == server.url + "/files/user/job.log.tgz"
    tarball = os.path.join(server.home, "files", "user", "job.log.tgz")
    assert files["job.log.tgz"]["checksum"] == "ad:" + adler(tarball)
    with open(site.token_file) as handle:
        token = handle.read().strip()
    assert requests.get(files["out.dat"]["surl"], headers={"Authorization": f"Bearer {token}"},
                        timeout=30).content == data * 2
    assert not os.path.exists(os.path.join(site.outputs(), "user", "out.dat"))  # nothing went to a directory
