"""``/files/<scope>/<lfn>``: the file store over HTTP (see minipanda/core/filestore.py).

PUT (pilot, harvester, production, admin) streams the body into the store, checked against ``Content-Length`` and
``X-Checksum: ad:<adler32>``; a pilot's or harvester's token names the job in ``X-PandaID`` and stores only that
job's outputs and log while it runs, a production token too when it names a job, else only in shared scopes and its
own (minipanda.core.stageout); a name already stored is answered before the body is read (the same size and
adler32: 200, else 409: stored files never change); GET (and HEAD) need a token too: a user reads their own
``user.<name>`` scope and shared scopes, pilots and managers every scope (minipanda.core.policy.may_read_scope). Replies are v1 envelopes with
``data = {scope, lfn, fsize, adler32, url}``. A whole-file GET by a user or admin token marks a task output as
fetched (``file.fetched_time``), which the retention duty reads; under ``--auth none`` (every request the anonymous
admin) a GET bearing a valid pilot token is a pilot's stage-in and marks nothing.
"""
import functools
import os
import stat

import bottle

from minipanda.api import params as route_params, wire
from minipanda.core import auth, filestore, policy, stageout, states
from minipanda.core.auth import PILOT_ROLES
from minipanda.errors import SC_INVALID, AuthError, RequestError
from minipanda.tasks import storeclean

PEOPLE = ("user", "admin")  # a download by these marks an output fetched; pilots read inputs


def _store():
    return _store_of(bottle.request.app.config["minipanda.context"].home)


def request_store():
    """The file store of the server answering this request (a finished job's report is checked against it)."""
    return _store()


@functools.lru_cache(maxsize=8)
def _store_of(home):
    """The store of a server home, its root resolved once per process (not a realpath per request)."""
    return filestore.FileStore(os.path.join(home, "files"))


def _url(scope, lfn):
    """The stored file's URL: scheme and host as bottle's ``request.urlparts`` takes them, without its parse of the
    request's own whole URL (a urljoin and two urlparse per upload)."""
    environ = bottle.request.environ
    scheme = environ.get("HTTP_X_FORWARDED_PROTO") or environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "127.0.0.1")
        port = environ.get("SERVER_PORT")
        if port and port != ("80" if scheme == "http" else "443"):
            host += ":" + port
    return f"{scheme}://{host}{bottle.request.script_name.rstrip('/')}/files/{scope}/{lfn}"


def put_file(params, identity, scope, lfn):
    request = bottle.request
    context = request.app.config["minipanda.context"]
    declared = request.environ.get("CONTENT_LENGTH", "").strip()
    try:
        length = int(declared) if declared else None
    except ValueError:
        raise RequestError(f"Content-Length: {declared[:30]!r} is not a number") from None
    if length is not None and length < 0:
        raise RequestError(f"Content-Length: {length} is negative")
    if request.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        raise RequestError("Content-Encoding: files are stored as sent; send them unencoded")
    adler = filestore.parse_checksum(request.headers.get("X-Checksum", ""))
    if stageout.judged(identity) or (identity.role != "admin" and request.headers.get("X-PandaID", "").strip()):
        _check_stage_out(identity, scope, lfn, length, adler)
    elif identity.role != "admin":
        filestore.check_name("scope", scope)
        stageout.placement_refusal(identity, scope)
    store = _store()
    info = _stored_already(store, scope, lfn, length, adler)
    created = info is None
    if created:
        created, info = store.put(scope, lfn, request.environ["wsgi.input"], length, context.max_body, adler)
    info["url"] = _url(scope, lfn)
    bottle.response.status = 201 if created else 200
    bottle.response.content_type = "application/json"
    return wire.envelope(info, "stored" if created else "already stored with the same content")


def _check_stage_out(identity, scope, lfn, length, adler):
    """Refuse (RequestError) a PUT by a pilot's or harvester's token that is not its job's output or log: the job
    named by ``X-PandaID`` (minipanda.core.stageout), with the size and adler32 the final report will give."""
    header = bottle.request.headers.get("X-PandaID", "").strip()
    if not header:
        raise RequestError(f"X-PandaID: required with a {identity.role} token: the PandaID of the job whose output or "
                           "log file this is (a pilot or harvester stores only its jobs' files)", SC_INVALID, 400)
    if not (header.isascii() and header.isdigit() and len(header) <= 19) or not 0 < int(header) <= \
            route_params.INT64_MAX:
        raise RequestError(f"X-PandaID: expected a PandaID, got {header[:30]!r}")
    if length is None or adler is None:
        raise RequestError(f"{'Content-Length' if length is None else 'X-Checksum'}: required with a {identity.role} "
                           "token: the store checks the file against the size and adler32 its job reports")
    filestore.check_name("scope", scope)
    filestore.check_name("lfn", lfn)
    panda_id = int(header)
    stageout.refusal(identity, panda_id, stageout.staged_jobs([panda_id]).get(panda_id), scope, lfn,
                     fsize=length, adler32=adler)


def _stored_already(store, scope, lfn, length, adler):
    """Before a byte of the body is read: None when nothing is stored as ``scope``/``lfn``; the stored file's info
    when it has the size and adler32 this upload declares (the same content again: a success, nothing read);
    else 409, since stored files never change (an upload without ``X-Checksum`` cannot show it is the same)."""
    _, path = store.locate(scope, lfn)
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(found.st_mode):
        raise RequestError(f"{scope}/{lfn} is taken in the server's file store by something other than a file; "
                           "nothing was read or stored", SC_INVALID, 409)
    size, stored = found.st_size, filestore.stored_adler32(path)
    if length == size and adler == stored:
        return {"scope": scope, "lfn": lfn, "fsize": size, "adler32": stored}
    declared = f"{'no size' if length is None else f'{length} bytes'}, " \
               f"{'no X-Checksum' if adler is None else f'adler32 {adler}'}"
    raise RequestError(f"{scope}/{lfn} is already stored ({size} bytes, adler32 {stored}) and this upload declares "
                       f"{declared}; stored files never change: nothing was read or stored", SC_INVALID, 409)


def get_file(params, identity, scope, lfn):
    relative, path = _store().locate(scope, lfn)
    if not policy.may_read_scope(identity, scope):
        raise AuthError(f"scope: {scope} is another user's; a user reads their own and shared scopes", 403)
    if not os.path.isfile(path):
        raise RequestError(f"{scope}/{lfn} is not in the server's file store", http=404)
    if bottle.request.method == "GET" and "Range" not in bottle.request.headers and by_person(identity):
        storeclean.mark_fetched(scope, lfn, states.utcnow())  # a fetched output goes sooner (retention)
    return bottle.static_file(relative, root=_store().root, mimetype="application/octet-stream")


def by_person(identity):
    """Whether a download is a person's (it marks an output fetched). With ``--auth none`` every request is the
    anonymous admin, pilots' too: there the token a pilot still sends tells its stage-in apart, which otherwise cost
    every input download a write transaction (a wrong or missing token: a person, as before)."""
    if identity.role not in PEOPLE:
        return False
    if identity is not auth.ANONYMOUS_ADMIN:
        return True
    scheme, _, token = bottle.request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return True
    try:
        return auth.verify_token(bottle.request.app.config["minipanda.context"].secret, token.strip()).role in PEOPLE
    except AuthError:
        return True


def register(app):
    app.route("/files/<scope>/<lfn:path>", "PUT", put_file, family="v1", role=PILOT_ROLES, params=False)
    app.route("/files/<scope>/<lfn:path>", ["GET", "HEAD"], get_file, family="v1", role="any", params=False)
