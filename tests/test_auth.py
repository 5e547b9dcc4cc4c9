"""Bearer tokens with roles over real HTTP: refusals, revocation, expiry, and auth none only on loopback."""
import datetime
import subprocess
import sys
import time

import jwt
import pytest
import requests
from conftest import make_job
from minipanda import errors
from minipanda.core import auth, states
from minipanda.server import process


def post(srv, path, token=None, **kwargs):
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = token if token.startswith(("Bearer", "Basic")) else f"Bearer {token}"
    return requests.post(srv.url + path, headers=headers, **kwargs)


def test_write_endpoints_need_a_token(sqlite_server):
    for path in ("/server/panda/getJob", "/server/panda/updateJob", "/api/v1/pilot/acquire_jobs",
                 "/api/v1/job/submit", "/api/v1/job/kill", "/server/panda/updateJobsInBulk"):
        reply = post(sqlite_server, path, data={"computingElement": "Q"})
        assert reply.status_code == 401, path
        assert "Authorization" in reply.text


def test_reads_are_open(sqlite_server):
    assert post(sqlite_server, "/server/panda/getStatus", data={"ids": "1"}).status_code == 200
    assert requests.get(sqlite_server.url + "/api/v1/system/is_alive").status_code == 200


def test_roles(sqlite_server):
    user = sqlite_server.token("user", "carol")
    pilot = sqlite_server.token("pilot", "pilotfactory")
    reply = post(sqlite_server, "/server/panda/getJob", user, data={"computingElement": "Q"})
    assert reply.status_code == 403 and reply.json()["StatusCode"] == 60 and "role 'user'" in reply.json()["ErrorDiag"]
    assert post(sqlite_server, "/server/panda/getJob", pilot, data={"computingElement": "Q"}).json()["StatusCode"] == 20
    reply = post(sqlite_server, "/api/v1/job/submit", user, json={"jobs": [make_job(prodSourceLabel="managed")]})
    assert reply.status_code == 403 and "production or admin role" in reply.json()["message"]
    assert post(sqlite_server, "/api/v1/job/submit", user,
                json={"jobs": [make_job(prodSourceLabel="user")]}).status_code == 200


def test_user_jobs_are_user_jobs(sqlite_server):
    """A plain user cannot reach production, another task, or a priority above 1000 by omission or by asking."""
    user = sqlite_server.token("user", "mallory")
    spec = make_job()
    del spec["prodSourceLabel"]
    reply = post(sqlite_server, "/api/v1/job/submit", user, json={"jobs": [spec, make_job(prodSourceLabel="NULL")]})
    assert reply.status_code == 200
    ids = [row[0] for row in reply.json()["data"]]
    described = requests.post(sqlite_server.url + "/api/v1/job/get_description", json={"job_ids": ids}).json()["data"]
    assert [d["prodSourceLabel"] for d in described] == ["user", "user"]
    for extra, field in (({"jediTaskID": 10000000}, "jediTaskID"), ({"currentPriority": 99999}, "currentPriority"),
                         ({"assignedPriority": 5000}, "assignedPriority")):
        reply = post(sqlite_server, "/api/v1/job/submit", user, json={"jobs": [make_job(prodSourceLabel="user",
                                                                                       **extra)]})
        assert reply.status_code == 403 and f"jobs[0].{field}" in reply.json()["message"]
    admin_job = make_job(currentPriority=5000)
    assert post(sqlite_server, "/api/v1/job/submit", sqlite_server.admin_token,
                json={"jobs": [admin_job]}).status_code == 200


def test_bad_tokens(sqlite_server):
    assert post(sqlite_server, "/api/v1/job/submit", "Basic abc", json={}).status_code == 401
    assert "invalid token" in post(sqlite_server, "/api/v1/job/submit", "not.a.jwt", json={}).text
    forged = jwt.encode({"iss": "minipanda", "sub": "eve", "role": "admin", "jti": "x", "exp": 9999999999},
                        "wrong-secret-" * 4, algorithm="HS256")
    reply = post(sqlite_server, "/api/v1/job/submit", forged, json={})
    assert reply.status_code == 401 and "Signature" in reply.json()["message"]


def test_revoked_and_expired(sqlite_server, tmp_path):
    token = sqlite_server.token("admin", "dave")
    assert post(sqlite_server, "/api/v1/job/submit", token, json={"jobs": [make_job()]}).status_code == 200
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "minipanda", "token", "revoke", jti, "--home", sqlite_server.home,
                    "--db", sqlite_server.db_url], check=True, capture_output=True)
    reply = post(sqlite_server, "/api/v1/job/submit", token, json={"jobs": [make_job()]})
    assert reply.status_code == 401 and "revoked" in reply.json()["message"]
    secret = open(auth.secret_path(sqlite_server.home), "rb").read().strip()
    expired = jwt.encode({"iss": "minipanda", "sub": "old", "role": "admin", "jti": jti,
                          "exp": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)}, secret, algorithm="HS256")
    assert "expired" in post(sqlite_server, "/api/v1/job/submit", expired, json={}).json()["message"]


