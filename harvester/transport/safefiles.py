"""File operations below a trusted directory that never follow a symlink and never read what is not a regular file.

Access points are written by pilots and whatever their payloads run: every name in them is hostile. So each path
is given relative to a *root* the queue's configuration names (a workers directory, a storage path), and walked
one component at a time from the root's descriptor (``openat`` with ``O_NOFOLLOW``): a symlink anywhere below the
root, a FIFO, a device or a directory where a file should be is refused with a reason, and a file is opened once
and then checked on its descriptor (``fstat``), so nothing can be swapped in between a check and a use. Writes go
to a fresh temporary name in the target directory and are renamed into place (readers see the old file or the
whole new one); copies and moves are verified by size and adler32 before they are renamed into place.

The same code runs on both sides: harvester's local transport calls :func:`run_ops` in its own process; the SSH
transport runs it on the submit host as ``python3 -c <program>`` with the operations as JSON on stdin, ONE exec for
a whole batch of operations (a cycle's listing of every access point of a queue is one call): the program is this
module with :mod:`harvester.transport.safepaths` (the walk) and :mod:`harvester.transport.safehelper` (JSON in and
out, whole files streamed). That is why they import nothing but the standard library and keep to Python 3.6. SFTP
(version 3, what OpenSSH speaks) cannot do this: it has no ``O_NOFOLLOW`` and its stat carries no inode, so an
``lstat`` then ``open`` over SFTP can be raced.

An operation is a dict with ``op`` and its fields; :func:`run_ops` returns one result dict per operation, in
order, each ``{"ok": true, ...}`` or ``{"ok": false, "code": <why>, "error": <text naming the path>}``: one bad
path never fails the others. Codes: ``missing``, ``symlink``, ``not_regular``, ``not_dir``, ``too_large``,
``exists``, ``mismatch``, ``invalid``, ``os``.
"""
import errno
import fnmatch
import os
import stat

from harvester.transport.safepaths import (DIR_FLAGS, FILE_FLAGS, Refused, adler32_fd, expect, kind_of, open_dir,
                                           open_file, open_root, pump, read_fd, refusal, split, temp_file,
                                           unlink_quietly)


