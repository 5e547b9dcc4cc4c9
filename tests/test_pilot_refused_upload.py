"""A large upload refused before its body is received (minipanda.server.unreceived) reaches the pilot as that
refusal, over TLS as over plain HTTP, every time: real ``minipanda serve`` processes on loopback, the pilot's own
client (pilot.comm.ServerClient.upload). The server reads the unread body away after its answer (a lingering close,
minipanda.server.bridge RsgiBridge.linger), and the pilot reads the answer after its send failed
(pilot.httpclient._early_answer) when the server cut the body off."""
import zlib

import pytest
import requests
from conftest import LiveServer
from test_server_http_linger import certificate

from pilot.comm import CommError, ServerClient

SIZE = 40 << 20
TRIES = 4  # each refusal several times: before the fix a TLS one failed 3 times of 3, then 1 of 3


class Server(LiveServer):
    """``minipanda serve`` with ``options``; over TLS (``url`` https) when given a certificate."""

    def __init__(self, home, db_url, options=(), tls=None):
        self.options, self.tls = list(options), tls
        super().__init__(home, db_url)
        if tls:
            self.url = f"https://127.0.0.1:{self.port}"

    def argv(self):
        tls = ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]] if self.tls else []
        return super().argv() + self.options + tls

    def ping(self):
        if not self.tls:
            return super().ping()
        requests.get(f"https://127.0.0.1:{self.port}/api/v1/system/is_alive", verify=self.tls[0], timeout=5)


@pytest.fixture(params=["plain", "tls"])
def start(request, tmp_path, monkeypatch):
    """start(*options): a server over the parameter's transport; the pilot trusts its certificate."""
    started = []
    tls = None
    if request.param == "tls":
        tls = certificate(tmp_path)
        monkeypatch.setenv("SSL_CERT_FILE", tls[0])  # the pilot verifies against the system's CAs: this one here

    def start(*options):
        home = tmp_path / f"home{len(started)}"
        started.append(Server(home, "sqlite:///" + str(home) + ".sqlite", options, tls))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def big_file(tmp_path, size=SIZE):
    path = tmp_path / "big.dat"
    with open(path, "wb") as handle:
        handle.truncate(size)
    return str(path), f"{zlib.adler32(bytes(size)):08x}"


def refusal(server, token, path, adler, target):
    with pytest.raises(CommError) as refused:
        ServerClient(server.url, token, 30).upload(path, target, adler)
    return refused.value


def test_a_refused_large_upload_reaches_the_pilot_as_its_refusal_every_time(start, tmp_path):
    server = start()
    path, adler = big_file(tmp_path)
    token = tmp_path / "user.token"
    token.write_text(server.token("user", "dave"))
    for _ in range(TRIES):
        refused = refusal(server, str(token), path, adler, "/files/user.carol/big.dat")
        assert refused.status == 403 and "user.carol" in str(refused), refused
        refused = refusal(server, None, path, adler, "/files/user.carol/big.dat")
        assert refused.status == 401 and "Authorization" in str(refused), refused


def test_an_upload_over_the_limit_reaches_the_pilot_as_413_every_time(start, tmp_path):
    """Declared over the server's limit (--max-body-mb 8): refused on its Content-Length; the server throws away at
    most the limit's worth of it and resets the connection, while the pilot still sends: the pilot reads the 413."""
    server = start("--max-body-mb", "8")
    path, adler = big_file(tmp_path)
    token = tmp_path / "user.token"
    token.write_text(server.token("user", "dave"))
    for _ in range(TRIES):
        refused = refusal(server, str(token), path, adler, "/files/user.dave/big.dat")
        assert refused.status == 413 and "limit" in str(refused), refused


def test_an_admitted_large_upload_is_stored(start, tmp_path):
    server = start()
    path, adler = big_file(tmp_path)
    token = tmp_path / "production.token"
    token.write_text(server.token("production", "prod"))
    stored = ServerClient(server.url, str(token), 60).upload(path, "/files/data/big.dat", adler)
    assert stored["fsize"] == SIZE and stored["adler32"] == adler, stored
