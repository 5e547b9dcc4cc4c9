"""Small file helpers: atomic writes, checksums, name validation, sizes and free space."""
import errno
import fcntl
import json
import logging
import os
import itertools
import re
import signal
import stat
import zlib

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=:,@-]{0,254}\Z")
CHUNK = 64 << 10  # bytes per read of a file: one buffer of it per transfer (the pilot stays small: bench/README.md)
DOWNLOAD_CHUNK = 256 << 10  # bytes per read of a download: fewer socket reads (64 KiB cost ~0.3 ms more per MiB)


def safe_name(name):
    """True when ``name`` (an LFN, a log name, a scope) can be used as one path component.

    Names come from the network: only a plain name is accepted, never '', '.', '..', a '/' or a leading dash.
    """
    return isinstance(name, str) and bool(SAFE_NAME.match(name)) and name not in (".", "..") and ".." not in name


def atomic_write_bytes(path, data, mode=0o644, durable=True):
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    A reader sees the old content or the new, never a part. ``durable`` also flushes the data to the disk before
    the rename (an fsync), so the new content survives a crash of the node: for what must not be lost (a spooled
    final update); a file rewritten as the job goes on (attributes, timing) does without that cost.
    """
    fd, tmp = _temporary(path)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_temporaries = itertools.count()


def _temporary(path):
    """(fd, path) of a new hidden file beside ``path``, created exclusively and never through a link; named by
    process and counter (mkstemp's random names cost a short job more than its writes), the next number taken when
    a leftover holds one."""
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{name}.{os.getpid()}-{next(_temporaries)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue


def create_exclusive(path, mode=0o644):
    """``path`` opened for writing as a new regular file (a buffered binary file object), never through a symlink
    nor into a file that exists: a leftover of an earlier try (a file, or a link itself, not what it points to) is
    removed first."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, flags, mode)
    return os.fdopen(fd, "wb")


def atomic_write_json(path, data, durable=True):
    """Write ``data`` as JSON to ``path`` atomically (temporary name + rename); ``durable`` as for
    :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True, default=str).encode("utf-8"),
                       durable=durable)


class Rewriter:
    """One file rewritten again and again (``worker_attributes.json``: at every report of every job), each rewrite
    atomic for a reader as :func:`atomic_write_bytes`'s, without a new inode each time.

    The new content is written into a kept hidden file beside ``path`` (``.<name>.<pid>.spare``), which then
    trades places with ``path`` in one ``renameat2(RENAME_EXCHANGE)``: a reader opens the old file or the new one,
    whole. The old one, now the spare, is written over by the next rewrite only when no one has it open (a write
    lease, ``F_SETLEASE``, is granted only then); a reader still reading it keeps it, and the rewrite takes a new
    spare. Where the call or the file system does not support it (ENOSYS, EINVAL: an old kernel, NFS), or leases
    are not granted, every rewrite is a new temporary file renamed into place, as before.

    Why: each new inode cost 0.1-0.5 ms of CPU on this VM's journal-less ext4 under a pilot's churn, and is a
    metadata server's round trip on Lustre or NFS (bench/README.md, round 10).
    """

    def __init__(self, path, mode=0o644):
        self.path, self.mode = path, mode
        directory, name = os.path.split(os.path.abspath(path))
        self.spare = os.path.join(directory, f".{name}.{os.getpid()}.spare")
        self.exchanging = _exchange() is not None  # False once the system refused it: create + rename from then on
        self.created = 0  # files created by the rewrites (a spare, or a temporary renamed into place)

    def write(self, data):
        if self.exchanging and _regular_or_missing(self.path):  # never trade places with a directory or a link
            try:
                self._exchange(data)
                return
            except OSError as exc:  # this write goes as before (and fails as before: a full disk)
                if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    log.debug("%s: rewritten through a new file each time (%s)", self.path, exc)
                    self.exchanging = False
                    self.close()
        self.created += 1
        atomic_write_bytes(self.path, data, self.mode, durable=False)

    def _new_spare(self):
        self.created += 1
        return os.open(self.spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def _exchange(self, data):
        try:
            fd = os.open(self.spare, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = self._new_spare()
        except OSError:  # not a regular file of ours (a link planted there): a new one
            os.unlink(self.spare)
            fd = self._new_spare()
        try:
            if not _alone(fd):  # a reader still holds what was the file: leave it that, take a new spare
                os.close(fd)
                os.unlink(self.spare)
                fd = self._new_spare()
                if not _alone(fd):
                    raise OSError(errno.EPERM, "no write lease on a new file")
            try:
                os.ftruncate(fd, 0)
                os.fchmod(fd, self.mode)
                view = memoryview(data)
                while view:
                    view = view[os.pwrite(fd, view, len(data) - len(view)):]
            finally:
                fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)  # before the file is where readers open it
        finally:
            os.close(fd)
        try:
            _exchange()(self.spare, self.path)
        except FileNotFoundError:  # the first write: nothing to trade places with yet
            os.replace(self.spare, self.path)

    def close(self):
        """The spare removed (the pilot's end)."""
        try:
            os.unlink(self.spare)
        except OSError:  # none, or not ours to remove
            pass


def _regular_or_missing(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True


def _alone(fd):
    """True when no other open file description refers to ``fd``'s file (a write lease is granted only then); the
    lease is held until released. Opening the file meanwhile would send SIGURG (ignored unless handled), not
    SIGIO (which would end the pilot)."""
    fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return False
        raise
    return True


_exchanges = []  # the exchange function, looked up once (ctypes, ~0.3 MB, loaded only by a pilot that rewrites)


def _exchange():
    if not _exchanges:
        _exchanges.append(_renameat2_exchange())
    return _exchanges[0]


def _renameat2_exchange():
    """``exchange(a, b)``: ``renameat2(a, b, RENAME_EXCHANGE)`` through the C library (glibc 2.28 on), or None."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (ImportError, OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2

    def exchange(old, new):
        if call(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), rename_exchange) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), new)

    return exchange


def atomic_touch(path):
    """Create an empty ``path`` atomically (an existing file is replaced)."""
    atomic_write_bytes(path, b"")


def read_json(path):
    """The JSON content of ``path``, or None when it is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


_adler32 = []  # the adler32 function of the files' checksums, chosen once (adler32_function)


def adler32_function():
    """``adler32(data, value)`` for files: zlib-ng's (``zlib_ng`` package, SIMD: ~0.05 ms of CPU per MiB here against
    zlib's ~0.4) when the Python running the pilot has it, as psutil is used when present; else zlib's. Both give
    the same values (the pilot stays standard-library only: nothing else depends on it)."""
    if not _adler32:
        try:
            from zlib_ng.zlib_ng import adler32
        except ImportError:
            adler32 = zlib.adler32
        _adler32.append(adler32)
    return _adler32[0]


class Digest:
    """A file's checksum taken as its bytes go by (a download, a copy), so the file is not read again for it.

    ``kind`` is 'adler32' (zlib-ng's when installed, else zlib's: :func:`adler32_function`), 'md5' (hashlib is
    imported only then) or None (the size only); :meth:`hexdigest` gives the form :func:`checksum` gives.
    """

    def __init__(self, kind="adler32"):
        if kind not in ("adler32", "md5", None):
            raise ValueError(f"checksum kind {kind!r}: adler32, md5 or None")
        self.kind, self.value, self.size = kind, 1, 0
        self._md5 = None
        self._adler32 = adler32_function() if kind == "adler32" else None
        if kind == "md5":
            import hashlib

            self._md5 = hashlib.md5()

    def update(self, block):
        self.size += len(block)
        if self._adler32 is not None:
            self.value = self._adler32(block, self.value)
        elif self._md5 is not None:
            self._md5.update(block)

    def hexdigest(self):
        if self.kind is None:
            raise ValueError("this Digest counts the size only")
        return self._md5.hexdigest() if self._md5 is not None else f"{self.value & 0xFFFFFFFF:08x}"


def blocks(handle, size=CHUNK):
    """The content of the binary file ``handle`` (unbuffered or buffered), block by block, read into ONE buffer:
    each yielded memoryview is valid until the next one is asked for."""
    buffer = memoryview(bytearray(size))
    while True:
        count = handle.readinto(buffer)
        if not count:
            return
        yield buffer[:count]


def file_digest(path, kind="adler32"):
    """The :class:`Digest` of a whole file."""
    digest = Digest(kind)
    with open(path, "rb", buffering=0) as handle:
        for block in blocks(handle):
            digest.update(block)
    return digest


def adler32(path):
    """The adler32 checksum of a file as PanDA writes it: 8 lowercase hex digits."""
    return file_digest(path).hexdigest()


def md5(path):
    """The md5 hex digest of a file (hashlib, with OpenSSL's libcrypto, is loaded only for an md5 input)."""
    return file_digest(path, "md5").hexdigest()


def parse_checksum(value):
    """('adler32'|'md5', hex) from PanDA's 'ad:xxxxxxxx' / 'md5:...' forms; (None, None) when absent."""
    if not value or str(value) in ("NULL", "None"):
        return None, None
    kind, _, digest = str(value).partition(":")
    if not digest:
        kind, digest = ("adler32" if len(kind) <= 8 else "md5"), kind
    kind = {"ad": "adler32", "adler32": "adler32", "md5": "md5"}.get(kind.lower())
    return (kind, digest.lower().zfill(8) if kind == "adler32" else digest.lower()) if kind else (None, None)


def checksum(path, kind):
    """The checksum of ``path`` of the given kind ('adler32' or 'md5')."""
    return adler32(path) if kind == "adler32" else md5(path)


def tree_size(path):
    """Bytes held by the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size
    return total


def newest_mtime(path):
    """The newest modification time of ``path`` and everything under it (0 when unreadable)."""
    newest = 0.0
    try:
        newest = os.lstat(path).st_mtime
    except OSError:
        return newest
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return newest


def free_mb(path):
    """MB available to this user on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e6
