"""The pilot's HTTP client on loopback: one kept-open connection per server, and what happens when it goes stale."""
import fcntl
import http.server
import io
import socket
import ssl
import struct
import termios
import threading
import time

import pytest

from pilot import httpclient


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise
    seen = []  # (client port, method, body) per request
    drop_after_reply = False  # close each connection after its reply, without saying so (an idle timeout)

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.client_address[1], self.command, body))
        reply = b"x" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        if self.drop_after_reply:
            self.close_connection = True

    do_GET = do_POST = do_PUT = handle_one

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Recorder.seen, Recorder.drop_after_reply = [], False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    httpclient._idle.clear()


def get(url, method="GET", body=None, headers=None):
    with httpclient.request(method, url, body, headers or {}, 10) as reply:
        return reply.read()


def test_requests_to_one_server_share_one_kept_connection(server):
    for _ in range(3):
        assert get(server + "/a") == b"x" * 100
    get(server + "/b", "POST", b"{}")
    assert len({port for port, _, _ in Recorder.seen}) == 1, Recorder.seen


def test_a_reply_not_read_to_its_end_closes_its_connection(server):
    with httpclient.request("GET", server + "/a", None, {}, 10) as reply:
        assert reply.read(10) == b"x" * 10
    get(server + "/b")
    assert len({port for port, _, _ in Recorder.seen}) == 2, Recorder.seen


def test_a_connection_the_server_closed_is_replaced_and_the_request_sent_once(server):
    Recorder.drop_after_reply = True
    get(server + "/a")
    assert get(server + "/b", "POST", b'{"n": 1}') == b"x" * 100
    assert get(server + "/c", "PUT", io.BytesIO(b"file body"), {"Content-Length": "9"}) == b"x" * 100  # a file body is rewound
    assert [(method, body) for _, method, body in Recorder.seen] == [
        ("GET", b""), ("POST", b'{"n": 1}'), ("PUT", b"file body")]
    assert len({port for port, _, _ in Recorder.seen}) == 3


def test_a_request_begun_is_sent_at_once_and_its_connection_kept_beside_the_other(server):
    for n in range(3):  # a pilot's cycle: getJob begun, the log uploaded meanwhile, then getJob's answer read
        body = f'{{"n": {n}}}'.encode()
        pending = httpclient.begin("POST", server + "/getjob", body, {}, 10)
        deadline = time.monotonic() + 30
        while len(Recorder.seen) < 2 * n + 1 and time.monotonic() < deadline:  # sent before result() is called
            time.sleep(0.01)
        assert Recorder.seen[-1][1:] == ("POST", body)
        assert get(server + "/upload", "PUT", b"log") == b"x" * 100  # meanwhile, on the other connection
        with pending.result() as reply:
            assert reply.read() == b"x" * 100
    assert len(Recorder.seen) == 6
    assert len({port for port, _, _ in Recorder.seen}) == 2, Recorder.seen  # both kept: no new one per cycle


def test_a_request_begun_on_a_connection_the_server_closed_is_sent_once_on_a_new_one(server):
    Recorder.drop_after_reply = True
    get(server + "/a")
    pending = httpclient.begin("POST", server + "/getjob", b'{"n": 2}', {}, 10)
    with pending.result() as reply:
        assert reply.read() == b"x" * 100
    assert [(method, body) for _, method, body in Recorder.seen] == [("GET", b""), ("POST", b'{"n": 2}')]


