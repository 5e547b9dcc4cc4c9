"""An answer sent before a request's body is received (a refused upload) reaches a client that sends its whole body
before it reads, over TLS as over plain HTTP: the server reads the unread body away after answering (a lingering
close, minipanda.server.bridge RsgiBridge.linger) instead of resetting the connection with it unread. Bounded: a client
that goes on sending, fast or slowly, or stops, is cut off, and no request thread waits on it. granian in this
process on loopback (its bounds set small per test), raw sockets as clients."""
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from minipanda.server.bridge import BODY_IN_MEMORY
from minipanda.server.http import HttpServer

BODY = 8 << 20  # over BODY_IN_MEMORY: judged on its headers before it is received


def certificate(directory):
    """(cert, key) of a self-signed certificate for 127.0.0.1 made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.fail("needs the openssl command to make a certificate")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


# time bounds no busy machine reaches while a client sends at full speed (the defaults, 2 s idle and 10 s in all, are
# for a client anywhere; here the bytes are what counts)
PATIENT = {"linger_idle": 60, "linger_seconds": 120}


def app(environ, start_response):
    """Refuses a request without an Authorization header unread (403); reads any other whole (201, its size)."""
    if "HTTP_AUTHORIZATION" not in environ:
        reply, status = {"message": "no token"}, "403 Forbidden"
    else:
        size = 0
        while True:
            block = environ["wsgi.input"].read(1 << 20)
            if not block:
                break
            size += len(block)
        reply, status = {"size": size}, "201 Created"
    body = json.dumps(reply).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(params=["plain", "tls"])
def serve(request, tmp_path):
    """serve(**bounds): an HttpServer for ``app`` on loopback (one request thread), its bridge's linger bounds set;
    connect() opens a client socket to it (TLS for the tls parameter)."""
    tls = certificate(tmp_path) if request.param == "tls" else (None, None)
    servers = []

    class Served:
        def __init__(self, bounds, body_limit):
            self.server = HttpServer.bind("127.0.0.1", 0, *tls)
            self.server.body_limit = body_limit
            self.server.start(app, threads=1)
            for name, value in bounds.items():
                setattr(self.server._bridge, name, value)

        def connect(self):
            sock = socket.create_connection(("127.0.0.1", self.server.effective_port), timeout=20)
            if tls[0]:
                context = ssl.create_default_context(cafile=tls[0])
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            return sock

    def start(body_limit=None, **bounds):
        servers.append(Served(bounds, body_limit))
        return servers[-1]

    yield start
    for served in servers:
        served.server.stop(drain=1)


def head(declared, token=False):
    lines = ["PUT /files/big.dat HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {declared}"]
    return ("\r\n".join(lines + (["Authorization: Bearer t"] if token else [])) + "\r\n\r\n").encode()


def read_answer(sock):
    """(status line, JSON body) of one reply framed by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection ended before a whole reply head: {data!r}"
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in header.split(b"\r\n") if line.lower().startswith(
        b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection ended inside the reply's body"
        body += chunk
    return header.split(b"\r\n")[0], json.loads(body)


def test_a_client_sending_its_whole_body_before_it_reads_gets_the_refusal_every_time(serve):
    """As urllib3 and requests do (they read after a broken pipe, not after an SSLEOFError): the body's send
    completes, then the answer is read; the connection then carries the next request."""
    served = serve(**PATIENT)
    assert BODY > BODY_IN_MEMORY
    for _ in range(4):
        with served.connect() as sock:
            sock.sendall(head(BODY) + bytes(BODY))
            assert read_answer(sock) == (b"HTTP/1.1 403 Forbidden", {"message": "no token"})
            sock.sendall(head(BODY, token=True) + bytes(BODY))  # the refused body was read away whole
            assert read_answer(sock) == (b"HTTP/1.1 201 Created", {"size": BODY})


def test_a_chunked_body_refused_midway_over_the_limit_is_read_away_too(serve):
    """Chunked, a body has no size to refuse it by before it is read: it is refused (413) once over the limit, and
    its rest (more than the kernel's buffers hold) is read away so the client's send completes."""
    served = serve(body_limit=16 << 20, **PATIENT)
    chunk = b"%x\r\n" % (1 << 20) + bytes(1 << 20) + b"\r\n"
    with served.connect() as sock:
        sock.sendall(b"PUT /files/big.dat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer t\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 30 + b"0\r\n\r\n")
        status, reply = read_answer(sock)
    assert status == b"HTTP/1.1 413 Payload Too Large" and "limit" in reply["message"], reply


def cut_off(sock, block, pause=0.0, most=1 << 40):
    """Send ``block`` after ``block`` (``pause`` s apart) until the server stops taking them or ``most`` bytes
    went; the bytes sent."""
    sent = 0
    try:
        while sent < most:
            sock.sendall(block)
            sent += len(block)
            time.sleep(pause)
    except OSError:  # reset or closed by the server (an SSLError or SSLEOFError through TLS)
        pass
    return sent


def test_a_client_that_sends_on_fast_is_cut_off_past_the_byte_bound(serve):
    served = serve(linger_bytes=2 << 20, linger_seconds=600, linger_idle=600)
    declared = 4 << 30
    with served.connect() as sock:
        sock.sendall(head(declared))
        sent = cut_off(sock, bytes(1 << 20), most=declared)
    # the bound plus what the kernel's buffers and granian's hold on the way: far from the 4 GiB declared
    assert sent < 256 << 20, sent


def test_a_client_that_sends_on_slowly_is_cut_off_past_the_time_bound_and_holds_no_request_thread(serve):
    served = serve(linger_bytes=1 << 40, linger_seconds=1, linger_idle=600)
    result = {}
    with served.connect() as sock:
        sock.sendall(head(1 << 30))
        sender = threading.Thread(target=lambda: result.update(sent=cut_off(sock, b"s" * 1024, 0.02, 30 << 20)))
        sender.start()
        with served.connect() as other:  # the only request thread still answers another client meanwhile
            other.sendall(head(10, token=True) + b"0123456789")
            assert read_answer(other) == (b"HTTP/1.1 201 Created", {"size": 10})
        sender.join(120)
    # cut off long before the 30 MiB that 1 KiB per 20 ms would take more than ten minutes to send
    assert not sender.is_alive() and result["sent"] < 30 << 20, result


def test_a_client_that_stops_sending_is_closed_after_the_idle_bound(serve):
    served = serve(linger_bytes=1 << 40, linger_seconds=600, linger_idle=0.5)
    with served.connect() as sock:
        sock.sendall(head(BODY) + bytes(1 << 16))
        assert read_answer(sock)[0] == b"HTTP/1.1 403 Forbidden"
        try:
            assert sock.recv(1) == b""  # closed by the server (the socket's 20 s timeout fails a server that waits)
        except ConnectionResetError:
            pass  # the unread rest of the declared body: a reset is as good a close here