def test_token_claims_panda_client_reads(database, tmp_path):
    secret = auth.load_secret(str(tmp_path))
    token, jti = auth.create_token(secret, "erin", "user")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["name"], claims["preferred_username"], claims["groups"], claims["jti"]) == ("erin", "erin",
                                                                                               ["user"], jti)
    assert auth.verify_token(secret, token) == auth.Identity("erin", "user")
    with pytest.raises(ValueError, match="role"):
        auth.create_token(secret, "x", "superuser")
    with pytest.raises(ValueError, match="name"):
        auth.create_token(secret, "x; rm -rf", "user")


def test_auth_none_only_on_loopback(tmp_path):
    with pytest.raises(errors.ConfigError, match="only on a loopback bind"):
        process.build(str(tmp_path), "sqlite:///" + str(tmp_path / "m.db"), auth_mode="none", host="0.0.0.0")
    with pytest.raises(errors.ConfigError, match="auth"):
        process.build(str(tmp_path), "sqlite:///" + str(tmp_path / "m.db"), auth_mode="maybe")


def test_secret_file_is_private(tmp_path):
    import os
    import stat

    auth.load_secret(str(tmp_path))
    assert stat.S_IMODE(os.stat(auth.secret_path(str(tmp_path))).st_mode) == 0o600


def test_a_forged_token_naming_a_valid_jti_is_refused_for_its_signature(database, tmp_path):
    secret = auth.load_secret(str(tmp_path))
    _, jti = auth.create_token(secret, "erin", "user")
    forged = jwt.encode({"iss": "minipanda", "sub": "eve", "role": "admin", "jti": jti, "exp": 9999999999},
                        b"wrong-secret-" * 4, algorithm="HS256")
    with pytest.raises(errors.AuthError, match="Signature"):
        auth.verify_token(secret, forged)


def test_an_expired_token_naming_a_valid_jti_is_refused_for_its_expiry(database, tmp_path):
    secret = auth.load_secret(str(tmp_path))
    _, jti = auth.create_token(secret, "erin", "user")
    expired = jwt.encode({"iss": "minipanda", "sub": "erin", "role": "user", "jti": jti,
                          "exp": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)}, secret,
                         algorithm="HS256")
    with pytest.raises(errors.AuthError, match="expired"):
        auth.verify_token(secret, expired)


def test_a_token_remembered_as_valid_is_refused_once_it_expires(database, tmp_path):
    secret = auth.load_secret(str(tmp_path))
    soon = states.utcnow() - datetime.timedelta(days=1) + datetime.timedelta(seconds=5)
    token, _ = auth.create_token(secret, "fay", "user", days=1, now=soon)
    assert auth.verify_token(secret, token) == auth.Identity("fay", "user")  # checked once, then remembered
    expiry = jwt.decode(token, options={"verify_signature": False})["exp"]
    while time.time() <= expiry + 0.5:  # wait for the clock to pass the expiry; nothing is measured
        time.sleep(0.2)
    with pytest.raises(errors.AuthError, match="expired"):
        auth.verify_token(secret, token)


HELD_BACK = """
import sys, time
import minipanda.server.process  # the server's imports, this module's among them
from minipanda.core import auth, schema
loaded = sorted(m for m in sys.modules if m == "cryptography" or m.startswith("cryptography."))
assert not loaded, loaded
schema.open_database("sqlite:///" + sys.argv[1])
token, _ = auth.create_token("secret", "dave", "user")
assert auth.verify_token("secret", token).name == "dave"
for forged in (auth.jwt.encode({"iss": "minipanda", "sub": "eve", "role": "admin", "jti": "x", "exp": 9999999999},
                               "other", algorithm="HS256"),
               token.split(".")[0] + "." + token.split(".")[1] + ".AAAA"):
    try:
        auth.verify_token("secret", forged)
    except Exception as exc:
        assert "invalid token" in str(exc), exc
    else:
        raise AssertionError("a forged token was taken")
import cryptography.hazmat.primitives.hashes  # noqa: E402,F401 (paramiko's SSH transport imports it later)
print("ok")
"""


def test_the_server_imports_no_cryptography_for_its_hmac_tokens(tmp_path):
    """PyJWT imports cryptography only for RSA and EC (~40 ms of CPU at every server start): held back, tokens are
    still made and checked, a forged one refused, and cryptography imports normally afterwards. In a fresh
    interpreter: this test process has loaded cryptography already."""
    out = subprocess.run([sys.executable, "-c", HELD_BACK, str(tmp_path / "db.sqlite")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