def test_a_begun_request_without_any_answer_on_a_kept_connection_is_sent_again_on_a_new_one():
    """The server closes a kept connection as the request arrives (its idle timeout): no answer at all came back,
    so the request is sent once more, on a new connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen = []  # (connection number, request line)
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        length = int(lengths[0]) if lengths else 0
        while len(body) < length:
            body += conn.recv(4096)
        return head.split(b"\r\n")[0].decode()

    def serve():
        first, _ = listener.accept()
        seen.append((1, read_request(first)))
        first.sendall(reply)
        seen.append((1, read_request(first)))
        first.close()  # no answer to the second request
        second, _ = listener.accept()
        seen.append((2, read_request(second)))
        second.sendall(reply)
        second.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        assert get(url + "/a") == b"ok"
        with httpclient.begin("POST", url + "/getjob", b"{}", {}, 10).result() as answer:
            assert answer.read() == b"ok"
        thread.join(10)
    finally:
        listener.close()
        httpclient._idle.clear()
    assert seen == [(1, "GET /a HTTP/1.1"), (1, "POST /getjob HTTP/1.1"), (2, "POST /getjob HTTP/1.1")]


class Files(http.server.BaseHTTPRequestHandler):
    """A file server in the small: GET answers BODY, PUT reads its body, POST answers a small JSON reply."""

    protocol_version = "HTTP/1.1"
    BODY = bytes(range(256)) * 3000  # 768,000 bytes: three of the pilot's 256 KiB reads and a part
    seen = []  # (client port, method, bytes received)

    def do_GET(self):
        self.seen.append((self.client_address[1], "GET", 0))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def do_PUT(self):
        received = len(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.client_address[1], "PUT", received))
        self.answer(b'{"success": true, "data": {}}')

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.client_address[1], "POST", 0))
        self.answer(b'{"StatusCode": 0}')

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_stage_in_download_and_a_stage_out_upload_go_over_the_kept_connection(tmp_path):
    """A files job's GET of its input (read by blocks into the pilot's buffer) and PUT of its output (sent by
    sendfile) leave their connection kept for the next exchange, as a small request does: the job's reports, its
    input and its output go over ONE connection, not a new one per file."""
    from pilot import comm
    from pilot.fileutil import Digest

    Files.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = comm.ServerClient(f"http://127.0.0.1:{httpd.server_address[1]}", timeout=10)
        client.call("/server/panda/getJob", {"siteName": "X"})
        digest = Digest("adler32")
        assert client.download("/files/in/input.dat", str(tmp_path / "input.dat"), digest=digest) == len(Files.BODY)
        output = tmp_path / "output.dat"
        output.write_bytes(Files.BODY[::-1])
        client.upload(str(output), "/files/out/output.dat", "00000001", panda_id=7)
        client.call("/server/panda/updateJob", {"jobId": 7, "state": "finished"})
    finally:
        httpd.shutdown()
        httpd.server_close()
        httpclient._idle.clear()
    assert [(method, size) for _, method, size in Files.seen] == [
        ("POST", 0), ("GET", 0), ("PUT", len(Files.BODY)), ("POST", 0)]
    assert len({port for port, _, _ in Files.seen}) == 1, Files.seen
    assert (tmp_path / "input.dat").read_bytes() == Files.BODY


class EarlyAnswer:
    """A server on loopback (plain, or TLS with ``cert``) that answers each request ``status`` as soon as its head
    has come, without reading its body, then closes once the client has taken the answer (acknowledged every byte):
    the connection is reset under the client still sending, as a server that answers an upload early and does not
    read its body away resets it. (Closed sooner, the reset may drop the answer itself before it leaves: the
    server's side of the race, which only its reading the body away settles.) Its answer says nothing of closing
    (keep-alive framing): only the client can know its body was cut short."""

    def __init__(self, status, cert=None):
        self.status, self.answered = status, 0
        self.context = None
        if cert:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*cert)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.key = ("https" if cert else "http", "127.0.0.1", self.listener.getsockname()[1])
        self.url = "%s://%s:%d" % self.key
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                body = b'{"message": "refused early"}'
                conn.sendall(b"HTTP/1.1 %d Early\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % (self.status, len(body)) + body)
                self.answered += 1
                for _ in range(1000):  # at most 10 s: the client is sending, so it acknowledges at once
                    if not unacknowledged(conn):
                        break
                    time.sleep(0.01)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.listener.close()


def unacknowledged(sock):
    """Bytes sent on ``sock`` that its peer has not acknowledged yet (Linux's SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


@pytest.fixture(params=["plain", "tls"])
def early(request, tmp_path, monkeypatch):
    """early(status): an EarlyAnswer server over the parameter's transport, trusted by the pilot's client."""
    from test_server_http_linger import certificate

    cert = None
    if request.param == "tls":
        cert = certificate(tmp_path)
        monkeypatch.setenv("SSL_CERT_FILE", cert[0])  # the pilot verifies against the system's CAs: this one
    servers = []

    def start(status):
        servers.append(EarlyAnswer(status, cert))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
    httpclient._idle.clear()


BIG = bytes(32 << 20)  # far more than the kernel's buffers hold: the send fails once the server has closed


def test_an_answer_sent_before_the_body_was_taken_is_read_after_the_send_failed(early):
    """Over TLS the failed send is an SSLEOFError (or another SSLError), not a broken pipe: the answer waiting on the
    wire is read all the same, every time, and the connection is not kept (its body was cut short)."""
    server = early(403)
    for _ in range(4):
        with pytest.raises(httpclient.HTTPError) as refused:
            get(server.url + "/files/user.carol/big.dat", "PUT", BIG, {"Content-Length": str(len(BIG))})
        assert refused.value.code == 403 and refused.value.read() == b'{"message": "refused early"}'
        assert not httpclient._idle.get(server.key), httpclient._idle
    assert server.answered == 4


def test_a_success_answered_before_the_body_was_sent_whole_is_not_taken(early):
    """A body not sent whole is never taken as stored, whatever the server says."""
    server = early(201)
    with pytest.raises(OSError) as failed:
        get(server.url + "/files/data/big.dat", "PUT", BIG, {"Content-Length": str(len(BIG))})
    assert not isinstance(failed.value, httpclient.HTTPError), failed.value
    assert server.answered == 1 and not httpclient._idle.get(server.key)
