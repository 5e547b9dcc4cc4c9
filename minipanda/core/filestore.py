"""The server's file store: ``<home>/files/<scope>/<lfn>``, written by pilots (http stage-out), read by anyone.

Names come from the network, so each is checked against a strict pattern and neither the scope's directory nor the
file may be a symbolic link: a name never leads out of the store. An upload is streamed into a hidden
temporary file next to its target (a leading dot: no valid name can address it), verified (size, adler32), then
linked into place, which fails rather than overwrites when another upload won the race. A stored file never
changes: the same content again is an idempotent success, different content a conflict. The adler32 measured as
a file was stored is kept with it (the extended attribute :data:`RECORD`), so checks of a stored file (a job's
final report, an upload of a name already stored) need not read its bytes again.
"""
import io
import itertools
import os
import re
import stat
import urllib.parse

from minipanda.errors import SC_INVALID, RequestError

try:  # zlib-ng's adler32 (SIMD): ~0.05 ms of CPU per MiB here against zlib's ~0.4, the same values
    from zlib_ng.zlib_ng import adler32
except ImportError:  # a platform without its wheel
    from zlib import adler32

NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}\Z")
SURL_IN_STORE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^/]*)?(?:/[^/]+)*?/files/([^/]+)/([^/]+)$")
CHECKSUM = re.compile(r"^(?:ad|adler32):([0-9a-fA-F]{1,8})\Z")
BLOCK = 1 << 20
RECORD = "user.minipanda.adler32"  # the adler32 measured at PUT time, kept on the stored file's inode


def check_name(field, value):
    """``value`` when it is a plain file name (letters, digits, ``._-``, no leading dot, at most 255); else 400."""
    if not isinstance(value, str) or not NAME.match(value) or value.strip(".") == "":
        raise RequestError(f"{field}: {str(value)[:60]!r} is not a plain name (letters, digits, '._-', no leading "
                           "dot, at most 255 characters)", SC_INVALID, 400)
    return value


def parse_checksum(header):
    """The 8-hex-digit adler32 of an ``X-Checksum: ad:xxxxxxxx`` header; None without one; 400 when malformed."""
    if not header:
        return None
    match = CHECKSUM.match(header.strip())
    if not match:
        raise RequestError(f"X-Checksum: expected 'ad:<8 hex digits>' (adler32), got {header[:60]!r}", SC_INVALID, 400)
    return match.group(1).lower().zfill(8)


def find_file(store, scope, lfn, surl):
    """(scope, lfn, path) of a job file (a row's scope, lfn and surl) stored in ``store``, or None.

    The row's own scope and name come first; a pilot that uploaded under another scope reported where in the surl
    (``.../files/<scope>/<lfn>``). Either way the names pass the store's checks before any use."""
    candidates = [(scope, lfn)] if scope and lfn else []
    match = SURL_IN_STORE.match(urllib.parse.unquote(surl or "").split("?")[0])
    if match:
        candidates.append(match.groups())
    for scope, lfn in candidates:
        try:
            _, path = store.locate(scope, lfn)
        except RequestError:
            continue
        if os.path.isfile(path):
            return scope, lfn, path
    return None


def file_adler32(path):
    value = 1
    with open(path, "rb", buffering=0) as handle:
        for block in _blocks(handle, None):
            value = adler32(block, value)
    return f"{value & 0xffffffff:08x}"


def stored_adler32(path):
    """The adler32 (8 hex digits) of the stored file ``path``: the one recorded when it was stored, else (a file
    copied into the store by hand, a file system without user extended attributes) read from its bytes."""
    try:
        recorded = os.getxattr(path, RECORD, follow_symlinks=False).decode("ascii", "replace")
    except OSError:
        recorded = ""
    return recorded if len(recorded) == 8 and CHECKSUM.match("ad:" + recorded) else file_adler32(path)


def _record(fd, adler32):
    """Keep the measured adler32 with the file being stored (its descriptor ``fd``); where the file system keeps no
    user extended attributes, nothing is kept and stored_adler32 reads the file instead."""
    try:
        os.setxattr(fd, RECORD, adler32.encode("ascii"))
    except OSError:
        pass


