"""Bearer tokens: signed JWTs with a role, revocable through the token table.

The claims carry what panda-client reads from a token (``name``, ``preferred_username``, ``groups``) plus
minipanda's ``role`` and a ``jti`` that the token table records, so a token can be revoked before it expires.
The signing key is a random secret in ``<home>/secret.key`` (mode 0600), made on first use.

A token may be bound to what it was made for (signed claims, so no caller can change them): a ``harvester`` token
to the harvester id of its name; a ``pilot`` token that a harvester minted for one worker to that harvester, that
worker and that queue (claims ``harvester_id``, ``worker_id``, ``queue``). minipanda.core.policy says what a bound
token may do.
"""
import dataclasses
import datetime
import os
import re
import secrets
import sys
import time
import uuid
from typing import Optional

from minipanda.core import models, states
from minipanda.core.roles import HARVESTER_ROLES, OWNER_ROLES, PILOT_ROLES, ROLES  # noqa: F401 (api imports them from here)
from minipanda.errors import AuthError


def _import_jwt():
    """PyJWT, imported with ``cryptography`` held back when nothing in the process has loaded it yet.

    Tokens are HS256 (an HMAC: the standard library's); PyJWT imports cryptography only for its RSA and EC
    algorithms, which minipanda never uses, and that import was ~40 ms of CPU at every server start (and every
    ``minipanda token`` command). PyJWT works without it (it is PyJWT's optional extra): a token of another
    algorithm is refused as before. ``import cryptography`` works normally afterwards (paramiko's SSH transport);
    the pilot holds ``ssl`` back the same way (pilot/httpclient.py).
    """
    if "jwt" in sys.modules or "cryptography" in sys.modules:
        import jwt
        return jwt
    sys.modules["cryptography"] = None  # makes PyJWT's `from cryptography ...` fail: has_crypto False
    try:
        import jwt
    finally:
        if sys.modules.get("cryptography", 0) is None:
            del sys.modules["cryptography"]
    return jwt


jwt = _import_jwt()

ISSUER = "minipanda"
ALGORITHM = "HS256"
MINTED_NAME = re.compile(r"pilot\.(?P<harvester>.+)\.(?P<worker>[0-9]+)\Z")


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who is calling: a user name and a role, and what the token is bound to (None: not bound)."""

    name: str
    role: str
    harvester_id: Optional[str] = None  # a harvester token's harvester, or the harvester that minted a pilot token
    worker_id: Optional[int] = None  # the worker a minted pilot token was made for
    queue: Optional[str] = None  # the queue a minted pilot token was made for


ANONYMOUS_ADMIN = Identity("anonymous", "admin")  # used only with auth: none on a loopback bind


def secret_path(home):
    return os.path.join(home, "secret.key")


def load_secret(home):
    """The signing secret, created (0600) when missing."""
    path = secret_path(home)
    os.makedirs(home, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as handle:
            key = handle.read().strip()
        if len(key) < 32:
            raise AuthError(f"{path}: signing secret is shorter than 32 bytes; delete it to make a new one") from None
        return key
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def create_token(secret, name, role, days=30, groups=None, now=None, binding=None):
    """Record and sign a new token; return (token string, jti). ``binding``: the minted pilot token's
    {harvester_id, worker_id, queue} claims."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"name: expected letters, digits, '.', '_' or '-', got {name!r}")
    if days <= 0:
        raise ValueError(f"days: must be positive, got {days}")
    if role in OWNER_ROLES:
        check_scope_overlap(name)
    now = now or states.utcnow()
    expires = now + datetime.timedelta(days=days)
    jti = uuid.uuid4().hex
    models.Token.create(jti=jti, name=name, role=role, created=now, expires=expires)
    claims = {
        "iss": ISSUER, "sub": name, "jti": jti, "role": role,
        "name": name, "preferred_username": name, "groups": list(groups or [role]),
        "iat": int(now.replace(tzinfo=datetime.timezone.utc).timestamp()),
        "exp": int(expires.replace(tzinfo=datetime.timezone.utc).timestamp()),
    }
    claims.update(binding or {})
    return jwt.encode(claims, secret, algorithm=ALGORITHM), jti


def check_scope_overlap(name):
    """Refuse (ValueError) a user name whose scope ``user.<name>`` would overlap another user's: ``bob`` and
    ``bob.jr`` would both claim the datasets named ``user.bob.jr.*``. The same name again is the same user."""
    Token = models.Token
    for (other,) in Token.select(Token.name).where(Token.role.in_(OWNER_ROLES)).distinct().tuples():
        if other != name and (other.startswith(name + ".") or name.startswith(other + ".")):
            raise ValueError(f"name: {name!r} and the existing user {other!r} would share the scope "
                             f"user.{min(name, other, key=len)}.*; choose a name that is not one of theirs plus "
                             "a dotted suffix, or the other way round")


def revoke_token(jti):
    """Mark a token revoked; return False when no such token exists."""
    return models.Token.update(revoked=states.utcnow()).where(models.Token.jti == jti).execute() == 1


def revoke_tokens_named(name):
    """Revoke every valid token carrying ``name``; return how many."""
    Token = models.Token
    return Token.update(revoked=states.utcnow()).where(Token.name == name, Token.revoked.is_null()).execute()


_decoded = {}  # (secret, token) -> claims of a token whose signature was checked; its expiry is re-checked


def verify_token(secret, token):
    """Return the caller's Identity, or raise AuthError(401) saying what is wrong with the token.

    Every pilot request comes through here, so the signature check is remembered per token (expiry is still checked
    each time) and the revocation check is one hand-written primary-key query: a revocation by any process, the
    CLI included, takes effect on the next request.
    """
    claims = _decoded.get((secret, token))
    if claims is None or claims["exp"] <= time.time():
        try:
            claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                options={"require": ["exp", "jti", "role", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired; create a new one with 'minipanda token create'") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        if len(_decoded) > 10000:
            _decoded.clear()
        _decoded[(secret, token)] = claims
    db = models.Token._meta.database
    row = db.execute_sql('SELECT "revoked" FROM "token" WHERE "jti" = %s' % db.param, (claims["jti"],)).fetchone()
    if row is None:
        raise AuthError("token unknown to this server (issued by another minipanda home?)")
    if row[0] is not None:
        raise AuthError(f"token {claims['jti']} was revoked")
    return identity_of(claims)


def identity_of(claims):
    """The Identity a verified token's claims make, with what the token is bound to."""
    name, role = claims["sub"], claims["role"]
    if role == "harvester":
        return Identity(name, role, harvester_id=claims.get("harvester_id") or name)
    if role == "pilot" and claims.get("worker_id") is not None:
        return Identity(name, role, claims.get("harvester_id"), int(claims["worker_id"]), claims.get("queue"))
    minted = MINTED_NAME.match(name) if role == "pilot" else None
    if minted:  # minted before tokens carried their binding: the name still says whose it is (not the queue)
        return Identity(name, role, minted["harvester"], int(minted["worker"]))
    return Identity(name, role)


def require_role(identity, allowed):
    """Raise AuthError(403) unless the identity's role is one of ``allowed``."""
    if identity.role not in allowed:
        raise AuthError(f"role {identity.role!r} may not do this; needs one of {', '.join(sorted(allowed))}", 403)
