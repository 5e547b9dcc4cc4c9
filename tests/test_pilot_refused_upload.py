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


def token_file(server, tmp_path, role, name):
    """The path of a file holding a new ``role`` token of ``server``, as harvester hands a pilot its token."""
    path = tmp_path / f"{role}.{name}.token"
    path.write_text(server.token(role, name))
    return str(path)


def refusal(server, token, target, tmp_path):
    """The CommError of the pilot's upload of a 40 MiB file to ``target`` with ``token`` (a token file or None)."""
    path, adler = big_file(tmp_path)
    with pytest.raises(CommError) as refused:
        ServerClient(server.url, token, 30).upload(path, target, adler)
    return refused.value


def test_a_refused_large_upload_reaches_the_pilot_as_its_refusal_every_time(start, tmp_path):
    server = start()
    user = token_file(server, tmp_path, "user", "dave")
    for _ in range(TRIES):
        refused = refusal(server, user, "/files/user.carol/big.dat", tmp_path)
        assert refused.status == 403 and "may not do this" in refused.reply["message"], refused
        refused = refusal(server, None, "/files/user.carol/big.dat", tmp_path)
        assert refused.status == 401 and "Authorization" in refused.reply["message"], refused


def test_an_upload_over_the_limit_reaches_the_pilot_as_413_every_time(start, tmp_path):
    """Declared over the server's limit (--max-body-mb 8): refused on its Content-Length; the server throws away at
    most the limit's worth of it and resets the connection, while the pilot still sends: the pilot reads the 413."""
    server = start("--max-body-mb", "8")
    production = token_file(server, tmp_path, "production", "prod")
    for _ in range(TRIES):
        refused = refusal(server, production, "/files/data/big.dat", tmp_path)
        assert refused.status == 413 and "limit" in refused.reply["message"], refused


def test_an_admitted_large_upload_is_stored(start, tmp_path):
    server = start()
    path, adler = big_file(tmp_path)
    production = token_file(server, tmp_path, "production", "prod")
    stored = ServerClient(server.url, production, 60).upload(path, "/files/data/big.dat", adler)
    assert stored["fsize"] == SIZE and stored["adler32"] == adler, stored
