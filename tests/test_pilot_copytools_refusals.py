"""How an http stage-out reacts to the server's answers (pilot/copytools.py): a 403 is the server refusing the file,
so the stage-out fails at once (1137) with the server's reason logged; a 5xx, a 401 or no connection is transient
and tried again up to ``tries`` times."""
import http.server
import json
import logging
import socket
import threading

import pytest

from pilot import copytools, errors
from pilot.comm import ServerClient
from pilot.errors import PilotError
from pilot.jobdata import Job

pytest_plugins = ["test_pilot_harness"]  # the site fixture (a real minipanda serve and a pilot token)

DATA = b"an output\n"


def output(tmp_path, panda_id=1, scope="o"):
    job = Job({"PandaID": panda_id, "transformation": "x", "outFiles": "out.dat", "scopeOut": scope})
    spec = job.outputs[0]
    spec.path = str(tmp_path / "out.dat")
    (tmp_path / "out.dat").write_bytes(DATA)
    return spec


@pytest.mark.parametrize("size", [len(DATA), 3 << 20, 40 << 20], ids=["small", "3MiB", "40MiB"])
def test_a_403_from_the_real_server_fails_the_stage_out_at_once_with_its_reason(site, tmp_path, caplog, size):
    """A pilot token naming its job but another user's scope: the server refuses (403); the pilot does not send
    the file again, fails with 1137 and logs the server's reason. A file over 1 MiB is refused before the server
    receives it (minipanda.server.unreceived): the pilot still reads the refusal, not a broken connection."""
    site.submit(Files=[{"type": "output", "lfn": "out.dat", "scope": "o"}])
    client = ServerClient(site.server.url, site.token_file, 10)
    job = Job(client.get_job({"computingElement": "TEST_PQ"}))
    spec = output(tmp_path, job.panda_id)
    (tmp_path / "out.dat").write_bytes(DATA * (size // len(DATA)))
    sleeps = []
    with caplog.at_level(logging.WARNING, logger="pilot.copytools"), pytest.raises(PilotError) as refused:
        copytools.stage_out(spec, "http", "", 10, "/files/user.bob/{lfn}", client, tries=5, backoff=0.01,
                            sleep=sleeps.append, panda_id=job.panda_id)
    assert refused.value.code == errors.STAGEOUTFAILED
    assert "403" in refused.value.diag and "user.bob is a user's scope" in refused.value.diag
    assert sleeps == []  # not tried again
    logged = [r.getMessage() for r in caplog.records]
    assert any("refused by the server (HTTP 403)" in m and "user.bob is a user's scope" in m for m in logged), logged
    assert not any("try 1 of 5" in m for m in logged), logged


class Scripted:
    """An HTTP server on loopback answering each PUT with the next (status, message) of ``answers``; counts them."""

    def __init__(self, answers):
        self.answers, self.puts = list(answers), 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, message = owner.answers[min(owner.puts, len(owner.answers) - 1)]
                owner.puts += 1
                body = json.dumps({"success": status < 300, "message": message,
                                   "data": {"adler32": self.headers["X-Checksum"][3:]}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(answers):
        servers.append(Scripted(answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("answers, puts, code", [
    ([(503, "busy"), (502, "bad gateway"), (201, "stored")], 3, None),  # transient, then stored
    ([(401, "token expired"), (201, "stored")], 2, None),  # harvester may renew the token file meanwhile
    ([(503, "busy")], 4, errors.STAGEOUTFAILED),  # transient every time: 1137 once the tries are spent
    ([(503, "busy"), (403, "scope: user.bob is a user's scope")], 2, errors.STAGEOUTFAILED),  # refused: at once
])
def test_transient_answers_are_tried_again_and_a_refusal_is_not(scripted, tmp_path, answers, puts, code):
    server = scripted(answers)
    spec, sleeps = output(tmp_path), []
    call = lambda: copytools.stage_out(spec, "http", "", 10, "/files/{scope}/{lfn}",  # noqa: E731
                                       ServerClient(server.url, None, 10), tries=4, backoff=0.01,
                                       sleep=sleeps.append, panda_id=1)
    if code is None:
        call()
        assert spec.surl == server.url + "/files/o/out.dat"
    else:
        with pytest.raises(PilotError) as failed:
            call()
        assert failed.value.code == code and answers[-1][1] in failed.value.diag
    assert server.puts == puts and len(sleeps) == puts - 1


def test_no_connection_is_tried_again_then_1137(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = []
    with pytest.raises(PilotError) as failed:
        copytools.stage_out(output(tmp_path), "http", "", 10, "/files/{scope}/{lfn}",
                            ServerClient(f"http://127.0.0.1:{port}", None, 10), tries=3, backoff=0.01,
                            sleep=sleeps.append, panda_id=1)
    assert failed.value.code == errors.STAGEOUTFAILED and len(sleeps) == 2
