"""Staging for nodes without network, through the queue's transport: a job's inputs into the access point, its
outputs out of it to the queue's storage, each file checked by size and adler32 before it takes its name.

Storage ends (a queue's ``storage.input`` and ``storage.output``):

- ``shared``: a directory on the submit host's file system, which the compute nodes see too (the login node's, for
  harvester on an edge host): inputs are copied from ``<path>/<scope>/<lfn>`` (else ``<path>/<lfn>``) into the
  access point, outputs moved (renamed, or copied and removed) to ``<path>/<scope>/<lfn>``, both on that host;
- ``server``: the minipanda server's file store: inputs are downloaded by harvester and sent into the access
  point, outputs fetched from the access point and uploaded (``PUT /files/<scope>/<lfn>`` naming the job in
  ``X-PandaID``: the server stores only that job's outputs and log, and checks the adler32 again);
- ``local``: nothing moves; outputs stay in the access point (checked where they are).

No name from a job or a pilot is used as a path: input names must be plain names, an output path must be
``<pilot directory>/[<scope>/]<lfn>`` with plain names, and every file is reached through
:mod:`harvester.transport.safefiles`, which never follows a symlink at any component and takes regular files only. A
refused or mismatching file raises :class:`HandoffRefused` naming it; a partial transfer is never kept.
"""
import json
import os
import posixpath
import tempfile

from harvester.errors import HandoffRefused, MessengerError, ServerError
from harvester.transport import TransportError
from pilot.copytools import input_url
from pilot.fileutil import parse_checksum, safe_name
from pilot.jobdata import Job


def stage_in(messenger, job, storage, server=None, scratch=None):
    """Place the job's input files in the pilot's directory, verified against the job's sizes and checksums.

    Args:
        messenger: the pilot's :class:`harvester.handoff.messenger.Messenger` (its transport, root and directory).
        job: the job dict (inFiles, scopeIn, fsize, checksum, ... as the pilot reads them: pilot.jobdata).
        storage: the queue's ``storage`` section (or its dict); ``input`` of type shared or server is staged.
        server: harvester's :class:`harvester.client.ServerClient` (type server).
        scratch: a local directory for downloads on their way (type server).
    Returns:
        The paths written, ``<directory>/<lfn>``, where the pilot looks for ``<lfn>``.
    """
    kind, directory, url = _endpoint(storage, "input")
    if kind not in ("shared", "server"):
        return []
    try:
        specs = Job(job).inputs
    except ValueError as exc:
        raise MessengerError(str(exc)) from None
    written = []
    for spec in specs:
        _check_name(spec.lfn, f"job {job.get('PandaID')} inFiles")
        if spec.scope:
            _check_name(spec.scope, f"job {job.get('PandaID')} scopeIn of {spec.lfn}")
        want = spec.checksum if spec.checksum_type == "adler32" else None
        size = spec.fsize or None
        dest = messenger.rel(f"{messenger.directory}/{spec.lfn}")
        if kind == "shared":
            if not directory:
                raise MessengerError("storage.input is shared but has no path")
            _copy_shared(messenger.transport, directory, spec, messenger.root, dest, size, want)
        else:
            _download_and_send(server, scratch, url, spec, messenger, dest, size, want)
        written.append(f"{messenger.directory}/{spec.lfn}")
    return written


def _copy_shared(transport, directory, spec, root, dest, size, want):
    candidates = ([f"{spec.scope}/{spec.lfn}"] if spec.scope else []) + [spec.lfn]
    ops = [{"op": "copy", "src_root": directory, "src": candidate, "dst_root": root, "dst": dest, "size": size,
            "adler32": want} for candidate in candidates]
    refused = []
    for op in ops:  # in order, the first one there wins (one call each: later ones only when it was missing)
        [result] = _files(transport, [op], f"staging in {spec.lfn}")
        if result.get("ok"):
            return result
        if result.get("code") != "missing":
            raise HandoffRefused(f"input {spec.lfn}: {result.get('error')}", f"{directory}/{op['src']}",
                                 result.get("code"))
        refused.append(result.get("error"))
    raise MessengerError(f"input {spec.lfn} not found in {directory} ({'; '.join(refused)})")