def _place(folder, temp, name, exclusive, path):
    """Rename ``temp`` to ``name`` in ``folder``; with ``exclusive``, only when ``name`` does not exist yet (a hard
    link, atomic; where hard links are not supported, a check then a rename)."""
    if not exclusive:
        os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
        return
    try:
        os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        raise Refused("exists", "%s exists: not replaced" % path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        try:
            os.stat(name, dir_fd=folder, follow_symlinks=False)
            raise Refused("exists", "%s exists: not replaced" % path)
        except FileNotFoundError:
            os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            return
    unlink_quietly(temp, folder)


def write(root, path, data, mode=0o644, exclusive=False, makedirs=False, dir_mode=0o755):
    """Write ``data`` to ``root/path`` atomically with ``mode``; ``exclusive``: never replace an existing file."""
    parts = split(path)
    root_fd = open_root(root)
    try:
        folder = open_dir(root_fd, root, parts[:-1], create=makedirs, mode=dir_mode)
    finally:
        os.close(root_fd)
    temp = None
    try:
        temp, fd = temp_file(folder, parts[-1])
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # explicit: the umask does not decide who may read a token
            os.fsync(fd)
        finally:
            os.close(fd)
        _place(folder, temp, parts[-1], exclusive, root.rstrip("/") + "/" + path)
        temp = None
        return {"size": len(data)}
    finally:
        if temp is not None:
            unlink_quietly(temp, folder)
        os.close(folder)


def mkdir(root, path, mode=0o755):
    """Make directory ``root/path`` and its parents (the root's too; an existing real directory is fine)."""
    root_fd = open_root(root, create=True)
    try:
        os.close(open_dir(root_fd, root, split(path), create=True, mode=mode))
    finally:
        os.close(root_fd)
    return {}


def read(root, paths, limit=None):
    """The content of each regular file in ``paths`` (a dict path -> {"data"} or {"code", "error", "size"})."""
    root_fd = open_root(root)
    found = {}
    try:
        for rel in paths:
            try:
                fd, info = open_file(root_fd, root, rel, limit)
                try:
                    found[rel] = {"data": read_fd(fd, limit), "size": info.st_size, "mtime": info.st_mtime}
                finally:
                    os.close(fd)
            except Refused as exc:
                found[rel] = {"code": exc.code, "error": str(exc)}
    finally:
        os.close(root_fd)
    return {"files": found}


def scan(root, only=None, depth=4, descend=(), skip=()):
    """Every entry below ``root`` down to ``depth`` levels, without following symlinks: ``[rel, kind, size, mtime,
    ctime]`` each. The directories of the first level (``only`` of them, when given, minus ``skip``) are all
    listed; deeper directories only when their name matches a ``descend`` pattern. A missing root lists nothing."""
    try:
        root_fd = open_root(root)
    except Refused as exc:
        if exc.code == "missing":
            return {"entries": []}
        raise
    entries = []
    wanted = set(only) if only is not None else None
    try:
        _scan(root_fd, "", 1, depth, wanted, tuple(descend), set(skip), entries)
    finally:
        os.close(root_fd)
    return {"entries": entries}


def _scan(fd, prefix, level, depth, wanted, descend, skip, entries):
    try:
        names = os.listdir(fd)
    except OSError:
        return
    for name in sorted(names):
        if level == 1 and (name in skip or (wanted is not None and name not in wanted)):
            continue
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile
        kind = kind_of(info.st_mode)
        rel = prefix + name
        entries.append([rel, kind, info.st_size, info.st_mtime, info.st_ctime])
        if kind != "d" or level >= depth or (level > 1 and not any(fnmatch.fnmatchcase(name, p) for p in descend)):
            continue
        try:
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # swapped for a symlink, or removed, since the stat
        try:
            _scan(child, rel + "/", level + 1, depth, wanted, descend, skip, entries)
        finally:
            os.close(child)


def rename(root, src, dst):
    """Rename ``root/src`` to ``root/dst`` (both directories walked without following symlinks); a missing source
    is ``missing``: someone else renamed it first."""
    src_parts, dst_parts = split(src), split(dst)
    root_fd = open_root(root)
    try:
        a = open_dir(root_fd, root, src_parts[:-1])
        try:
            b = open_dir(root_fd, root, dst_parts[:-1], create=True, mode=0o755)
            try:
                os.rename(src_parts[-1], dst_parts[-1], src_dir_fd=a, dst_dir_fd=b)
            except OSError as exc:
                raise refusal(exc, root.rstrip("/") + "/" + src)
            finally:
                os.close(b)
        finally:
            os.close(a)
    finally:
        os.close(root_fd)
    return {}


def remove(root, paths):
    """Unlink each of ``paths`` (a missing one is fine; a directory is refused)."""
    root_fd = open_root(root)
    gone = {}
    try:
        for rel in paths:
            parts = split(rel)
            try:
                folder = open_dir(root_fd, root, parts[:-1])
            except Refused as exc:
                gone[rel] = exc.code if exc.code != "missing" else "ok"
                continue
            try:
                os.unlink(parts[-1], dir_fd=folder)
                gone[rel] = "ok"
            except FileNotFoundError:
                gone[rel] = "ok"
            except OSError as exc:
                gone[rel] = refusal(exc, root + "/" + rel).code
            finally:
                os.close(folder)
    finally:
        os.close(root_fd)
    return {"removed": gone}


def checksum(root, path, limit=None):
    """(size, adler32) of the regular file ``root/path``."""
    root_fd = open_root(root)
    try:
        fd, _ = open_file(root_fd, root, path, limit)
    finally:
        os.close(root_fd)
    try:
        size, adler = adler32_fd(fd)
    finally:
        os.close(fd)
    return {"size": size, "adler32": adler}


def copy(src_root, src, dst_root, dst, mode=0o644, size=None, adler32=None, move=False):
    """Copy (``move``: rename, or copy then unlink) the regular file ``src_root/src`` to ``dst_root/dst``, verified:
    the source's adler32 is computed first and must equal ``adler32`` (and its size ``size``) when given; the copy
    is written under a temporary name, checked against the source's size and adler32, then renamed into place.
    Nothing is made at the destination before the source passed. A destination that already holds the same
    content counts as done (a repeat after a crash)."""
    src_parts, dst_parts = split(src), split(dst)
    src_path, dst_path = src_root.rstrip("/") + "/" + src, dst_root.rstrip("/") + "/" + dst
    src_root_fd = open_root(src_root)
    try:
        try:
            fd, _ = open_file(src_root_fd, src_root, src)
        except Refused as exc:
            if exc.code != "missing" or not move:
                raise
            return _already_there(dst_root, dst, size, adler32, exc)
        try:
            have = adler32_fd(fd)
            expect(src_path, have, size, adler32)
            dst_root_fd = open_root(dst_root, create=True)
            try:
                target = open_dir(dst_root_fd, dst_root, dst_parts[:-1], create=True, mode=0o755)
            finally:
                os.close(dst_root_fd)
            try:
                how = _put(fd, have, src_root_fd, src_root, src_parts, src_path, target, dst_parts[-1], dst_path,
                           mode, move)
            finally:
                os.close(target)
            return {"size": have[0], "adler32": have[1], "how": how}
        finally:
            os.close(fd)
    finally:
        os.close(src_root_fd)


def _put(fd, have, src_root_fd, src_root, src_parts, src_path, target, name, dst_path, mode, move):
    """Place the checked open source ``fd`` as ``name`` in directory ``target``; how it was done."""
    if move and _same_content(target, name, have):
        _unlink_at(src_root_fd, src_root, src_parts)
        return "already there"
    if move:
        source_dir = open_dir(src_root_fd, src_root, src_parts[:-1])
        try:
            os.rename(src_parts[-1], name, src_dir_fd=source_dir, dst_dir_fd=target)
            _check_same_file(fd, target, name, src_path)
            return "renamed"
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise refusal(exc, dst_path)
        finally:
            os.close(source_dir)
    temp, out = temp_file(target, name)
    try:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            pump(fd, out)
            os.fchmod(out, mode)
            os.fsync(out)
            copied = adler32_fd(out)
        finally:
            os.close(out)
        if copied != have:
            raise Refused("mismatch", "the copy of %s to %s has size %d adler32 %s, the source %d %s" % (
                src_path, dst_path, copied[0], copied[1], have[0], have[1]))
        os.rename(temp, name, src_dir_fd=target, dst_dir_fd=target)
        temp = None
    finally:
        if temp is not None:
            unlink_quietly(temp, target)
    if move:
        _unlink_at(src_root_fd, src_root, src_parts)
    return "copied"


def _check_same_file(fd, folder, name, path):
    """A rename moves a name, not the file that was checked: when the name was swapped for something else since
    the check (a symlink, another file), what arrived is removed and the move refused."""
    info, now = os.fstat(fd), os.stat(name, dir_fd=folder, follow_symlinks=False)
    if (info.st_dev, info.st_ino) != (now.st_dev, now.st_ino):
        unlink_quietly(name, folder)
        raise Refused("mismatch", "%s was replaced while it was moved; what arrived was removed" % path)


def _same_content(folder, name, have):
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=folder)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and adler32_fd(fd) == have
    finally:
        os.close(fd)


