"""``POST /api/v1/pilot/upload_logs``: several jobs' log tarballs in one request (minipanda/core/filestore.py).

A pilot that has wrapped up several short jobs sends their logs together instead of one ``PUT /files/<scope>/<lfn>``
each. The body is a JSON manifest of ``X-Manifest-Length`` bytes, then each entry's bytes in the manifest's order::

    {"files": [{"pandaID": 7, "scope": "s", "lfn": "log.7.tgz", "fsize": 1234, "adler32": "0a1b2c3d"}, ...]}

Everything in it is hostile. The request as a whole is refused (400, nothing stored) when its framing cannot be
trusted: no ``Content-Length`` (411), a manifest that is not JSON, longer than :data:`MANIFEST_MAX`, with more
than :data:`MAX_LOGS` entries or an entry without a size, or a ``Content-Length`` other than the manifest plus
the sizes it names; over the server's body limit it is 413. Each entry is then judged alone, and a bad one is
refused alone (its bytes skipped) while the others are stored: its names must be plain (the store's own checks),
its adler32 given, and its job must be one the token may write a log for (minipanda.core.stageout, as for a
single PUT): a job dispatched and not ended, whose log file has that name and scope (or the scope the site's layout
fixes, queuedata ``output_url``), and, for a token bound to a harvester, its worker or a queue, a job dispatched to
them (minipanda.core.policy, as for updateJob). Each file goes through ``FileStore.put``: checked
against its size and adler32 and linked into place only whole, so a body that breaks stores nothing half-written.

The reply is a v1 envelope whose ``data.results`` has one entry per manifest entry, in order: ``{pandaID, scope,
lfn, status, message}`` with ``status`` the one a single PUT would have had (201 stored, 200 already stored with the
same content, 4xx refused) and, when stored, ``fsize``, ``adler32`` and ``url``.
"""
import json

import bottle

from minipanda.api import files, params as route_params, wire
from minipanda.core import filestore, stageout
from minipanda.core.auth import PILOT_ROLES
from minipanda.errors import SC_INVALID, RequestError

ROUTE = "/api/v1/pilot/upload_logs"
MAX_LOGS = 100  # entries in one request: a pilot sends at most as many finals in one updateJobsInBulk
MANIFEST_MAX = 64 * 1024  # bytes of the manifest: 100 entries of the longest names fit
_SKIP_BLOCK = 1 << 20


def upload_logs(params, identity):
    """Store several jobs' log tarballs sent in one body; each entry judged alone."""
    request = bottle.request
    context = request.app.config["minipanda.context"]
    length = _content_length(request.environ.get("CONTENT_LENGTH", ""), context.max_body)
    stream = request.environ["wsgi.input"]
    manifest_length = _manifest_length(request.headers.get("X-Manifest-Length", ""), length)
    entries = manifest(stream.read(manifest_length), manifest_length)
    named = manifest_length + sum(entry["fsize"] for entry in entries)
    if named != length:
        raise RequestError(f"Content-Length: {length} declared, but the manifest and the {len(entries)} files it "
                           f"names make {named} bytes; nothing stored")
    store = files._store_of(context.home)
    refusals = judge(entries, identity)
    results = []
    for entry, refusal in zip(entries, refusals):
        body = _Counted(stream, entry["fsize"])
        try:
            if refusal is not None:
                raise refusal
            created, info = store.put(entry["scope"], entry["lfn"], body, entry["fsize"], context.max_body,
                                      entry["adler32"])
            results.append(dict(info, pandaID=entry["pandaID"], status=201 if created else 200,
                                message="stored" if created else "already stored with the same content",
                                url=files._url(entry["scope"], entry["lfn"])))
        except RequestError as exc:
            results.append({"pandaID": entry["pandaID"], "scope": entry["scope"], "lfn": entry["lfn"],
                            "status": exc.http, "message": str(exc)})
        body.skip_rest()  # the next entry's bytes start where this one's end, whatever became of it
    bottle.response.content_type = "application/json"
    stored = sum(result["status"] in (200, 201) for result in results)
    return wire.envelope({"results": results}, f"{stored} of {len(results)} logs stored")


