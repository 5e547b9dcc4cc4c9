"""prun's sandbox cache over HTTP (see minipanda/tasks/sandbox.py), as panda-client 2.2 calls it.

- ``POST /api/v1/file_server/validate_cache_file`` ``{file_size, checksum}`` (the gzip trailer's CRC32): the
  message ``FOUND:<host>:<archive>`` when the caller has uploaded that sandbox already (panda-client then reuses
  it), else ``not found`` (always a string: the client calls ``startswith`` on it).
- ``POST /api/v1/file_server/upload_cache_file``: multipart/form-data with the archive in field ``file``.
- ``GET /cache/<archive>``: the sandbox, for the job's runGen (``--sourceURL ${SURL}`` + ``/cache/`` + archive) and
  panda-client's ``getFile``; pilots (and managers) read every sandbox, a user their own.

panda-client 2.2 sends nothing to the legacy ``/server/panda/putFile`` or ``checkSandboxFile``; they are not served.
"""
import bottle

from minipanda.api import params as route_params, wire
from minipanda.core import policy
from minipanda.errors import SC_INVALID, AuthError, RequestError
from minipanda.tasks import sandbox

BASE = "/api/v1/file_server"
VALIDATE = route_params.model("ValidateCacheFile", file_size=route_params.integer(0),
                              checksum=route_params.integer(0, 2 ** 32 - 1))


def sandboxes():
    return sandbox.Sandboxes(bottle.request.app.config["minipanda.context"].home)


def _ok(data, message):
    bottle.response.content_type = "application/json"
    return wire.envelope(data, message)


def validate_cache_file(params, identity):
    """Whether the caller has uploaded a sandbox of this size and CRC32 (panda-client's duplicate check)."""
    size, checksum = params.get("file_size"), params.get("checksum")
    if size is None or checksum is None:
        raise RequestError("file_size, checksum: both required (the sandbox's size and its gzip CRC32)")
    name = sandboxes().find(identity.name, size, checksum)
    if name is None:
        bottle.response.content_type = "application/json"
        return wire.envelope(None, "not found", success=False)
    host = bottle.request.urlparts.hostname or "localhost"
    return _ok({"name": name}, f"FOUND:{host}:{name}")


def upload_cache_file(params, identity):
    """Store the multipart field ``file`` as the caller's sandbox."""
    request = bottle.request
    limit = request.app.config["minipanda.context"].max_body
    if not request.content_type.lower().startswith("multipart/form-data"):
        raise RequestError("file: expected a multipart/form-data upload with the sandbox in the field 'file'")
    declared = request.environ.get("CONTENT_LENGTH", "").strip()
    if not declared.isdigit():
        raise RequestError("Content-Length: required for a sandbox upload", SC_INVALID, 411)
    if int(declared) > limit + 64 * 1024:  # the form's own lines are allowed on top of the archive
        raise RequestError(f"sandbox: {declared} bytes is larger than the server's limit of {limit} bytes "
                           "(minipanda serve --max-body-mb); nothing stored", SC_INVALID, 413)
    try:
        upload = request.files.get("file")
    except Exception as exc:  # bottle's multipart parser raises its own errors for a malformed body
        raise RequestError(f"body: not a valid multipart/form-data upload ({str(exc)[:120]})") from None
    if upload is None or not hasattr(upload, "file"):
        raise RequestError("file: required, the sandbox archive as a multipart file field")
    name = upload.raw_filename
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    created, entry = sandboxes().add(identity.name, name, upload.file, limit)
    data = {key: entry[key] for key in ("name", "fsize", "crc32", "adler32")}
    return _ok(data, f"{name} stored" if created else f"{name} already stored with the same content")


def get_sandbox(params, identity, name):
    """The sandbox file itself."""
    store = sandboxes()
    sandbox.check_name(name)
    found = store.locate(name)
    if found is None:
        raise RequestError(f"sandbox {name} is not in the server's cache", http=404)
    owner, relative, _ = found
    if not policy.may_read_scope(identity, store.scope(owner)):
        raise AuthError(f"sandbox {name} is another user's; a user reads their own sandboxes", 403)
    return bottle.static_file(relative, root=store.store.root, mimetype="application/octet-stream")


def server_url():
    """The server's URL as the current request reached it (scheme://host:port and any mount prefix)."""
    parts = bottle.request.urlparts
    return f"{parts.scheme}://{parts.netloc}{bottle.request.script_name.rstrip('/')}"


def register(app):
    app.route(f"{BASE}/validate_cache_file", ["GET", "POST"], validate_cache_file, family="v1", role="any",
              params_model=VALIDATE)
    app.route(f"{BASE}/upload_cache_file", "POST", upload_cache_file, family="v1", role="any", params=False)
    app.route("/cache/<name>", ["GET", "HEAD"], get_sandbox, family="v1", role="any", params=False)


def with_server_url(definitions):
    """Job definitions with ``${SURL}`` in their job parameters (prun's ``--sourceURL ${SURL}``) replaced by this
    server's URL as the pilot's request reached it, so the job's runGen fetches its sandbox from where its pilot
    talks to the server."""
    if not any("${SURL}" in (d.get("jobPars") or "") for d in definitions):
        return definitions
    url = server_url()
    return [dict(d, jobPars=d["jobPars"].replace("${SURL}", url)) if "${SURL}" in (d.get("jobPars") or "") else d
            for d in definitions]