def _already_there(dst_root, dst, size, adler32, missing):
    """A move whose source is gone: done by an earlier call when the destination holds the expected content."""
    try:
        dst_root_fd = open_root(dst_root)
        try:
            fd, _ = open_file(dst_root_fd, dst_root, dst)
        finally:
            os.close(dst_root_fd)
    except Refused:
        raise missing
    try:
        have = adler32_fd(fd)
    finally:
        os.close(fd)
    expect(dst_root.rstrip("/") + "/" + dst, have, size, adler32)
    return {"size": have[0], "adler32": have[1], "how": "already there"}


def _unlink_at(root_fd, root, parts):
    folder = open_dir(root_fd, root, parts[:-1])
    try:
        os.unlink(parts[-1], dir_fd=folder)
    except FileNotFoundError:
        pass
    finally:
        os.close(folder)


OPERATIONS = {"write": write, "mkdir": mkdir, "read": read, "scan": scan, "rename": rename, "remove": remove,
              "checksum": checksum, "copy": copy}


def run_ops(ops):
    """Run each operation; one result per operation, in order (see the module docstring)."""
    results = []
    for op in ops:
        fields = dict(op)
        name = fields.pop("op", None)
        try:
            if name not in OPERATIONS:
                raise Refused("invalid", "unknown operation %r" % (name,))
            result = OPERATIONS[name](**fields)
            result["ok"] = True
        except Refused as exc:
            result = {"ok": False, "code": exc.code, "error": str(exc)}
        except OSError as exc:
            result = {"ok": False, "code": "os", "error": "%s: %s" % (exc.filename or name, exc.strerror or exc)}
        except TypeError as exc:  # a malformed operation: harvester's bug, said plainly
            result = {"ok": False, "code": "invalid", "error": "%s: %s" % (name, exc)}
        results.append(result)
    return results
