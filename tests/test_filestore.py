"""The server's file store over real HTTP: PUT /files/<scope>/<lfn> and GET/HEAD of the stored file. Files are PUT
with the admin's token (a manager stores any name): which job's files a pilot's token may PUT is
tests/test_api_stageout.py."""
import http.client
import io
import os
import zlib

import pytest
import requests

DATA = b"stored bytes\n" * 100
ADLER = f"{zlib.adler32(DATA):08x}"


def put(server, path, data=DATA, token=None, checksum=ADLER, **headers):
    if checksum:
        headers["X-Checksum"] = f"ad:{checksum}"
    headers.update(server.headers(token))
    return requests.put(server.url + path, data=data, headers=headers, timeout=30)


def stored(server, scope, lfn):
    return os.path.join(server.home, "files", scope, lfn)


def leftovers(server):
    """Every file under the store (temporary ones included)."""
    root = os.path.join(server.home, "files")
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_upload_then_download(sqlite_server):
    server = sqlite_server
    token = server.token("pilot", "p1")
    reply = put(server, "/files/user.me/out-1.dat")
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["success"] is True
    assert body["data"] == {"scope": "user.me", "lfn": "out-1.dat", "fsize": len(DATA), "adler32": ADLER,
                            "url": server.url + "/files/user.me/out-1.dat"}
    with open(stored(server, "user.me", "out-1.dat"), "rb") as handle:
        assert handle.read() == DATA
    auth = server.headers(token)
    got = requests.get(server.url + "/files/user.me/out-1.dat", headers=auth, timeout=30)
    assert got.status_code == 200 and got.content == DATA
    head = requests.head(server.url + "/files/user.me/out-1.dat", headers=auth, timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(DATA)
    missing = requests.get(server.url + "/files/user.me/nothere.dat", headers=auth, timeout=30)
    assert missing.status_code == 404 and "nothere.dat" in missing.json()["message"]
    assert leftovers(server) == ["user.me/out-1.dat"]


def test_checksum_or_length_mismatch_is_refused_and_nothing_kept(sqlite_server):
    server = sqlite_server
    reply = put(server, "/files/sc/bad.dat", checksum="00000001")
    assert reply.status_code == 400 and "X-Checksum" in reply.json()["message"]
    assert ADLER in reply.json()["message"]
    malformed = put(server, "/files/sc/bad.dat", checksum=None, **{"X-Checksum": "md5:abc"})
    assert malformed.status_code == 400 and "X-Checksum" in malformed.json()["message"]
    # a body shorter than its Content-Length: sent raw, since clients would not send it
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("PUT", "/files/sc/short.dat")
    for key, value in dict(server.headers(), **{"Content-Length": "100"}).items():
        conn.putheader(key, value)
    conn.endheaders(b"only ten b")
    conn.sock.shutdown(1)
    try:  # the HTTP server may drop an incomplete request before the application sees it; either way nothing is stored
        assert conn.getresponse().status == 400
    except http.client.RemoteDisconnected:
        pass
    conn.close()
    assert leftovers(server) == []
    # no checksum header: the server computes and reports it
    plain = put(server, "/files/sc/plain.dat", checksum=None)
    assert plain.status_code == 201 and plain.json()["data"]["adler32"] == ADLER


def test_same_content_is_idempotent_and_different_content_conflicts(sqlite_server):
    server = sqlite_server
    assert put(server, "/files/sc/f.dat").status_code == 201
    again = put(server, "/files/sc/f.dat")
    assert again.status_code == 200 and "already stored" in again.json()["message"]
    other = b"other content\n"
    conflict = put(server, "/files/sc/f.dat", data=other, checksum=f"{zlib.adler32(other):08x}")
    assert conflict.status_code == 409 and conflict.json()["success"] is False
    with open(stored(server, "sc", "f.dat"), "rb") as handle:
        assert handle.read() == DATA
    assert leftovers(server) == ["sc/f.dat"]


@pytest.mark.parametrize("path, field", [
    ("/files/../x.dat", "scope"), ("/files/%2e%2e/x.dat", "scope"), ("/files/sc/..", "lfn"),
    ("/files/sc/%2e%2e", "lfn"), ("/files/.hidden/x.dat", "scope"), ("/files/sc/.hidden", "lfn"),
    ("/files/sc/a/b", "lfn"), ("/files/sc/a%2Fb", "lfn"), ("/files/sc/..%2F..%2Fetc", "lfn"),
    ("/files/sc/" + "x" * 256, "lfn"), ("/files/sc/a%20b", "lfn"), ("/files/sc/%00", "lfn"),
    ("/files/sc%0A/x.dat", "scope")])  # a pattern's '$' matches before a trailing newline: a directory "sc\n"
def test_unsafe_names_are_refused(sqlite_server, path, field):
    server = sqlite_server
    for method in ("PUT", "GET"):
        # raw requests: a client would normalise '..' away before sending
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request(method, path, body=DATA if method == "PUT" else None, headers=server.headers())
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        assert 400 <= response.status < 500, (method, path, response.status, text)
        if response.status == 400:
            assert text and field in text, (method, path, text)
    assert leftovers(server) == []
    assert not os.path.exists(os.path.join(server.home, "x.dat"))


def test_put_needs_a_token_with_a_pilot_role(sqlite_server):
    server = sqlite_server
    anonymous = requests.put(server.url + "/files/sc/a.dat", data=DATA, timeout=30)
    assert anonymous.status_code == 401 and "Authorization" in anonymous.json()["message"]
    user = put(server, "/files/sc/a.dat", token=server.token("user", "someone"))
    assert user.status_code == 403
    assert leftovers(server) == []
    assert put(server, "/files/sc/a.dat", token=server.token("production", "prod")).status_code == 201


def test_body_limit(tmp_path):
    from conftest import LiveServer

    class SmallServer(LiveServer):
        def argv(self):
            return super().argv() + ["--max-body-mb", "0.001"]

    server = SmallServer(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "db.sqlite"))
    try:
        reply = put(server, "/files/sc/big.dat", data=b"x" * 5000, checksum=None)
        assert reply.status_code == 413, reply.text
        assert leftovers(server) == []
    finally:
        server.stop()


