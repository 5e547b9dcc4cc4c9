"""Stage-in and stage-out with each copytool, with their checks and error codes."""
import json
import os
import subprocess
import sys
import tarfile
import zlib

import pytest

from pilot import copytools, errors, fileutil
from pilot.comm import ServerClient
from pilot.errors import PilotError
from pilot.jobdata import Job

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures

DATA = b"some input data\n"
ADMIN = lambda site: os.path.join(site.server.home, "admin.token")  # noqa: E731 - the store's checks, not who may write
ADLER = f"ad:{zlib.adler32(DATA):08x}"


def make_job(**files):
    base = {"PandaID": 1, "transformation": "/bin/true", "inFiles": "in.dat", "scopeIn": "sc",
            "fsize": str(len(DATA)), "checksum": ADLER}
    base.update(files)
    return Job(base)


@pytest.fixture
def dirs(tmp_path):
    source, job_dir = tmp_path / "source", tmp_path / "job"
    (source / "sc").mkdir(parents=True)
    job_dir.mkdir()
    (source / "sc" / "in.dat").write_bytes(DATA)
    return str(source), str(job_dir)


@pytest.mark.parametrize("tool", ["copy", "mv", "symlink"])
def test_stage_in_local_tools(dirs, tool):
    source, job_dir = dirs
    job = make_job()
    copytools.stage_in(job, job_dir, tool, source, "", None, 10)
    staged = os.path.join(job_dir, "in.dat")
    assert open(staged, "rb").read() == DATA and os.path.islink(staged) == (tool == "symlink")
    assert os.path.exists(os.path.join(source, "sc", "in.dat"))  # never moved away from the shared area


@pytest.mark.parametrize("tool", ["copy", "mv", "symlink"])
def test_stage_in_from_the_registered_location_when_input_dir_lacks_it(dirs, tmp_path, tool):
    source, job_dir = dirs
    registered = os.path.join(source, "sc", "in.dat")
    empty = tmp_path / "empty"
    empty.mkdir()
    copytools.stage_in(make_job(surlIn=registered), job_dir, tool, str(empty), "", None, 10)
    assert open(os.path.join(job_dir, "in.dat"), "rb").read() == DATA and os.path.exists(registered)
    for surl in ("http://h/sc/in.dat", os.path.join(source, "sc", "other.dat"), "sc/in.dat"):  # not a path to it
        with pytest.raises(PilotError) as missing:
            copytools.stage_in(make_job(surlIn=surl), job_dir, tool, str(empty), "", None, 10)
        assert missing.value.code == errors.MISSINGINPUTFILE


@pytest.mark.parametrize("change,code", [
    ({"checksum": "ad:deadbeef"}, errors.GETMD5MISMATCH), ({"checksum": "md5:00"}, errors.GETMD5MISMATCH),
    ({"fsize": "3"}, errors.STAGEINFAILED), ({"inFiles": "other.dat"}, errors.MISSINGINPUTFILE)])
def test_stage_in_checks(dirs, change, code):
    source, job_dir = dirs
    with pytest.raises(PilotError) as exc:
        copytools.stage_in(make_job(**change), job_dir, "copy", source, "", None, 10)
    assert exc.value.code == code


def test_stage_in_limits_and_unknown_tool(dirs):
    source, job_dir = dirs
    with pytest.raises(PilotError) as big:
        copytools.stage_in(make_job(fsize="5000000"), job_dir, "copy", source, "", None, 10, max_input_mb=1)
    assert big.value.code == errors.SIZETOOLARGE
    with pytest.raises(PilotError) as unknown:
        copytools.stage_in(make_job(), job_dir, "rucio", source, "", None, 10)
    assert unknown.value.code == errors.UNKNOWNCOPYTOOL
    with pytest.raises(PilotError) as timeout:
        copytools.stage_in(make_job(), job_dir, "copy", source, "", None, -1)
    assert timeout.value.code == errors.STAGEINTIMEOUT


