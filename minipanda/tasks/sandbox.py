"""prun's sandbox cache: the user's code as a gzipped tar, uploaded before the task and fetched by its jobs.

A sandbox is stored in the server's file store under its owner's scope (``files/user.<name>/<archive>``, the
adler32 checked as every stored file) and indexed in ``<home>/sandboxes/<name>/<archive>.json`` with its size and
the CRC32 of its gzip trailer, which is what panda-client sends to ask whether the same sandbox is there already
(PanDA's duplicate check: same user, same size, same checksum). Before anything is kept, an upload is checked:
a plain ``.tar.gz``/``.tgz`` name (no ``/``, no ``..``), at most the server's body limit, a gzip stream whose CRC
and length are right and a tar archive whose members stay inside the directory it is unpacked in. An archive
name belongs to one user: jobs fetch it as ``<server>/cache/<archive>`` (minipanda's runGen), so the name alone
must say whose it is.
"""
import gzip
import json
import os
import re
import struct
import tarfile
import tempfile
import zlib

from minipanda.core import filestore, states
from minipanda.errors import SC_INVALID, RequestError

SANDBOX_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.(?:tar\.gz|tgz)\Z")
BLOCK = 1 << 20


def check_name(name):
    """``name`` when it is a plain sandbox archive name; else RequestError naming it."""
    if not isinstance(name, str) or not name:
        raise RequestError("file: the sandbox needs a file name (prun's jobO.<uuid>.tar.gz or sources.<uuid>.tar.gz)")
    if "/" in name or "\\" in name or ".." in name:
        raise RequestError(f"sandbox name {name[:80]!r}: a plain file name is required, without '/' or '..'")
    if not SANDBOX_NAME.match(name):
        raise RequestError(f"sandbox name {name[:80]!r}: expected a gzipped tar named <letters, digits, ._->.tar.gz "
                           "(or .tgz)")
    return name


def verify_archive(name, handle):
    """Check that ``handle`` (a seekable binary file) holds an intact gzipped tar whose members stay inside the
    directory it is unpacked in; RequestError naming the sandbox and what is wrong otherwise."""
    try:
        handle.seek(0)
        with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:  # reading to the end checks CRC and length
            while unzipped.read(BLOCK):
                pass
        handle.seek(0)
        with tarfile.open(fileobj=handle, mode="r:gz") as archive:
            members = archive.getmembers()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise RequestError(f"sandbox {name}: not a valid gzipped tar archive ({exc}); nothing stored") from None
    for member in members:
        parts = member.name.replace("\\", "/").split("/")
        if member.name.startswith("/") or ".." in parts:
            raise RequestError(f"sandbox {name}: member {member.name[:120]!r} would be unpacked outside the job's "
                               "directory; nothing stored")
        if member.issym() or member.islnk():
            target = member.linkname.replace("\\", "/")
            if target.startswith("/") or ".." in target.split("/"):
                raise RequestError(f"sandbox {name}: link {member.name[:120]!r} points outside the job's directory "
                                   f"({target[:120]!r}); nothing stored")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise RequestError(f"sandbox {name}: member {member.name[:120]!r} is not a file, directory or link; "
                               "nothing stored")
    handle.seek(0)