def test_reads_need_a_token_and_users_read_only_their_own_and_shared_scopes(sqlite_server):
    server = sqlite_server
    pilot = server.token("pilot", "p1")
    for path in ("/files/user.user2/secret.dat", "/files/user.me/mine.dat", "/files/mc23/shared.dat"):
        assert put(server, path).status_code == 201
    assert requests.get(server.url + "/files/user.user2/secret.dat", timeout=30).status_code == 401
    me = server.headers(server.token("user", "me"))
    refused = requests.get(server.url + "/files/user.user2/secret.dat", headers=me, timeout=30)
    assert refused.status_code == 403 and "scope" in refused.json()["message"] and DATA not in refused.content
    for path in ("/files/user.me/mine.dat", "/files/mc23/shared.dat"):
        assert requests.get(server.url + path, headers=me, timeout=30).content == DATA
    assert requests.get(server.url + "/files/user.user2/secret.dat", headers=server.headers(pilot),
                        timeout=30).content == DATA


def test_a_symlink_inside_the_store_pointing_outside_is_refused_for_get_and_put(sqlite_server, tmp_path):
    server = sqlite_server
    token = server.token("pilot", "p1")
    assert put(server, "/files/sc/real.dat").status_code == 201
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dat").write_bytes(b"not for pilots")
    scope_dir = os.path.join(server.home, "files", "sc")
    os.symlink(str(outside / "secret.dat"), os.path.join(scope_dir, "link.dat"))
    os.symlink(str(outside), os.path.join(server.home, "files", "escape"))
    got = requests.get(server.url + "/files/sc/link.dat", headers=server.headers(token), timeout=30)
    assert got.status_code == 400 and "outside the file store" in got.json()["message"]
    assert b"not for pilots" not in got.content
    stored = put(server, "/files/escape/new.dat")
    assert stored.status_code == 400 and "outside the file store" in stored.json()["message"]
    assert sorted(os.listdir(outside)) == ["secret.dat"]


