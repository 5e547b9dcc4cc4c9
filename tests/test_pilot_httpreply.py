"""The pilot's lighter HTTP head (pilot/httpreply.py) through pilot.httpclient, against a raw socket server on
loopback that sends exactly the bytes each test gives it: framing (chunked, Content-Length, Connection: close, the
end of the connection), the head's limits and what a hostile server may send."""
import socket
import threading

import pytest

from pilot import httpclient, httpreply


class CannedServer:
    """Accepts connections and answers each request with the next canned reply; records what arrived."""

    def __init__(self, replies, close_after=()):
        self.replies, self.close_after = list(replies), set(close_after)
        self.requests, self.connections, self.first_reads = [], 0, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def read_request(self, conn, pending):
        data = pending
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None, b""
            self.first_reads.append(chunk)
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(65536)
        return (head.split(b"\r\n")[0].decode(), rest[:length]), rest[length:]

    def serve(self):
        while self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            pending = b""
            with conn:
                while self.replies:
                    request, pending = self.read_request(conn, pending)
                    if request is None:
                        break
                    self.requests.append(request)
                    conn.sendall(self.replies.pop(0))
                    if len(self.requests) in self.close_after:
                        break

    def close(self):
        self.listener.close()
        httpclient._idle.clear()


@pytest.fixture
def canned():
    servers = []

    def start(*replies, close_after=()):
        server = CannedServer(replies, close_after)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def fetch(url, method="GET", body=None):
    with httpclient.request(method, url, body, {}, 10) as reply:
        return reply.status, reply.read(), reply


def test_a_chunked_reply_is_read_whole_and_its_connection_kept(canned):
    server = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert fetch(server.url + "/a")[:2] == (200, b"hello world")
    assert fetch(server.url + "/b")[:2] == (200, b"ok")
    assert server.connections == 1


def test_content_length_frames_the_body_and_keeps_the_connection(canned):
    server = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
    assert fetch(server.url + "/a")[:2] == (200, b"abc")
    assert fetch(server.url + "/b", "POST", b"{}")[:2] == (201, b"")
    assert server.connections == 1


def test_connection_close_is_honoured_and_the_next_request_opens_a_new_one(canned):
    server = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close_after=(1,))
    assert fetch(server.url + "/a")[:2] == (200, b"ok")
    assert not any(httpclient._idle.values())  # not kept: the next request does not try it first
    assert fetch(server.url + "/b")[:2] == (200, b"ok")
    assert server.connections == 2


def test_a_reply_without_length_is_read_to_the_end_of_the_connection(canned):
    server = canned(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", close_after=(1,))
    status, body, reply = fetch(server.url + "/a")
    assert (status, body) == (200, b"all of it")
    assert not httpclient._idle.get(("http", "127.0.0.1", int(server.url.rsplit(":", 1)[1])))


def test_a_100_continue_is_skipped_and_headers_read_as_http_client_reads_them(canned):
    server = canned(b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n"
                    b"HTTP/1.1 404 Not Found\r\nX-Twice: a\r\nx-twice: b\r\nX-Folded: one\r\n  two\r\nbad line\r\n"
                    b"Spaced Name: x\r\nContent-Length: 4\r\n\r\ngone")
    with pytest.raises(httpclient.HTTPError) as caught:
        fetch(server.url + "/a")
    assert (caught.value.code, caught.value.read()) == (404, b"gone")
    server = canned(b"HTTP/1.1 200 OK\r\nX-Twice: a\r\nx-twice: b\r\nX-Folded: one\r\n\ttwo\r\nContent-Length: 0\r\n\r\n")
    _, _, reply = fetch(server.url + "/b")
    headers = reply.response.headers
    assert reply.getheader("X-TWICE") == "a, b" and headers.get("x-twice") == "a"
    assert headers.get_all("X-Twice") == ["a", "b"] and headers.get_all("X-None") is None
    assert reply.getheader("x-folded") == "one two" and reply.getheader("X-None", "d") == "d"
    assert "content-length" in headers and len(headers) == 4


@pytest.mark.parametrize("head, why", [
    (b"".join(b"X-%d: v\r\n" % n for n in range(httpreply.MAX_HEADERS + 1)), "more than 100 headers"),
    (b"X-Long: " + b"v" * httpreply.MAX_LINE + b"\r\n", "a line over the limit"),
    (b"".join(b"X-%d: %s\r\n" % (n, b"v" * 60000) for n in range(5)), "a head over the limit"),
    (b"Content-Length: 2\r\nContent-Length: 20\r\n", "two Content-Lengths"),
])
def test_a_hostile_head_is_refused(canned, head, why):
    server = canned(b"HTTP/1.1 200 OK\r\n" + head + b"\r\nok")
    with pytest.raises(OSError):
        fetch(server.url + "/a")
    assert not any(httpclient._idle.values()), why  # its connection is not kept


def test_the_same_content_length_twice_is_one(canned):
    server = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok")
    assert fetch(server.url + "/a")[:2] == (200, b"ok")


def test_a_small_body_goes_out_with_its_head_in_one_send(canned):
    server = canned(*[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"] * 2)
    sends = []
    connection_class = httpclient.lean_connection_class("http")
    original = connection_class.send
    body = b'{"job": 1}'
    big = b"b" * (httpreply.ONE_SEND + 1)
    try:
        connection_class.send = lambda self, data: (sends.append(bytes(data)), original(self, data))[1]
        fetch(server.url + "/small", "POST", body)
        fetch(server.url + "/big", "POST", big)
    finally:
        connection_class.send = original
    assert len(sends) == 3, [len(s) for s in sends]
    assert sends[0].startswith(b"POST /small HTTP/1.1\r\n") and sends[0].endswith(b"\r\n\r\n" + body)
    assert sends[1].endswith(b"\r\n\r\n") and sends[2] == big  # a large body: http.client's own way
    assert server.requests == [("POST /small HTTP/1.1", body), ("POST /big HTTP/1.1", big)]