def _download_and_send(server, scratch, url, spec, messenger, dest, size, want):
    if server is None or not scratch:
        raise MessengerError("storage.input is the server's file store, but no server client was given")
    template = url or "/files/{scope}/{lfn}"
    os.makedirs(scratch, exist_ok=True)
    fd, local = tempfile.mkstemp(prefix=f".{spec.lfn}.", dir=scratch)
    os.close(fd)
    try:
        try:
            got = server.download(input_url(template, spec), local)
        except ServerError as exc:
            raise MessengerError(f"input {spec.lfn}: {exc}") from None
        if (size and got["size"] != size) or (want and got["adler32"] != want):
            raise HandoffRefused(f"input {spec.lfn} from the server: {got['size']} bytes adler32 {got['adler32']}, "
                                 f"the job says {size} bytes adler32 {want}", local, "mismatch")
        try:
            messenger.transport.send(local, messenger.root, dest)
        except TransportError as exc:
            raise HandoffRefused(f"input {spec.lfn}: {exc}", f"{messenger.root}/{dest}", exc.code or "os") from None
    finally:
        try:
            os.unlink(local)
        except FileNotFoundError:
            pass


def stage_out(messenger, final, storage, server=None, scratch=None, scopes=None):
    """Move the outputs a pilot listed for a job to the queue's output storage, verified.

    Args:
        messenger: the pilot's Messenger; final: its :class:`harvester.handoff.messenger.Final` (``outputs`` are
            event_status entries ``{"type", "path", "guid", "fsize", "chksum"}``; ``path`` must be
            ``<pilot directory>/<lfn>`` or ``<pilot directory>/<scope>/<lfn>`` with plain names).
        storage: the queue's ``storage`` section (or its dict).
        server, scratch: for ``output`` of type server (upload to the file store).
        scopes: lfn -> scope from the job's definition, for an output the pilot left without a scope directory.
    Returns:
        The entries with ``path`` (surl) where each file is now, ``fsize`` and ``chksum`` (adler32) as harvester
        found them. A file moved by an earlier call counts as done.
    Raises:
        HandoffRefused: an output that is not a regular file inside the pilot's directory (a symlink at any
            component, a FIFO, a path elsewhere), or whose adler32 is not the one the pilot reported.
    """
    kind, directory, _ = _endpoint(storage, "output")
    if kind == "shared" and not directory:
        raise MessengerError("storage.output is shared but has no path")
    done = []
    for entry in final.outputs:
        parts = _parts(messenger, entry)
        source = messenger.rel(posixpath.join(messenger.directory, *parts))
        want = parse_checksum(entry.get("chksum"))[1] if entry.get("chksum") else None
        scope = parts[0] if len(parts) == 2 else (scopes or {}).get(parts[-1], "")
        if kind == "shared":
            [result] = _files(messenger.transport, [{"op": "copy", "src_root": messenger.root, "src": source,
                                                     "dst_root": directory, "dst": "/".join(parts),
                                                     "adler32": want, "move": True}], f"staging out {parts[-1]}")
            where = posixpath.join(directory, *parts)
        elif kind == "server":
            result, where = _fetch_and_upload(messenger, source, parts[-1], scope, want, server, scratch,
                                              final.panda_id)
        else:
            [result] = _files(messenger.transport, [{"op": "checksum", "root": messenger.root, "path": source}],
                              f"checking {parts[-1]}")
            where = f"{messenger.root}/{source}"
            if result.get("ok") and want and result["adler32"] != want:
                result = {"ok": False, "code": "mismatch", "error": f"{where} has adler32 {result['adler32']}, "
                                                                    f"the pilot reported {want}"}
        if not result.get("ok"):
            raise HandoffRefused(f"output {entry.get('path')}: {result.get('error')}", entry.get("path"),
                                 result.get("code") or "invalid")
        done.append(dict(entry, path=where, fsize=result["size"], chksum=result["adler32"]))
    return done