def _blocks(stream, length):
    """The bytes of ``stream`` (at most ``length``, all when None) in blocks of at most BLOCK bytes, each valid until
    the next is asked for: a BytesIO's own (its ``read`` of the whole is its buffer, not a copy), else read into one
    buffer (``readinto``), else what ``read`` returns."""
    readinto = None if isinstance(stream, io.BytesIO) else getattr(stream, "readinto", None)
    buffer = memoryview(bytearray(BLOCK if length is None else max(1, min(BLOCK, length)))) if readinto else None
    done = 0
    while length is None or done < length:
        want = BLOCK if length is None else min(BLOCK, length - done)
        if readinto is not None:
            count = readinto(buffer[:want])
            block = buffer[:count]
        else:
            block = stream.read(want)
            count = len(block)
        if not count:
            return
        done += count
        yield block


class FileStore:
    """The store under ``root`` (``<home>/files``).

    An upload is as durable as the database's commits (SQLite's synchronous=NORMAL): once linked it survives a
    crash of the server process (the kernel holds it), not necessarily one of the machine. No fsync: one per upload
    cost more server CPU than the rest of the store's work (docs/operations.md, bench/README.md).
    """

    def __init__(self, root):
        self.root = os.path.realpath(root)

    def locate(self, scope, lfn):
        """(relative path for static_file, absolute path) of a valid name; 400 for anything else.

        The root is resolved once; a valid name holds no '/' and is neither '.' nor '..', so only a symbolic link
        at ``<scope>`` or at ``<scope>/<lfn>`` could lead out of the store: either is refused (``lstat``, never
        followed), two system calls per request where a realpath of the whole path took one per component.
        """
        check_name("scope", scope)
        check_name("lfn", lfn)
        directory = os.path.join(self.root, scope)
        path = os.path.join(directory, lfn)
        for part in (directory, path):
            try:
                mode = os.lstat(part).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break  # not there (yet): nothing below it either
            if stat.S_ISLNK(mode):
                raise RequestError(f"lfn: {scope}/{lfn} resolves outside the file store (a symbolic link in it)",
                                   SC_INVALID, 400)
        return f"{scope}/{lfn}", path

    def info(self, scope, lfn):
        """{scope, lfn, fsize, adler32} of a stored file, or None."""
        _, path = self.locate(scope, lfn)
        if not os.path.isfile(path):
            return None
        return {"scope": scope, "lfn": lfn, "fsize": os.path.getsize(path), "adler32": file_adler32(path)}

    def put(self, scope, lfn, stream, length, limit, adler=None):
        """Store ``stream`` as scope/lfn.

        Args:
            stream: file-like body (wsgi.input).
            length: declared Content-Length, or None to read until end of stream.
            limit: most bytes accepted (413 beyond).
            adler: expected adler32 (8 hex digits) or None.

        Returns:
            (created, info): created False when the same content was stored already. A size or checksum mismatch
            is 400 and a different stored content 409; in every refusal nothing is kept.
        """
        _, path = self.locate(scope, lfn)
        if length is not None and length > limit:
            raise RequestError(f"body: {length} bytes is larger than the server's limit of {limit} bytes",
                               SC_INVALID, 413)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = _temporary(directory)
        try:
            size, value = 0, 1
            with os.fdopen(fd, "wb") as out:
                for block in _blocks(stream, length):
                    size += len(block)
                    if size > limit:
                        raise RequestError(f"body: larger than the server's limit of {limit} bytes", SC_INVALID, 413)
                    value = adler32(block, value)
                    out.write(block)
                found = f"{value & 0xffffffff:08x}"
                if length is not None and size != length:
                    raise RequestError(f"Content-Length: {length} declared, {size} bytes received; nothing stored")
                if adler is not None and adler != found:
                    raise RequestError(f"X-Checksum: adler32 of the received data is {found}, ad:{adler} was "
                                       "declared; nothing stored")
                _record(out.fileno(), found)
            info = {"scope": scope, "lfn": lfn, "fsize": size, "adler32": found}
            try:
                os.link(tmp, path)  # never replaces: a concurrent upload that got there first wins
            except FileExistsError:
                stored = self.info(scope, lfn)
                if stored and stored["adler32"] == found and stored["fsize"] == size:
                    return False, info
                raise RequestError(f"{scope}/{lfn} is already stored with different content (adler32 "
                                   f"{stored and stored['adler32']}, this upload {found}); stored files never "
                                   "change", SC_INVALID, 409) from None
            return True, info
        finally:
            os.unlink(tmp)


_uploads = itertools.count()


def _temporary(directory):
    """(fd, path) of a new hidden file in ``directory`` (a leading dot: no valid name can address it), created
    exclusively and never through a symlink; named by process and counter, not by random letters as mkstemp."""
    while True:
        path = os.path.join(directory, f".upload-{os.getpid()}-{next(_uploads)}.part")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), path
        except FileExistsError:  # a leftover of an earlier process with this pid: take the next number
            continue
