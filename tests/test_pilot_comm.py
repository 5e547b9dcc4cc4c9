"""The HTTP client against a live server: getJob, updateJob, replies, errors, downloads."""
import datetime
import http.server
import os
import ssl
import subprocess
import sys
import threading
import urllib.error

import pytest

from pilot import comm
from pilot.comm import CommError, ServerClient
from test_pilot_harness import QUEUE

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def test_base_url():
    assert comm.base_url("http://127.0.0.1", 25080) == "http://127.0.0.1:25080"
    assert comm.base_url("http://h:1234/", 25080) == "http://h:1234"
    assert comm.base_url("server.example", None) == "http://server.example"


def test_getjob_updatejob_and_already_done(site):
    client = ServerClient(site.server.url, site.token_file, 10)
    offer = {"computingElement": QUEUE, "node": "n1", "pilotID": "p1", "remainingTime": 10000}
    assert client.get_job(offer) is None
    pid = site.submit(transformation="/bin/true")
    job = client.get_job(offer)
    assert job["PandaID"] == pid and job["transformation"] == "/bin/true"
    base = {"jobId": pid, "pilotID": "p1", "attemptNr": job["attemptNr"]}
    assert client.update_job(dict(base, state="running"))["command"] == "NULL"
    assert client.update_job(dict(base, state="finished")).get("alreadyDone") is None
    assert client.update_job(dict(base, state="finished"))["alreadyDone"] is True


def test_refusals_are_permanent_and_outages_transient(site):
    client = ServerClient(site.server.url, site.token_file, 10)
    with pytest.raises(CommError) as unknown:
        client.update_job({"jobId": 999999, "state": "running"})
    assert not unknown.value.transient and unknown.value.reply["command"] == "tobekilled"
    with pytest.raises(CommError) as invalid:
        client.update_job({"jobId": 1, "state": "bogus"})
    assert not invalid.value.transient and invalid.value.status == 400
    with pytest.raises(CommError) as auth:
        ServerClient(site.server.url, None, 10).get_job({"computingElement": QUEUE})
    assert auth.value.transient and auth.value.auth
    site.server.stop()
    with pytest.raises(CommError) as down:
        client.get_job({"computingElement": QUEUE})
    assert down.value.transient and down.value.status is None


def test_update_retries_with_backoff_then_gives_up(site):
    client = ServerClient(site.server.url, site.token_file, 10)
    site.server.stop()
    sleeps = []
    reply, error = client.update_job_reliably({"jobId": 1, "state": "finished"}, 4, 0.5, sleeps.append)
    assert reply is None and error.transient and sleeps == [0.5, 1.0, 2.0]
    sleeps.clear()
    reply, error = client.update_job_reliably({"jobId": 1, "state": "x"}, 4, 0.5, sleeps.append,
                                              give_up=lambda: True)
    assert sleeps == []


def test_download_from_the_trf_directory(site, tmp_path):
    site.script("tool.sh", "#!/bin/sh\necho hi\n")
    client = ServerClient(site.server.url, site.token_file, 10)
    tmp_path = tmp_path / "downloads"
    tmp_path.mkdir()
    dest = str(tmp_path / "tool.sh")
    assert client.download("/trf/user/tool.sh", dest) == len("#!/bin/sh\necho hi\n")
    with pytest.raises(FileNotFoundError):
        client.download("/trf/user/absent.sh", str(tmp_path / "absent"))
    assert sorted(os.listdir(tmp_path)) == ["tool.sh"]  # no partial file left behind
    site.submit(transformation="/bin/true")  # the server registers the queue with its first job
    assert '"maxrss"' in client.get_text(f"/cache/schedconfig/{QUEUE}.all.json")


LOADED_FOR_TLS = ("ssl", "_ssl", "hashlib", "_hashlib", "urllib.request")
# what a pilot never needs and used to load: the idna codec's (an ASCII host resolved as a str) and shutil's
# archive compressors (pilot.cli.import_shutil_without_compressors)
LOADED_FOR_NOTHING = ("encodings.idna", "stringprep", "unicodedata", "bz2", "_bz2", "lzma", "_lzma")