class Sandboxes:
    """The sandboxes of the server whose home is ``home``."""

    def __init__(self, home):
        self.store = filestore.FileStore(os.path.join(home, "files"))
        self.index = os.path.realpath(os.path.join(home, "sandboxes"))

    @staticmethod
    def scope(user):
        return filestore.check_name("scope", f"user.{user}")

    def _entry(self, user, name):
        self.scope(user)  # the user name is a plain name
        return os.path.join(self.index, user, check_name(name) + ".json")

    def _read(self, path):
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def owner(self, name):
        """The user who uploaded sandbox ``name``, or None."""
        check_name(name)
        try:
            users = sorted(os.listdir(self.index))
        except FileNotFoundError:
            return None
        for user in users:
            if filestore.NAME.match(f"user.{user}") and os.path.isfile(os.path.join(self.index, user, name + ".json")):
                return user
        return None

    def info(self, user, name):
        """The index entry of ``user``'s sandbox ``name`` whose file is in the store, or None."""
        entry = self._read(self._entry(user, name))
        if entry is None or self.store.info(self.scope(user), name) is None:
            return None
        return entry

    def find(self, user, size, crc32):
        """The name of ``user``'s sandbox of this size and gzip CRC32, or None (PanDA's duplicate check)."""
        try:
            names = sorted(os.listdir(os.path.join(self.index, user)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        for entry_name in names:
            if not entry_name.endswith(".json") or not SANDBOX_NAME.match(entry_name[:-5]):
                continue
            entry = self._read(os.path.join(self.index, user, entry_name))
            if entry and entry.get("fsize") == size and entry.get("crc32") == crc32 and \
                    self.store.info(self.scope(user), entry["name"]) is not None:
                # the entry's time is the sandbox's last use: the retention duty keeps it that long after
                os.utime(os.path.join(self.index, user, entry_name))
                return entry["name"]
        return None

    def add(self, user, name, handle, limit):
        """Store ``handle`` (a seekable binary file) as ``user``'s sandbox ``name``.

        Returns:
            (created, entry): created False when the same content was stored already.

        Raises:
            RequestError: a bad name, a size over ``limit`` (413), a corrupt archive, a name another user's
                sandbox has (409), or different content under a name already stored (409). Nothing is kept.
        """
        check_name(name)
        scope = self.scope(user)
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size > limit:
            raise RequestError(f"sandbox {name}: {size} bytes is larger than the server's limit of {limit} bytes "
                               "(minipanda serve --max-body-mb); nothing stored", SC_INVALID, 413)
        if size < 18:
            raise RequestError(f"sandbox {name}: {size} bytes is too short for a gzipped tar; nothing stored")
        verify_archive(name, handle)
        other = self.owner(name)
        if other is not None and other != user:
            raise RequestError(f"sandbox {name}: the name is taken by another user's sandbox; upload it under "
                               "another name", SC_INVALID, 409)
        handle.seek(-8, os.SEEK_END)
        crc32, _ = struct.unpack("<II", handle.read(8))
        handle.seek(0)
        created, stored = self.store.put(scope, name, handle, size, limit)
        entry = {"name": name, "user": user, "scope": scope, "fsize": size, "crc32": crc32,
                 "adler32": stored["adler32"], "created": states.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
        path = self._entry(user, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".entry-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entry, out)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return created, entry

    def locate(self, name):
        """(owner, relative path in the store, absolute path) of sandbox ``name``, or None."""
        user = self.owner(name)
        if user is None:
            return None
        relative, path = self.store.locate(self.scope(user), name)
        return (user, relative, path) if os.path.isfile(path) else None


ARCHIVE_OPTION = re.compile(r"(?:^|\s)-a\s+(\"[^\"]*\"|'[^']*'|\S+)")


def task_sandbox(job_pars):
    """The sandbox name a JEDI task's job parameters give with ``-a`` (runGen's archive option), or None."""
    match = ARCHIVE_OPTION.search(job_pars or "")
    return match.group(1).strip("\"'") if match else None


def check_task_sandbox(sandboxes, job_pars, user):
    """Errors (field named) when the task's ``-a`` sandbox is not one ``user`` uploaded; [] when it is or none is
    named."""
    name = task_sandbox(job_pars)
    if name is None:
        return []
    try:
        check_name(name)
    except RequestError as exc:
        return [f"jobParameters: -a {name[:80]}: {exc}"]
    if sandboxes.info(user, name) is None:
        return [f"jobParameters: -a {name}: no sandbox of that name was uploaded by {user} (prun uploads it "
                "with file_server/upload_cache_file before it submits the task)"]
    return []
