"""The walk below a trusted root that the safe file operations stand on: never through a symlink, regular files only.

Each path is relative to a *root* the queue's configuration names, split into components (no '..', no absolute
path) and walked one component at a time from the root's descriptor (``openat`` with ``O_NOFOLLOW``); a file is
opened once and then checked on its descriptor (``fstat``), so nothing can be swapped in between a check and a use.
A path that is not what an operation needs is :class:`Refused` with a code (:mod:`harvester.transport.safefiles`
lists them).

Part of the program the SSH transport runs on the submit host (:mod:`harvester.transport.safehelper`): standard
library only, Python 3.6.
"""
import base64
import errno
import os
import stat
import zlib

BLOCK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block the open
KINDS = ((stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"))


class Refused(Exception):
    """A path that is not what the operation needs; ``code`` says why (the codes: :mod:`harvester.transport.safefiles`)."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def kind_of(mode):
    """'f' regular file, 'd' directory, 'l' symlink, 'o' anything else."""
    for test, letter in KINDS:
        if test(mode):
            return letter
    return "o"


def split(rel):
    """The components of a relative path; Refused for an absolute path, '.', '..', an empty part or a NUL."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        raise Refused("invalid", "%r is not a relative path" % (rel,))
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Refused("invalid", "%r has an empty, '.' or '..' component" % (rel,))
    return parts


def open_root(root, create=False):
    """The root's descriptor: the root itself is configuration (its own components may be symlinks); ``create``
    makes it first when it is missing."""
    if not isinstance(root, str) or not root.startswith("/"):
        raise Refused("invalid", "root %r is not an absolute path" % (root,))
    try:
        if create:
            os.makedirs(root, 0o755, exist_ok=True)
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise refusal(exc, root)


def refusal(exc, path, fd=None, name=None):
    """A Refused for an OSError on ``path``, telling a symlink from other failures."""
    if exc.errno == errno.ENOENT:
        return Refused("missing", "%s: no such file or directory" % path)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and fd is not None and name is not None:
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode):
            return Refused("symlink", "%s is a symlink: never followed" % path)
        if exc.errno == errno.ENOTDIR:
            return Refused("not_dir", "%s is not a directory" % path)
    if exc.errno == errno.ELOOP:
        return Refused("symlink", "%s is a symlink: never followed" % path)
    if exc.errno == errno.EEXIST:
        return Refused("exists", "%s exists" % path)
    return Refused("os", "%s: %s" % (path, exc.strerror or exc))


def open_dir(root_fd, root, parts, create=False, mode=0o755):
    """The descriptor of directory ``root/parts...``, each component opened without following a symlink (and
    made, with ``create``)."""
    fd, path = os.dup(root_fd), root
    try:
        for part in parts:
            path = path.rstrip("/") + "/" + part
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno != errno.ENOENT or not create:
                    raise refusal(exc, path, fd, part)
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as again:
                    raise refusal(again, path, fd, part)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file(root_fd, root, rel, limit=None):
    """(descriptor, fstat) of the regular file ``root/rel``; Refused when a component is a symlink, the file is
    not regular, or it is larger than ``limit`` bytes."""
    parts = split(rel)
    path = root.rstrip("/") + "/" + rel
    try:
        folder = open_dir(root_fd, root, parts[:-1])
    except Refused as exc:
        raise Refused(exc.code, "%s: %s" % (path, exc))
    try:
        try:
            fd = os.open(parts[-1], FILE_FLAGS, dir_fd=folder)
        except OSError as exc:
            raise refusal(exc, path, folder, parts[-1])
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise Refused("not_regular", "%s is not a regular file" % path)
    if limit is not None and info.st_size > limit:
        os.close(fd)
        raise Refused("too_large", "%s is %d bytes, over the limit of %d bytes" % (path, info.st_size, limit))
    return fd, info


def read_fd(fd, limit=None):
    """The content of an open file (at most ``limit`` + 1 bytes, so a file that grew is seen as too large)."""
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, BLOCK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            raise Refused("too_large", "grew past the limit of %d bytes while read" % limit)


def adler32_fd(fd):
    """(size, adler32 as 8 hex digits) of an open file, read from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    value, size = 1, 0
    while True:
        chunk = os.read(fd, BLOCK)
        if not chunk:
            return size, "%08x" % (value & 0xffffffff)
        value = zlib.adler32(chunk, value)
        size += len(chunk)


def temp_file(folder, name):
    """A new temporary file (O_EXCL, never through a symlink) next to ``name`` in directory ``folder``."""
    for attempt in range(100):
        temp = ".%s.%s.tmp" % (name[:200], base64.b16encode(os.urandom(6)).decode().lower())
        try:
            return temp, os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                 dir_fd=folder)
        except FileExistsError:
            continue
    raise Refused("os", "no free temporary name for %s" % name)


def unlink_quietly(name, folder):
    """Unlink ``name`` in directory ``folder`` when it is there (a leftover temporary name)."""
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        pass


def expect(path, have, size, adler32):
    """Refused ``mismatch`` unless ``have`` (size, adler32) is the ``size`` and ``adler32`` expected (when given)."""
    if size is not None and int(size) != have[0]:
        raise Refused("mismatch", "%s is %d bytes, %s expected" % (path, have[0], size))
    if adler32 and str(adler32).split(":")[-1].lower().zfill(8) != have[1]:
        raise Refused("mismatch", "%s has adler32 %s, %s expected" % (path, have[1], adler32))


def pump(source, target):
    """Copy descriptor ``source`` to descriptor ``target`` from where each stands, block by block."""
    while True:
        chunk = os.read(source, BLOCK)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view):]