def without_proxies():
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def test_a_plain_http_pilot_run_never_loads_tls_idna_nor_compressors(site):
    pid = site.submit(transformation="/bin/true", jobParameters="")
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\nfrom pilot.cli import main\nrc = main(sys.argv[2:])\n"
            f"print(rc, sorted(m for m in {LOADED_FOR_TLS + LOADED_FOR_NOTHING!r} if m in sys.modules))")
    # -S: no site-packages .pth files run first (one of this machine's imports certifi, and with it shutil, bz2 and
    # lzma, at every interpreter start): what is loaded is the pilot's doing. It needs only the standard library.
    out = subprocess.run([sys.executable, "-S", "-c", code, site.zipapp, *site.argv("--quiet")[2:]],
                         capture_output=True, text=True, timeout=120, cwd=site.base, env=without_proxies())
    assert out.stdout.splitlines()[-1:] == ["0 []"], out.stdout + out.stderr
    assert site.status(pid) == "finished"


def self_signed_certificate(directory):
    """(certificate file, key file) for localhost, signed by itself."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_file, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_file, key_file


class Answers(http.server.BaseHTTPRequestHandler):
    """/hello answers; /go redirects to the TLS server's /hello; an absolute URL (a proxy request) is answered."""

    tls_port = None

    def do_GET(self):
        if self.path == "/go":
            self.send_response(302)
            self.send_header("Location", f"https://localhost:{self.tls_port}/hello")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = (b"via proxy " + self.path.encode()) if self.path.startswith("http://") else b"hello over " + \
            (b"tls" if isinstance(self.connection, ssl.SSLSocket) else b"plain http")
        self.send_response(200 if self.path in ("/hello",) or self.path.startswith("http://") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers(tmp_path):
    """(plain HTTP port, TLS port, certificate file): two local servers answering with Answers."""
    cert_file, key_file = self_signed_certificate(str(tmp_path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    tls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Plain", (Answers,), {
        "tls_port": tls.server_address[1]}))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (tls, plain)]
    for thread in threads:
        thread.start()
    yield plain.server_address[1], tls.server_address[1], cert_file
    for server in (tls, plain):
        server.shutdown()
        server.server_close()


def run_client(script, env):
    code = "import sys\nfrom pilot import comm\n" + script
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                         cwd=os.path.dirname(os.path.dirname(comm.__file__)))
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_https_loads_tls_when_needed_after_plain_http(servers):
    plain, tls, cert_file = servers
    env = dict(without_proxies(), SSL_CERT_FILE=cert_file)
    lines = run_client(
        f"client = comm.ServerClient('http://127.0.0.1:{plain}')\nprint(client.get_text('/hello'))\n"
        "print('ssl' in sys.modules)\nprint(client.get_text('/go'))\nprint('ssl' in sys.modules)\n"
        f"print(comm.ServerClient('https://localhost:{tls}').get_text('/hello'))\n"
        f"try:\n    comm.ServerClient('https://127.0.0.1:{tls}').get_text('/hello')\n"  # the name is not 127.0.0.1
        "except comm.CommError as exc:\n    print('refused', 'CERTIFICATE_VERIFY_FAILED' in str(exc))\n", env)
    assert lines == ["hello over plain http", "False", "hello over tls", "True", "hello over tls", "refused True"]


def test_a_proxy_from_the_environment_is_used(servers):
    plain, _, _ = servers
    env = dict(without_proxies(), http_proxy=f"http://127.0.0.1:{plain}")
    lines = run_client("print(comm.ServerClient('http://server.invalid:25080').get_text('/hello'))", env)
    assert lines == ["via proxy http://server.invalid:25080/hello"]


def test_a_transport_error_without_a_reason_is_named_in_the_message():
    """An ssl.SSLError carries a ``reason`` attribute that is often None (an SSLEOFError while a refused upload is
    sent over TLS): the message names the error itself, not "None"."""
    eof = ssl.SSLEOFError(8, "EOF occurred in violation")
    eof.reason = None  # as the ssl module leaves it for this error
    with pytest.raises(CommError) as caught:
        comm._raise_upload_error("https://localhost/files/s/f", eof)
    assert "EOF occurred in violation" in str(caught.value) and "None" not in str(caught.value)
    error = urllib.error.URLError("no route to host")
    assert comm._reason(error) == "no route to host"
