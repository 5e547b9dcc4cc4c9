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


AUDIT_HOOK = '''import os, sys
_record = open(os.environ["TEST_OPEN_RECORD"], "a", buffering=1)
def _hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        path, mode, flags = args
        writing = (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) or (mode or "r")[0] in "wax+"
        if writing:
            _record.write(os.fsdecode(path) + chr(10))
sys.addaudithook(_hook)
'''


def files_written(site, monkeypatch):
    """Every path the pilot process opens for writing from now on (an audit hook its interpreter loads from
    ``sitecustomize``): a file that exists for a moment only is seen too. Returns a function giving them."""
    hooks = os.path.join(site.base, "hooks")
    os.makedirs(hooks, exist_ok=True)
    with open(os.path.join(hooks, "sitecustomize.py"), "w") as handle:
        handle.write(AUDIT_HOOK)
    record = os.path.join(site.base, "opened-for-writing.txt")
    open(record, "w").close()
    monkeypatch.setenv("PYTHONPATH", hooks)
    monkeypatch.setenv("TEST_OPEN_RECORD", record)
    return lambda: open(record).read().split()


def test_a_log_uploaded_over_http_is_never_a_file_on_the_node(site, monkeypatch):
    """The log tarball goes from memory to the server's store (alone and several in one request): no file of it is
    ever created on the node, and the server holds each whole, with the adler32 the pilot declared. A log that
    must stay on the node (copytool mv) is still a file: the audit hook sees those."""
    written = files_written(site, monkeypatch)
    ids = [site.submit(transformation="/bin/true", jobParameters="",
                       Files=[{"type": "log", "lfn": f"job{n}.log.tgz", "scope": "user"}]) for n in range(3)]
    qd = site.queuedata(copytool="http", output_url="/files/{scope}/{lfn}", timefloor=10)
    code, log = site.run(qd=qd)
    assert code == 0, log
    for n, panda_id in enumerate(ids):
        job = site.job(panda_id)
        assert job["jobStatus"] == "finished", log
        stored = os.path.join(site.server.home, "files", "user", f"job{n}.log.tgz")
        assert {f["lfn"]: f for f in job["Files"]}[f"job{n}.log.tgz"]["checksum"] == "ad:" + adler(stored)
        with tarfile.open(stored) as tar:
            assert f"PandaJob_{panda_id}/pilotlog.txt" in tar.getnames()
    opened = written()
    assert any(path.endswith("pilotlog.txt") for path in opened), opened  # the hook sees the pilot's files
    assert not [path for path in opened if path.endswith(".tgz")], opened
    kept = site.submit(transformation="/bin/true", jobParameters="",
                       Files=[{"type": "log", "lfn": "kept.log.tgz", "scope": "user"}])
    code, log = site.run(qd=site.queuedata(copytool="mv"))
    assert code == 0 and site.job(kept)["jobStatus"] == "finished", log
    assert [path for path in written() if path.endswith("kept.log.tgz")], written()


def test_a_log_whose_upload_fails_is_kept_on_the_node_whole(site, monkeypatch):
    """An upload that fails (nothing listens at output_url): the job fails as before, and its tarball, built in
    memory, is written to the pilot directory whole, with the size and adler32 its upload declared."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # closed again: nothing listens there
    panda_id = site.submit(transformation="/bin/echo", jobParameters="some output",
                           Files=[{"type": "log", "lfn": "lost.log.tgz", "scope": "user"}])
    qd = site.queuedata(copytool="http", output_url=f"http://127.0.0.1:{dead}/files/{{scope}}/{{lfn}}")
    code, log = site.run(qd=qd)
    job = site.job(panda_id)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1137), log
    kept = [os.path.join(root, name) for root, _, names in os.walk(site.workdir) for name in names
            if name == "lost.log.tgz"]
    assert len(kept) == 1, log
    data = open(kept[0], "rb").read()
    assert f"kept at {kept[0]} ({len(data)} bytes, adler32 {zlib.adler32(data) & 0xffffffff:08x})" in log, log
    with tarfile.open(kept[0]) as tar:  # a whole gzip stream (its CRC checked) and tar archive
        assert tar.extractfile(f"PandaJob_{panda_id}/payload.stdout").read() == b"some output\n"