def test_any_symlink_in_the_store_is_refused_even_one_pointing_inside_it(sqlite_server, tmp_path):
    """A name is never followed through a link: not at the file, not at its scope, wherever the link points."""
    server = sqlite_server
    token = server.token("pilot", "p1")
    assert put(server, "/files/sc/real.dat").status_code == 201
    os.symlink("real.dat", os.path.join(server.home, "files", "sc", "alias.dat"))
    os.symlink("sc", os.path.join(server.home, "files", "alias"))
    for path in ("/files/sc/alias.dat", "/files/alias/real.dat"):
        got = requests.get(server.url + path, headers=server.headers(token), timeout=30)
        assert got.status_code == 400 and "symbolic link" in got.json()["message"], path
    stored_put = put(server, "/files/alias/other.dat")
    assert stored_put.status_code == 400 and "symbolic link" in stored_put.json()["message"]
    assert "other.dat" not in os.listdir(os.path.join(server.home, "files", "sc"))


@pytest.mark.parametrize("environ", [
    {"HTTP_HOST": "panda.example.org:8443", "wsgi.url_scheme": "https"},
    {"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "25080"},
    {"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "80", "SCRIPT_NAME": "/panda/"},
    {"HTTP_HOST": "a:1", "HTTP_X_FORWARDED_HOST": "b:2", "HTTP_X_FORWARDED_PROTO": "https", "SCRIPT_NAME": "/x"},
])
def test_a_stored_files_url_is_the_one_bottle_gives(environ):
    import bottle

    from minipanda.api import files

    environ = dict({"REQUEST_METHOD": "PUT", "PATH_INFO": "/files/sc/a.dat", "wsgi.url_scheme": "http"}, **environ)
    bottle.request.bind(environ)
    parts = bottle.request.urlparts
    assert files._url("sc", "a.dat") == \
        f"{parts.scheme}://{parts.netloc}{bottle.request.script_name.rstrip('/')}/files/sc/a.dat"


def raw_put(server, path, declared, sent, token=None):
    """A PUT whose headers declare ``declared`` bytes, of which ``sent`` are sent: the open connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("PUT", path)
    for key, value in dict(server.headers(token), **{"Content-Length": str(declared)}).items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.sock.sendall(b"x" * sent)
    return conn


def test_a_large_body_cut_short_is_refused_and_nothing_kept(sqlite_server):
    """A body read whole (from 64 KB up to 1 MB, minipanda.server.bridge) that ends before its Content-Length: 400,
    never stored as if it were the whole file."""
    server = sqlite_server
    conn = raw_put(server, "/files/sc/cut.dat", 300_000, 150_000)
    conn.sock.shutdown(1)
    try:
        assert conn.getresponse().status == 400
    except (http.client.RemoteDisconnected, ConnectionResetError):
        pass
    conn.close()
    assert leftovers(server) == []


def test_a_large_body_that_stalls_is_answered_408_and_nothing_kept(tmp_path):
    from conftest import LiveServer

    class Server(LiveServer):
        def argv(self):
            return super().argv() + ["--body-timeout", "1"]

    server = Server(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "db.sqlite"))
    try:
        # 100 KB: within 1 s + 100 KB / 32 KB/s, i.e. ~4 s, or 408
        conn = raw_put(server, "/files/sc/stalled.dat", 100_000, 50_000)
        reply = conn.sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        conn.close()
        assert leftovers(server) == []
    finally:
        server.stop()


def test_chunked_upload_over_the_limit_is_refused_and_nothing_kept(tmp_path):
    """No Content-Length (chunked): refused once the bytes received pass the limit, nothing stored."""
    from conftest import LiveServer

    class SmallServer(LiveServer):
        def argv(self):
            return super().argv() + ["--max-body-mb", "0.001"]

    server = SmallServer(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "db.sqlite"))
    try:
        reply = requests.put(server.url + "/files/sc/big.dat", data=iter([b"x" * 4000] * 3),
                             headers=server.headers(), timeout=30)
        assert reply.status_code == 413, reply.text
        assert leftovers(server) == []
    finally:
        server.stop()


def test_large_files_round_trip_and_ranges_are_served(sqlite_server):
    """A file sent by granian from its path (whole GET) and by blocks (a Range): the stored bytes exactly."""
    server = sqlite_server
    data = os.urandom(3 * 1024 * 1024 + 17)
    auth = server.headers(server.token("pilot", "p1"))
    reply = put(server, "/files/sc/big.dat", data=data, checksum=f"{zlib.adler32(data):08x}")
    assert reply.status_code == 201, reply.text
    got = requests.get(server.url + "/files/sc/big.dat", headers=auth, timeout=30)
    assert got.status_code == 200 and got.content == data
    assert int(got.headers["Content-Length"]) == len(data)
    part = requests.get(server.url + "/files/sc/big.dat", headers=dict(auth, Range="bytes=1000-1999"), timeout=30)
    assert part.status_code == 206 and part.content == data[1000:2000]


class CountingStream:
    """A body of ``size`` zero bytes made up as it is read (nothing held in memory), counting what was read; each
    read checks that nothing under ``scope_dir`` but hidden temporaries exists yet."""

    def __init__(self, size, scope_dir=None):
        self.size, self.given, self.scope_dir = size, 0, scope_dir

    def read(self, amount=-1):
        if self.scope_dir and os.path.isdir(self.scope_dir):
            assert [name for name in os.listdir(self.scope_dir) if not name.startswith(".")] == []
        amount = self.size - self.given if amount is None or amount < 0 else min(amount, self.size - self.given)
        self.given += amount
        return bytes(amount)


def test_the_store_stops_reading_at_its_limit(tmp_path):
    """A body without a declared length is read only up to the limit (plus one block) before the refusal: a hostile
    upload cannot fill the disk."""
    from minipanda.core import filestore
    from minipanda.errors import RequestError

    store = filestore.FileStore(str(tmp_path / "files"))
    large = CountingStream(32 * filestore.BLOCK)  # bounded: a store that ignored its limit would still not fill a disk
    with pytest.raises(RequestError) as refused:
        store.put("sc", "huge.dat", large, None, 2 * filestore.BLOCK)
    assert refused.value.http == 413
    assert large.given <= 3 * filestore.BLOCK
    assert os.listdir(tmp_path / "files" / "sc") == []


def test_an_upload_is_visible_only_once_whole_and_checked(tmp_path):
    """While the body is read, the file's name does not exist (the bytes go to a hidden temporary); a body whose
    checksum is wrong never appears; a right one appears whole."""
    from minipanda.core import filestore
    from minipanda.errors import RequestError

    store = filestore.FileStore(str(tmp_path / "files"))
    scope_dir = str(tmp_path / "files" / "sc")
    size = 3 * filestore.BLOCK + 5
    zeros = f"{zlib.adler32(bytes(size)):08x}"
    with pytest.raises(RequestError):
        store.put("sc", "f.dat", CountingStream(size, scope_dir), size, 1 << 30, "00000001")
    assert os.listdir(scope_dir) == []
    created, info = store.put("sc", "f.dat", CountingStream(size, scope_dir), size, 1 << 30, zeros)
    assert created and info["fsize"] == size and info["adler32"] == zeros
    assert os.listdir(scope_dir) == ["f.dat"] and os.path.getsize(os.path.join(scope_dir, "f.dat")) == size


def test_a_file_reply_is_sent_from_its_path_only_while_the_path_names_the_open_file(tmp_path):
    from minipanda.server.filereply import FileReply, sendable_path

    path = tmp_path / "stored.dat"
    path.write_bytes(b"stored")
    reply = FileReply(open(path, "rb"))
    assert sendable_path(reply) == str(path)
    os.replace(path, tmp_path / "moved.dat")
    path.write_bytes(b"another file under the same name")
    assert sendable_path(reply) is None  # sent by blocks from the file the app opened
    assert b"".join(reply) == b"stored"
    reply.close()
    os.unlink(path)
    os.symlink(tmp_path / "moved.dat", path)
    linked = FileReply(open(path, "rb"))
    assert sendable_path(linked) is None
    linked.close()


def test_a_small_file_reply_is_read_whole_from_the_handle_the_app_opened(tmp_path):
    from minipanda.server import filereply
    from minipanda.server.filereply import FileReply, sendable_path, whole_content

    path = tmp_path / "stored.dat"
    path.write_bytes(b"stored")
    reply = FileReply(open(path, "rb"))
    os.replace(path, tmp_path / "moved.dat")
    path.write_bytes(b"another file under the same name")
    assert whole_content(reply) == b"stored"  # the file the app opened and checked, whatever the path names now
    reply.close()
    big = tmp_path / "big.dat"
    big.write_bytes(b"b" * (filereply.WHOLE + 1))
    large = FileReply(open(big, "rb"))
    assert whole_content(large) is None and large.handle.tell() == 0  # too large: left for granian, by its path
    assert sendable_path(large) == str(big)
    large.close()
    started = FileReply(open(tmp_path / "moved.dat", "rb"))
    started.handle.read(2)
    assert whole_content(started) is None and sendable_path(started) is None  # not from its start: by blocks
    assert b"".join(started) == b"ored"
    started.close()
    read_end, write_end = os.pipe()
    os.write(write_end, b"not a regular file")
    os.close(write_end)
    piped = FileReply(os.fdopen(read_end, "rb"))
    assert whole_content(piped) is None
    piped.close()


def test_the_server_sends_without_waiting_for_acknowledgements():
    """TCP_NODELAY on the listening socket (Linux hands it to each accepted connection): a reply's last partial
    segment (a file's tail after full segments) goes at once, not after the client's delayed ACK (up to 40 ms)."""
    import socket

    from minipanda.server.http import HttpServer

    server = HttpServer.bind("127.0.0.1", 0)
    try:
        assert server.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client = socket.create_connection(("127.0.0.1", server.effective_port))
        accepted, _ = server.sock.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        accepted.close()
        client.close()
    finally:
        server.sock.close()


def test_the_stores_adler32_is_zlibs_for_a_body_of_several_blocks(sqlite_server):
    """The store checks and reports the body's adler32 with zlib-ng's function (a dependency; zlib's without its
    wheel): zlib's value for a body of several of its blocks, a declared one that differs by one bit refused."""
    from minipanda.core import filestore

    data = os.urandom(2 * filestore.BLOCK + 5) + b"\xff" * 70000
    expected = f"{zlib.adler32(data):08x}"
    wrong = f"{int(expected, 16) ^ 1:08x}"
    refused = put(sqlite_server, "/files/sc/big-wrong.dat", data=data, checksum=wrong)
    assert refused.status_code == 400 and expected in refused.json()["message"]
    reply = put(sqlite_server, "/files/sc/big.dat", data=data, checksum=expected)
    assert reply.status_code == 201 and reply.json()["data"]["adler32"] == expected
    assert filestore.file_adler32(stored(sqlite_server, "sc", "big.dat")) == expected
    try:
        import zlib_ng  # noqa: F401 - a dependency of minipanda; an older environment may still lack it
        fast = True
    except ImportError:
        fast = False
    assert filestore.adler32.__module__.startswith("zlib_ng" if fast else "zlib")  # the fast one when installed


CRASH_IN_UPLOAD = """
import os, sys
from minipanda.core import filestore

class Crashing:
    def __init__(self):
        self.reads = 0
    def read(self, amount=-1):
        self.reads += 1
        if self.reads == 2:  # the first block is written: the server dies in the middle of the upload
            os._exit(17)
        return bytes(amount)

filestore.FileStore(sys.argv[1]).put("sc", "cut.dat", Crashing(), 3 * filestore.BLOCK, 1 << 30)
"""


def test_an_upload_cut_short_by_a_crash_of_the_server_leaves_nothing_in_the_store(tmp_path):
    """While its body is read an upload has no name in the store at all (an unnamed file, linked into place only
    whole and checked): a server killed in the middle of an upload leaves no file behind, not even a hidden
    temporary that nothing would ever remove."""
    import subprocess
    import sys

    root = tmp_path / "files"
    (root / "sc").mkdir(parents=True)
    crashed = subprocess.run([sys.executable, "-c", CRASH_IN_UPLOAD, str(root)], capture_output=True, text=True,
                             timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert crashed.returncode == 17, crashed.stderr
    assert os.listdir(root / "sc") == []


class NamelessWhileRead(CountingStream):
    """A body whose every read checks that nothing at all (hidden names included) is under ``scope_dir`` yet."""

    def read(self, amount=-1):
        assert os.listdir(self.scope_dir) == []
        return super().read(amount)


def test_an_upload_has_no_name_until_it_is_whole_and_checked(tmp_path):
    from minipanda.core import filestore
    from minipanda.errors import RequestError

    store = filestore.FileStore(str(tmp_path / "files"))
    scope_dir = str(tmp_path / "files" / "sc")
    os.makedirs(scope_dir)
    size = 2 * filestore.BLOCK + 3
    with pytest.raises(RequestError):
        store.put("sc", "f.dat", NamelessWhileRead(size, scope_dir), size, 1 << 30, "00000001")
    assert os.listdir(scope_dir) == []
    created, _ = store.put("sc", "f.dat", NamelessWhileRead(size, scope_dir), size, 1 << 30)
    assert created and os.listdir(scope_dir) == ["f.dat"] and os.path.getsize(os.path.join(scope_dir, "f.dat")) == size
    again, _ = store.put("sc", "f.dat", CountingStream(size), size, 1 << 30)  # the same content: stored already
    assert not again
    with pytest.raises(RequestError) as conflict:
        store.put("sc", "f.dat", io.BytesIO(b"other"), 5, 1 << 30)
    assert conflict.value.http == 409 and os.listdir(scope_dir) == ["f.dat"]
    assert filestore.stored_adler32(os.path.join(scope_dir, "f.dat")) == f"{zlib.adler32(bytes(size)):08x}"


def test_where_unnamed_files_are_refused_an_upload_is_written_under_a_hidden_name_and_nothing_is_left(
        tmp_path, monkeypatch):
    """A kernel or file system without O_TMPFILE (the open refused with EOPNOTSUPP): the store writes to a hidden
    temporary as it did before, links it into place whole and removes it, refused or stored."""
    import errno

    from minipanda.core import filestore
    from minipanda.errors import RequestError

    real_open, refused = os.open, []

    def no_unnamed_files(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            refused.append(path)
            raise OSError(errno.EOPNOTSUPP, "not supported here")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_unnamed_files)
    monkeypatch.setattr(filestore, "_UNNAMED", [True])
    store = filestore.FileStore(str(tmp_path / "files"))
    scope_dir = str(tmp_path / "files" / "sc")
    size = filestore.BLOCK + 1
    with pytest.raises(RequestError):
        store.put("sc", "f.dat", CountingStream(size, scope_dir), size, 1 << 30, "00000001")
    assert os.listdir(scope_dir) == []
    created, info = store.put("sc", "f.dat", CountingStream(size, scope_dir), size, 1 << 30)
    assert created and info["fsize"] == size and os.listdir(scope_dir) == ["f.dat"]
    assert len(refused) == 1 and filestore._UNNAMED == [False]  # asked once, then named temporaries only