def _content_length(declared, limit):
    declared = declared.strip()
    if not declared:
        raise RequestError("Content-Length: required (the manifest says how the body splits into files)",
                           SC_INVALID, 411)
    if not declared.isdigit():
        raise RequestError(f"Content-Length: {declared[:30]!r} is not a number")
    length = int(declared)
    if length > limit:
        raise RequestError(f"body: {length} bytes is larger than the server's limit of {limit} bytes", SC_INVALID,
                           413)
    return length


def _manifest_length(header, length):
    header = header.strip()
    if not header.isdigit() or not 0 < int(header) <= min(MANIFEST_MAX, length):
        raise RequestError(f"X-Manifest-Length: expected the manifest's size in bytes, 1 to {MANIFEST_MAX} and at "
                           f"most the Content-Length, got {header[:30]!r}")
    return int(header)


def manifest(raw, expected):
    """The manifest's entries (each with pandaID, scope, lfn, fsize, adler32 as sent; fsize a checked int); a
    RequestError for anything that keeps the body from being split into its files."""
    if len(raw) != expected:
        raise RequestError(f"body: ended after {len(raw)} of the manifest's {expected} bytes; nothing stored")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(f"manifest: not valid JSON ({str(exc)[:80]}); nothing stored") from None
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise RequestError("manifest.files: expected a non-empty list of {pandaID, scope, lfn, fsize, adler32}")
    if len(entries) > MAX_LOGS:
        raise RequestError(f"manifest.files: {len(entries)} entries, at most {MAX_LOGS} in one request; nothing "
                           "stored")
    checked = []
    for index, entry in enumerate(entries):
        size = entry.get("fsize") if isinstance(entry, dict) else None
        if type(size) is not int or size < 0:  # noqa: E721 - a bool is not a size
            raise RequestError(f"manifest.files[{index}].fsize: expected the file's size in bytes, got "
                               f"{str(size)[:30]!r}; without it the body cannot be split; nothing stored")
        checked.append({"pandaID": entry.get("pandaID"), "scope": entry.get("scope"), "lfn": entry.get("lfn"),
                        "fsize": size, "adler32": entry.get("adler32")})
    return checked


def judge(entries, identity):
    """One RequestError (the entry refused) or None (to be stored) per entry: its names and checksum, and
    whether ``identity`` may write that job's log (minipanda.core.stageout); the jobs read in one query."""
    jobs = stageout.staged_jobs(entry["pandaID"] for entry in entries if _panda_id(entry["pandaID"]))
    refusals = []
    for index, entry in enumerate(entries):
        try:
            panda_id = entry["pandaID"]
            if not _panda_id(panda_id):
                raise RequestError(f"manifest.files[{index}].pandaID: expected a PandaID, got {str(panda_id)[:30]!r}")
            filestore.check_name("scope", entry["scope"])  # plain names (where they resolve: FileStore.put)
            filestore.check_name("lfn", entry["lfn"])
            adler = entry["adler32"]
            entry["adler32"] = filestore.parse_checksum(f"ad:{adler}" if isinstance(adler, str) else "x")
            stageout.refusal(identity, panda_id, jobs.get(panda_id), entry["scope"], entry["lfn"], ("log",),
                             entry["fsize"], entry["adler32"])
            refusals.append(None)
        except RequestError as exc:
            refusals.append(exc)
    return refusals


def _panda_id(value):
    """Whether ``value`` can be a PandaID: a positive integer the database's columns hold (not a bool)."""
    return type(value) is int and 0 < value <= route_params.INT64_MAX  # noqa: E721


class _Counted:
    """At most ``size`` bytes of ``stream``, counted, so the rest of an entry can be skipped whatever the store did
    with the beginning of it."""

    def __init__(self, stream, size):
        self.stream, self.left = stream, size
        self._readinto = getattr(stream, "readinto", None)

    def readinto(self, buffer):
        want = min(len(buffer), self.left)
        if want <= 0:
            return 0
        if self._readinto is not None:
            count = self._readinto(memoryview(buffer)[:want]) or 0
        else:
            data = self.stream.read(want)
            count = len(data)
            buffer[:count] = data
        self.left -= count
        if not count:
            self.left = 0  # the body ended: nothing more will come
        return count

    def skip_rest(self):
        while self.left > 0:
            data = self.stream.read(min(self.left, _SKIP_BLOCK))
            if not data:
                return
            self.left -= len(data)


def register(app):
    app.route(ROUTE, "POST", upload_logs, family="v1", role=PILOT_ROLES, params=False)
