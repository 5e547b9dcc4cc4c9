"""A job's logs for the job page: the log tarball its pilot uploaded to the server's file store
(``<home>/files/<scope>/<lfn>``, when the queue's output storage is ``server``), the files inside it (the
payload's ``payload.stdout`` and ``payload.stderr``, the pilot's ``pilotlog.txt``) and the ends of the first two.

A member is found by its exact name in the tarball's own listing, never used as a path; only regular files are
offered; reads stop after a bounded number of members and bytes, so an odd tarball cannot hold the page up.
"""
import os
import tarfile
import urllib.parse

from minipanda.core import filestore
from minipanda.errors import RequestError

SHOWN = ("payload.stdout", "payload.stderr")  # their ends are shown on the job page
PILOT_LOG = "pilotlog.txt"
MAX_TARBALL = 256 * 1024 * 1024  # larger tarballs are offered for download, not opened
MAX_MEMBERS = 5000
TAIL_BYTES = 16 * 1024  # shown on the page
MAX_MEMBER_BYTES = 8 * 1024 * 1024  # served by the member route (the end of a larger file)


def store(home):
    return filestore.FileStore(os.path.join(home, "files"))


def locate(home, log_file):
    """(scope, lfn, path) of a job's log tarball in the file store, or None (see filestore.find_file)."""
    if log_file is None:
        return None
    return filestore.find_file(store(home), log_file.scope, log_file.lfn, log_file.surl)


def _member_name(name):
    """'PandaJob_1/payload.stdout' -> 'payload.stdout' (the part below the tarball's top directory)."""
    return name.split("/", 1)[1] if "/" in name else name


def members(path):
    """[{name, size}] of the regular files in the tarball (names below its top directory)."""
    out = []
    with tarfile.open(path, "r:*") as tar:
        for count, info in enumerate(tar):
            if count >= MAX_MEMBERS:
                break
            if info.isfile():
                out.append({"name": _member_name(info.name), "size": info.size})
    return out


def read_member(path, name, limit):
    """(the last ``limit`` bytes of member ``name``, whether it was cut); RequestError 404 when absent."""
    with tarfile.open(path, "r:*") as tar:
        for count, info in enumerate(tar):
            if count >= MAX_MEMBERS:
                break
            if info.isfile() and _member_name(info.name) == name:
                handle = tar.extractfile(info)
                if info.size > limit:
                    handle.seek(info.size - limit)
                return handle.read(limit), info.size > limit
    raise RequestError(f"{name} is not in the job's log tarball", http=404)


def describe(home, job, log_file, base, may_read=lambda scope: True):
    """The job page's logs section: the tarball (if stored), its files with links, and the ends of the payload's
    stdout and stderr and the pilot log. ``base`` is the job's monitor URL; links are made below it.
    ``may_read(scope)`` says whether the caller may read the file store scope the tarball is in."""
    if log_file is None:
        return {"tarball": None, "note": "the job has no log file", "files": [], "tails": []}
    info = {"scope": log_file.scope, "lfn": log_file.lfn, "surl": log_file.surl}
    found = locate(home, log_file)
    if found is None:
        note = ("the log tarball is not in the server's file store (the pilot has not uploaded it, or the queue "
                "keeps logs elsewhere" + (f": {log_file.surl}" if log_file.surl else "") + ")")
        return {"tarball": None, "log_file": info, "note": note, "files": [], "tails": []}
    scope, lfn, path = found
    if not may_read(scope):
        return {"tarball": None, "log_file": info, "files": [], "tails": [],
                "note": f"the log tarball is in scope {scope}, which this token may not read"}
    size = os.path.getsize(path)
    out = {"tarball": dict(info, scope=scope, lfn=lfn, fsize=size, url=f"{base}/logtarball"), "note": "",
           "files": [], "tails": []}
    if size > MAX_TARBALL:
        out["note"] = f"the log tarball holds {size} bytes: download it to read it"
        return out
    try:
        found = members(path)
        out["files"] = [dict(m, url=f"{base}/log/{urllib.parse.quote(m['name'])}") for m in found]
        names = {m["name"] for m in found}
        for name in SHOWN + (PILOT_LOG,):
            if name in names:
                data, cut = read_member(path, name, TAIL_BYTES)
                out["tails"].append({"name": name, "text": data.decode("utf-8", "replace"), "cut": cut,
                                     "url": f"{base}/log/{urllib.parse.quote(name)}"})
    except (tarfile.TarError, OSError, EOFError) as exc:
        out["note"] = f"the log tarball cannot be read: {type(exc).__name__}: {str(exc)[:200]}"
    return out