def missing_outputs(definition, final):
    """The outputs a job (``definition``: its getJob dict as JSON text, as harvester holds it) declares that a ``finished`` final does not
    list (event_status.dump.json), in the job's order: harvester fails such a job (1165) instead of reporting it
    finished without them, as PanDA's server does (its Adder: "expected output ... is missing in pilot XML"). The
    log is not required (pilot3 3.7.0.36 lists no file, tests/pilot3/NOTES.md), nor an output the job allows to be
    missing (``allowNoOutput``); a final that is not ``finished`` needs none."""
    if (final.params or {}).get("state") != "finished":
        return []
    try:
        spec = Job(json.loads(definition))
    except (ValueError, TypeError, AttributeError):
        return []  # a definition harvester could not read was refused when the job was fed
    listed = {posixpath.basename(entry["path"]) for entry in final.outputs
              if isinstance(entry, dict) and isinstance(entry.get("path"), str)}
    return [out.lfn for out in spec.outputs if out.lfn not in listed and out.lfn not in spec.allow_no_output]


def _fetch_and_upload(messenger, source, lfn, scope, want, server, scratch, panda_id):
    if server is None or not scratch:
        raise MessengerError("storage.output is the server's file store, but no server client was given")
    if not scope:
        raise HandoffRefused(f"output {lfn}: no scope (not in the job, no scope directory)", source)
    os.makedirs(scratch, exist_ok=True)
    fd, local = tempfile.mkstemp(prefix=f".{lfn}.", dir=scratch)
    os.close(fd)
    try:
        try:
            got = messenger.transport.fetch(messenger.root, source, local)
        except TransportError as exc:
            return {"ok": False, "code": exc.code, "error": str(exc)}, None
        if want and got["adler32"] != want:
            return {"ok": False, "code": "mismatch", "error": f"adler32 {got['adler32']}, the pilot reported "
                                                              f"{want}"}, None
        try:
            stored = server.upload(scope, lfn, local, got["adler32"], panda_id)
        except ServerError as exc:
            if exc.transient:
                raise  # tried again next cycle: nothing is decided
            return {"ok": False, "code": "refused", "error": f"the server's file store refused it: {exc}"}, None
        return {"ok": True, **got}, stored.get("url") or f"/files/{scope}/{lfn}"
    finally:
        try:
            os.unlink(local)
        except FileNotFoundError:
            pass


def _parts(messenger, entry):
    path = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(path, str) or "\0" in path or not path.startswith("/"):
        raise HandoffRefused(f"output path {str(path)[:200]!r} in {messenger.path('event_status')} is not an "
                             "absolute path", messenger.path("event_status"))
    normal = posixpath.normpath(path)
    base = messenger.directory + "/"
    parts = normal[len(base):].split("/") if normal.startswith(base) else []
    if not 1 <= len(parts) <= 2 or not all(safe_name(p) for p in parts):
        raise HandoffRefused(f"output path {path[:200]!r} is not <pilot directory>/[<scope>/]<lfn> with plain names",
                             path)
    return parts


def _files(transport, ops, what):
    try:
        return transport.files(ops)
    except TransportError as exc:
        raise MessengerError(f"{what}: {exc}") from None


def _check_name(name, what):
    if not safe_name(name):
        raise MessengerError(f"{what}: {str(name)[:200]!r} is not a plain file name")


def _endpoint(storage, side):
    """(type, path, url) of ``storage.input`` or ``storage.output`` (a queueconfig Storage or its dict)."""
    end = getattr(storage, side, None) if not isinstance(storage, dict) else storage.get(side)
    if end is None:
        raise MessengerError(f"storage has no {side} endpoint")
    if isinstance(end, dict):
        kind, path, url = end.get("type", "local"), end.get("path"), end.get("url")
    else:
        kind, path, url = getattr(end, "type", "local"), getattr(end, "path", None), getattr(end, "url", None)
    return kind, (posixpath.normpath(str(path)) if path else None), url