@pytest.fixture
def served(site, tmp_path):
    """(client of the site's server, an empty job directory): DATA is served as /trf/user/in.dat."""
    with open(os.path.join(site.server.home, "trf", "in.dat"), "wb") as handle:
        handle.write(DATA)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    return ServerClient(site.server.url, site.token_file, 10), job_dir


def test_stage_in_over_http_from_the_server(served):
    client, job_dir = served
    copytools.stage_in(make_job(), str(job_dir), "http", "", "/trf/user/{lfn}", client, 10)
    assert (job_dir / "in.dat").read_bytes() == DATA
    with pytest.raises(PilotError) as missing:
        copytools.stage_in(make_job(inFiles="nothere.dat"), str(job_dir), "http", "", "/trf/user/{lfn}", client, 10)
    assert missing.value.code == errors.MISSINGINPUTFILE
    with pytest.raises(PilotError) as bad_sum:
        copytools.stage_in(make_job(checksum="ad:00000000"), str(job_dir), "http", "", "/trf/user/{lfn}", client, 10)
    assert bad_sum.value.code == errors.GETMD5MISMATCH
    with pytest.raises(PilotError) as no_url:
        copytools.stage_in(make_job(), str(job_dir), "http", "", "", client, 10)
    assert no_url.value.code == errors.UNKNOWNCOPYTOOL


@pytest.mark.parametrize("tool", ["copy", "mv"])
def test_stage_out(tmp_path, tool):
    job = Job({"PandaID": 1, "transformation": "x", "outFiles": "out.dat,log.tgz", "scopeOut": "o",
               "logFile": "log.tgz"})
    spec = job.outputs[0]
    spec.path = str(tmp_path / "out.dat")
    (tmp_path / "out.dat").write_bytes(DATA)
    copytools.stage_out(spec, tool, str(tmp_path / "se"), 10)
    assert spec.surl == str(tmp_path / "se" / "o" / "out.dat") and open(spec.surl, "rb").read() == DATA
    assert (spec.fsize, spec.adler32) == (len(DATA), ADLER[3:])
    assert os.path.exists(tmp_path / "out.dat") == (tool == "copy")


@pytest.mark.parametrize("tool", ["symlink", "http"])
def test_stage_out_refused_by_read_only_tools(tmp_path, tool):
    job = Job({"PandaID": 1, "transformation": "x", "outFiles": "out.dat"})
    job.outputs[0].path = str(tmp_path)
    with pytest.raises(PilotError) as exc:
        copytools.stage_out(job.outputs[0], tool, str(tmp_path / "se"), 10)
    assert exc.value.code == errors.UNKNOWNCOPYTOOL


def test_log_tarball_leaves_inputs_out(dirs, tmp_path):
    source, job_dir = dirs
    job = make_job()
    copytools.stage_in(job, job_dir, "copy", source, "", None, 10)
    open(os.path.join(job_dir, "payload.stdout"), "w").write("out\n")
    os.makedirs(os.path.join(job_dir, "sub"))
    open(os.path.join(job_dir, "sub", "in.dat"), "w").write("not an input: a file the payload made\n")
    pilot_log = tmp_path / "pilotlog.txt"
    pilot_log.write_text("log\n")
    spool = copytools.log_tarball(job, job_dir, str(tmp_path / "log.tgz"), [str(pilot_log)])
    path, size, adler = spool.path, spool.size, spool.adler32
    assert spool.on_disk and spool.data is None  # no memory allowed: a file
    with tarfile.open(path) as tar:
        names = sorted(tar.getnames())
    assert names == ["PandaJob_1", "PandaJob_1/payload.stdout", "PandaJob_1/pilotlog.txt", "PandaJob_1/sub",
                     "PandaJob_1/sub/in.dat"]
    assert (size, adler) == (os.path.getsize(path), fileutil.adler32(path))  # taken while writing, not re-read


