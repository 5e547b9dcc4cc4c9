"""A large request body (over BODY_IN_MEMORY: a file upload) is received only once the app reads it
(minipanda/server/bridge.py, RsgiBridge): a request refused on its headers is answered while its body has not been
sent, and nothing of it is spooled or stored; an admitted one is received with the same limit and deadline as any
body, and the app runs again with it (one access-log line). Real ``minipanda serve`` processes and raw sockets on
loopback."""
import json
import os
import socket
import zlib

import pytest
import requests
from conftest import ProcessServer

from minipanda.core import schema
from minipanda.server.bridge import BODY_IN_MEMORY

DECLARED = 50 << 20  # declared, never sent whole: the server must answer without it


@pytest.fixture
def server(tmp_path):
    class Server(ProcessServer):
        def argv(self):
            return super().argv() + ["--body-timeout", "3"]

    started = Server(tmp_path / "home", "sqlite:///" + str(tmp_path / "db.sqlite"))
    yield started
    started.stop()


def stored(server):
    root = os.path.join(server.home, "files")
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def start_upload(server, path, token=None, declared=DECLARED, sent=64 << 10, **headers):
    """A raw PUT declaring ``declared`` bytes that sends only ``sent`` of them; the socket."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    lines = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {declared}",
             "Content-Type: application/octet-stream"]
    lines += [f"Authorization: Bearer {token}"] if token else []
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * sent)
    return sock


def answer(sock):
    """The reply's status line and body, read until the server closes: it must (granian closes a connection whose
    request body was not read), or the unread body would be taken for the next request."""
    data = b""
    while True:
        chunk = sock.recv(65536)  # the socket's timeout (10 s) fails a server that waits for the body
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("case, status, words", [
    ("no token", 401, b"Authorization"),
    ("a bad token", 401, b""),
    ("a user's token", 403, b"role"),
    ("a pilot token naming no job", 400, b"X-PandaID: required"),
    ("a production token in another user's scope", 403, b"user.carol is another user's scope"),
    ("a name already stored", 409, b"already stored"),
])
def test_a_large_upload_refused_on_its_headers_is_answered_before_its_body_is_sent(server, case, status, words):
    path, token, headers = "/files/data/big.dat", None, {}
    if case == "a bad token":
        token = "not-a-token"
    elif case == "a user's token":
        token = server.token("user", "dave")
    elif case == "a pilot token naming no job":
        token, headers["X-Checksum"] = server.token("pilot", "p1"), "ad:00000001"
    elif case == "a production token in another user's scope":
        token, path = server.token("production", "prod"), "/files/user.carol/big.dat"
    elif case == "a name already stored":
        data = b"the stored bytes"
        requests.put(server.url + path, data=data, headers=dict(server.headers(), **{
            "X-Checksum": f"ad:{zlib.adler32(data):08x}"}), timeout=30).raise_for_status()
        token = server.admin_token
    before = stored(server)
    sock = start_upload(server, path, token, **headers)
    try:
        reply = answer(sock)
    finally:
        sock.close()
    assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:300]
    assert words in reply, reply[:600]
    assert stored(server) == before
    assert requests.get(server.url + "/server/panda/isAlive", timeout=10).text == "alive=yes"


def test_an_admitted_large_upload_is_received_whole_and_a_stalled_one_is_refused_and_leaves_nothing(server):
    data = os.urandom(BODY_IN_MEMORY + 12345)
    headers = dict(server.headers(), **{"X-Checksum": f"ad:{zlib.adler32(data):08x}"})
    reply = requests.put(server.url + "/files/data/whole.dat", data=data, headers=headers, timeout=60)
    assert reply.status_code == 201 and reply.json()["data"]["fsize"] == len(data), reply.text
    with open(os.path.join(server.home, "files", "data", "whole.dat"), "rb") as handle:
        assert handle.read() == data
    sock = start_upload(server, "/files/data/stalled.dat", server.admin_token, declared=len(data), sent=1000)
    try:
        reply = answer(sock)  # admitted, then nothing more for --body-timeout (3 s): 408
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"--body-timeout" in reply, reply[:300]
    assert stored(server) == ["data/whole.dat"]  # no part of the stalled one, not even its .part
    server.stop()  # its log complete
    access = [line for line in server.read_log().splitlines() if "minipanda.access" in line]
    assert sum("PUT /files/data/whole.dat 201 " in line for line in access) == 1  # the run with the body only
    assert not any("PUT /files/data/whole.dat -" in line for line in access), access


def test_a_chunked_upload_without_a_token_is_refused_before_its_body_ends(server):
    """A chunked body has no size to judge it by: it too is judged on its headers first, or a client could get any
    amount of body received and spooled before its refusal by merely chunking it."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        chunk = b"%x\r\n" % (64 << 10) + b"c" * (64 << 10) + b"\r\n"  # the body never ends: no last chunk
        sock.sendall(b"PUT /files/data/chunked.dat HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/octet-stream\r\n\r\n" + chunk)
        reply = answer(sock)
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 401") and b"Authorization" in reply, reply[:300]
    assert stored(server) == []


def test_an_api_call_without_a_token_is_refused_before_its_large_body_is_sent(server):
    """The token is checked before the parameters are read: a caller with no token gets its 401 without the server
    receiving the (declared 50 MiB) body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(f"POST /server/panda/getJob HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {DECLARED}\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n\r\nsiteName=Q&".encode())
        reply = answer(sock)
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 401") and b"Authorization" in reply, reply[:300]


def test_a_submit_over_the_in_memory_size_creates_each_job_once_and_logs_one_line(server):
    """An API call whose body is over BODY_IN_MEMORY runs the app twice (first without its body): the first run must
    change nothing, so every job is created once, and the access log has the run with the body only."""
    job = {"computingSite": "DEFERRED_Q", "transformation": "/bin/true", "prodSourceLabel": "managed",
           "jobParameters": "p" * 400}
    count = BODY_IN_MEMORY // 400 + 100
    body = json.dumps({"jobs": [dict(job, jobName=f"deferred.{i}") for i in range(count)]}).encode()
    assert len(body) > BODY_IN_MEMORY
    reply = requests.post(server.url + "/api/v1/job/submit", data=body, timeout=120,
                          headers=dict(server.headers(), **{"Content-Type": "application/json"}))
    assert reply.status_code == 200, reply.text[:300]
    server.stop()  # its log complete, its database left to this test
    database = schema.open_database(server.db_url)
    try:
        names = [row[0] for row in database.execute_sql('SELECT "job_name" FROM "job"').fetchall()]
    finally:
        database.close()
    assert sorted(names) == sorted(f"deferred.{i}" for i in range(count))
    access = [line for line in server.read_log().splitlines() if "minipanda.access" in line and "job/submit" in line]
    assert len(access) == 1, access


def test_a_request_pipelined_after_a_refused_upload_is_never_answered_as_a_request(server):
    """A refused upload's unread body, and what follows it on the connection, are never parsed as the next request
    (request smuggling): one answer, then the connection is closed."""
    follower = b"GET /server/panda/isAlive HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(f"PUT /files/data/smuggle.dat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {DECLARED}\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + follower + follower)
        reply = answer(sock)
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 401"), reply[:300]
    assert reply.count(b"HTTP/1.1 ") == 1 and b"alive=yes" not in reply, reply[:600]
