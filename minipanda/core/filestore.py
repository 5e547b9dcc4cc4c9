"""The server's file store: ``<home>/files/<scope>/<lfn>``, written by pilots (http stage-out), read by anyone.

Names come from the network, so each is checked against a strict pattern and neither the scope's directory nor the
file may be a symbolic link: a name never leads out of the store. An upload is streamed into an unnamed file in
its target's directory (O_TMPFILE; where that is not supported, a hidden temporary whose leading dot no valid name
can address), verified (size, adler32), then linked into place, which fails rather than overwrites when another
upload won the race. A stored file never
changes: the same content again is an idempotent success, different content a conflict. The adler32 measured as
a file was stored is kept with it (the extended attribute :data:`RECORD`), so checks of a stored file (a job's
final report, an upload of a name already stored) need not read its bytes again.
"""
import errno
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
        dir_fd = _open_directory(directory)
        fd, tmp = _temporary(dir_fd)
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
                out.flush()
                info = {"scope": scope, "lfn": lfn, "fsize": size, "adler32": found}
                try:  # never replaces: a concurrent upload that got there first wins
                    _link(out.fileno(), tmp, dir_fd, os.path.basename(path))
                except FileExistsError:
                    stored = self.info(scope, lfn)
                    if stored and stored["adler32"] == found and stored["fsize"] == size:
                        return False, info
                    raise RequestError(f"{scope}/{lfn} is already stored with different content (adler32 "
                                       f"{stored and stored['adler32']}, this upload {found}); stored files never "
                                       "change", SC_INVALID, 409) from None
            return True, info
        finally:
            if tmp is not None:
                os.unlink(tmp, dir_fd=dir_fd)
            os.close(dir_fd)

_uploads = itertools.count()
# An upload is written to an unnamed file (O_TMPFILE) and linked into place by its descriptor (linkat through
# /proc/self/fd): no hidden name is made and removed per upload (two directory changes of three; on a file system
# where a new inode is dear, every saved directory operation counts), and an upload cut short by a crash of the
# server leaves nothing behind, where a named temporary stayed forever. A kernel, file system or /proc without it:
# a hidden named temporary, as before.
_UNNAMED = [hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")]
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_directory(directory):
    """A descriptor of the scope's ``directory`` (made when missing), never opened through a symlink: the file is
    made and linked relative to it, so the directory checked is the one written to."""
    try:
        return os.open(directory, _DIRECTORY_FLAGS)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        return os.open(directory, _DIRECTORY_FLAGS)


def _temporary(dir_fd):
    """(fd, None) of a new unnamed file in the directory ``dir_fd``, or where that is not supported (fd, name) of
    a new hidden file there (a leading dot: no valid name can address it), created exclusively and never through a
    symlink; named by process and counter, not by random letters as mkstemp."""
    if _UNNAMED[0]:
        try:
            return os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            _UNNAMED[0] = False  # this kernel or file system cannot: named temporaries from now on
    while True:
        name = f".upload-{os.getpid()}-{next(_uploads)}.part"
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                           dir_fd=dir_fd), name
        except FileExistsError:  # a leftover of an earlier process with this pid: take the next number
            continue


def _link(fd, tmp, dir_fd, name):
    """Give the written file (``fd``; named ``tmp`` in ``dir_fd``, or unnamed when ``tmp`` is None) the ``name``
    in ``dir_fd``; FileExistsError when the name is taken (never replaced)."""
    if tmp is None:  # the descriptor's /proc link, followed (linkat AT_SYMLINK_FOLLOW: dst_dir_fd makes os.link use it)
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd)
    else:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