def test_log_tarball_holds_the_pilot_log_from_the_offset_given(dirs, tmp_path):
    _, job_dir = dirs
    pilot_log = tmp_path / "pilotlog.txt"
    pilot_log.write_text("previous job's lines\nthis job's lines\n")
    path = copytools.log_tarball(make_job(), job_dir, str(tmp_path / "log.tgz"),
                                 [(str(pilot_log), len("previous job's lines\n"))]).path
    with tarfile.open(path) as tar:
        assert tar.extractfile("PandaJob_1/pilotlog.txt").read() == b"this job's lines\n"


def test_stage_out_over_http_to_the_server_file_store(site, tmp_path):
    site.submit(Files=[{"type": "output", "lfn": "out.dat", "scope": "o"},
                       {"type": "log", "lfn": "log.tgz", "scope": "test"}])
    client = ServerClient(site.server.url, site.token_file, 10)
    job = Job(client.get_job({"computingElement": "TEST_PQ"}))  # a pilot token stores only its jobs' outputs
    spec = job.outputs[0]
    spec.path = str(tmp_path / "out.dat")
    (tmp_path / "out.dat").write_bytes(DATA)
    http = {"url_template": "/files/{scope}/{lfn}", "client": client, "panda_id": job.panda_id}
    copytools.stage_out(spec, "http", "", 10, **http)
    assert spec.surl == site.server.url + "/files/o/out.dat"
    assert (spec.fsize, spec.adler32) == (len(DATA), ADLER[3:])
    with open(os.path.join(site.server.home, "files", "o", "out.dat"), "rb") as handle:
        assert handle.read() == DATA
    copytools.stage_out(spec, "http", "", 10, **http)  # same content again: fine
    (tmp_path / "out.dat").write_bytes(b"changed\n")
    with pytest.raises(PilotError) as conflict:
        copytools.stage_out(spec, "http", "", 10, **http)
    assert conflict.value.code == errors.STAGEOUTFAILED and "409" in str(conflict.value)
    spec.lfn = "other.dat"  # a name the job did not declare
    with pytest.raises(PilotError) as undeclared:
        copytools.stage_out(spec, "http", "", 10, **http)
    assert undeclared.value.code == errors.STAGEOUTFAILED and "not an output or a log file" in str(undeclared.value)
    spec.lfn = "log.tgz"
    with pytest.raises(PilotError) as unnamed:  # the job not named: refused, not stored
        copytools.stage_out(spec, "http", "", 10, "/files/{scope}/{lfn}", client)
    assert "X-PandaID: required" in str(unnamed.value)
    unauthorized = ServerClient(site.server.url, None, 10)
    with pytest.raises(PilotError) as refused:
        copytools.stage_out(spec, "http", "", 10, tries=2, backoff=0.01, **dict(http, client=unauthorized))
    assert refused.value.code == errors.STAGEOUTFAILED and "401" in str(refused.value)
    assert os.listdir(os.path.join(site.server.home, "files", "o")) == ["out.dat"]


