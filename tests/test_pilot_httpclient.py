"""The pilot's HTTP client on loopback: one kept-open connection per server, and what happens when it goes stale."""
import http.server
import io
import threading

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