class HostileFiles:
    """An HTTP server on loopback (a thread) that answers every GET with ``declared`` as Content-Length and then
    ``body``, or (``stream``) zero bytes up to the declared length for as long as the client reads; ``sent`` counts
    what it managed to send."""

    def __init__(self, body=b"", declared=None, stream=False):
        import http.server
        import threading

        outer = self
        self.sent = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                length = len(body) if declared is None else declared
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                try:
                    if stream:
                        block = bytes(1 << 16)
                        while outer.sent < length:
                            self.wfile.write(block)
                            outer.sent += len(block)
                    else:
                        self.wfile.write(body)
                        outer.sent += len(body)
                    self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile():
    servers = []

    def start(**kwargs):
        servers.append(HostileFiles(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_a_download_that_fails_its_checksum_is_refused_and_not_kept(served):
    client, job_dir = served
    for change in ({"checksum": "ad:00000000"}, {"checksum": "md5:00"}):
        with pytest.raises(PilotError) as bad:
            copytools.stage_in(make_job(**change), str(job_dir), "http", "", "/trf/user/{lfn}", client, 10)
        assert bad.value.code == errors.GETMD5MISMATCH
        assert os.listdir(job_dir) == []
    import hashlib

    good = make_job(checksum=f"md5:{hashlib.md5(DATA).hexdigest()}")
    copytools.stage_in(good, str(job_dir), "http", "", "/trf/user/{lfn}", client, 10)
    assert os.listdir(job_dir) == ["in.dat"]


def test_a_download_cut_short_is_refused_and_not_kept(hostile, tmp_path):
    """A reply that ends before its Content-Length: refused even when the job names no size or checksum to check."""
    server = hostile(body=b"x" * 500, declared=1000)
    client = ServerClient(server.url, None, 10)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    with pytest.raises(PilotError) as cut:
        copytools.stage_in(make_job(fsize="0", checksum=""), str(job_dir), "http", "", "/files/{lfn}", client, 10)
    assert cut.value.code == errors.STAGEINFAILED and "1000" in str(cut.value)
    assert os.listdir(job_dir) == []


def test_a_download_longer_than_the_input_is_stopped_early(hostile, tmp_path):
    """A server that sends more than the job's fsize is cut off at once, not read to its end onto the disk."""
    server = hostile(declared=256 << 20, stream=True)
    client = ServerClient(server.url, None, 10)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    with pytest.raises(PilotError) as long:
        copytools.stage_in(make_job(checksum=""), str(job_dir), "http", "", "/files/{lfn}", client, 10)
    assert long.value.code == errors.STAGEINFAILED
    assert os.listdir(job_dir) == []
    server.close()  # its handler has given up once the pilot closed the connection
    assert server.sent < 64 << 20


def test_a_download_never_writes_through_a_link_planted_in_the_job_directory(served, tmp_path):
    client, job_dir = served
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not the pilot's to overwrite")
    os.symlink(victim, job_dir / "in.dat.part")
    copytools.stage_in(make_job(), str(job_dir), "http", "", "/trf/user/{lfn}", client, 10)
    assert (job_dir / "in.dat").read_bytes() == DATA and not os.path.islink(job_dir / "in.dat")
    assert victim.read_bytes() == b"not the pilot's to overwrite"
    assert sorted(os.listdir(job_dir)) == ["in.dat"]


@pytest.mark.parametrize("lfn", ["../escaped.dat", "sub/in.dat", ".."])
def test_an_input_name_that_is_not_a_plain_name_is_refused(site, tmp_path, lfn):
    client = ServerClient(site.server.url, site.token_file, 10)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    for tool, source in (("http", ""), ("copy", str(tmp_path))):
        with pytest.raises(PilotError) as refused:
            copytools.stage_in(make_job(inFiles=lfn), str(job_dir), tool, source, "/trf/user/{lfn}", client, 10)
        assert refused.value.code == errors.STAGEINFAILED and "plain file name" in str(refused.value)
    assert not os.path.exists(tmp_path / "escaped.dat") and os.listdir(job_dir) == []


def test_an_upload_the_server_finds_corrupt_is_refused_and_not_stored(site, tmp_path):
    """The adler32 sent with the file is what the server checks the bytes against: a mismatch (the file changed
    after it was measured, or bytes lost on the way) is 1172 and nothing is stored."""
    client = ServerClient(site.server.url, ADMIN(site), 10)
    job = Job({"PandaID": 1, "transformation": "x", "outFiles": "out.dat", "scopeOut": "o"})
    spec = job.outputs[0]
    spec.path = str(tmp_path / "out.dat")
    (tmp_path / "out.dat").write_bytes(DATA)
    spec.fsize, spec.adler32 = len(DATA), "00000001"
    with pytest.raises(PilotError) as corrupt:
        copytools.stage_out(spec, "http", "", 10, "/files/{scope}/{lfn}", client, measured=True)
    assert corrupt.value.code == errors.PUTADMISMATCH
    assert not os.path.exists(os.path.join(site.server.home, "files", "o", "out.dat"))


def test_large_outputs_go_by_sendfile_and_come_back_whole(site, tmp_path):
    """An output of several sendfile calls (4 MB each) uploaded, then downloaded as an input and verified; an
    upload past its time limit is 1152."""
    client = ServerClient(site.server.url, ADMIN(site), 30)
    data = os.urandom(9 * 1024 * 1024 + 3)
    job = Job({"PandaID": 1, "transformation": "x", "outFiles": "big.dat", "scopeOut": "o"})
    spec = job.outputs[0]
    spec.path = str(tmp_path / "big.dat")
    (tmp_path / "big.dat").write_bytes(data)
    copytools.stage_out(spec, "http", "", 30, "/files/{scope}/{lfn}", client)
    assert (spec.fsize, spec.adler32) == (len(data), f"{zlib.adler32(data):08x}")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    back = make_job(inFiles="big.dat", scopeIn="o", fsize=str(len(data)), checksum=f"ad:{spec.adler32}")
    copytools.stage_in(back, str(job_dir), "http", "", "/files/{scope}/{lfn}", client, 30)
    assert (job_dir / "big.dat").read_bytes() == data
    spec.lfn = "late.dat"
    with pytest.raises(PilotError) as late:
        copytools.stage_out(spec, "http", "", -10, "/files/{scope}/{lfn}", client)
    assert late.value.code == errors.STAGEOUTTIMEOUT
    assert not os.path.exists(os.path.join(site.server.home, "files", "o", "late.dat"))


def test_an_upload_over_tls_arrives_whole(tmp_path):
    """Through TLS (no sendfile there) the file goes in blocks; the server gets every byte."""
    import http.server
    import ssl
    import threading

    from test_pilot_comm import self_signed_certificate, without_proxies

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            data = self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"data": {"fsize": len(data), "adler32": f"{zlib.adler32(data):08x}"}}).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    cert_file, key_file = self_signed_certificate(str(tmp_path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "out.dat").write_bytes(data)
    code = ("import sys, json\nfrom pilot import comm\n"
            f"client = comm.ServerClient('https://localhost:{server.server_address[1]}')\n"
            f"print(json.dumps(client.upload({str(tmp_path / 'out.dat')!r}, '/files/o/out.dat', 'x')))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(without_proxies(), SSL_CERT_FILE=cert_file),
                             cwd=os.path.dirname(os.path.dirname(copytools.__file__)))
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"fsize": len(data), "adler32": f"{zlib.adler32(data):08x}"}


@pytest.mark.parametrize("tls", [False, True])
def test_an_upload_sends_its_declared_length_and_no_more(tmp_path, tls):
    """The body is the Content-Length measured when the file was opened: a file that grew since sends no extra
    byte (the server would read it as the next request), one that shrank fails instead of waiting forever."""
    import socket

    from pilot.comm import _DeadlineReader

    path = tmp_path / "out.dat"
    path.write_bytes(b"x" * 5000)

    class Wrapped:  # a socket that takes the TLS path (sendall of blocks), as an SSLSocket would
        def __init__(self, sock):
            self.sock, self._sslobj = sock, object()

        def sendall(self, data):
            self.sock.sendall(data)

    for length, whole in ((3000, True), (8000, False)):
        left, right = socket.socketpair()
        with left, right, open(path, "rb") as handle:
            body = _DeadlineReader(handle, None, length)
            if whole:
                body.send_to(Wrapped(left) if tls else left)
                left.shutdown(socket.SHUT_WR)
                received = b"".join(iter(lambda: right.recv(65536), b""))
                assert received == b"x" * 3000
            else:
                with pytest.raises(OSError) as short:
                    body.send_to(Wrapped(left) if tls else left)
                assert "5000 of the 8000" in str(short.value)
