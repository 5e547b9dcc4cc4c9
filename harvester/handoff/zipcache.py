"""The pilot zipapps this user's harvesters (and testbeds) built, kept to be copied instead of built again.

Building the zipapp (copying the sources, compiling every module, zipping) costs ~85 ms of CPU; every harvester
started with a new home paid it, so every ``minipanda testbed`` run did. A build is kept here under the
:func:`pilot.zipapp.digest` of what it was built from (every source file's bytes, the interpreter line, the
bytecode's Python), so a harvester whose pilot sources differ by one byte looks for another name and builds anew: a
zipapp of other sources is never taken. Before a kept build is copied it must say it is that build (the archive's
comment holds its digest), pass the CRC check of every member, and be this user's own file in this user's own
directory, not writable by anyone else (a file someone else could have written would run in every pilot).
Anything else is ignored (logged) and the zipapp built as before.

Where: ``$MINIPANDA_CACHE_DIR``, else ``$XDG_CACHE_HOME/minipanda``, else ``~/.cache/minipanda``; the directory is
made mode 0700. ``MINIPANDA_CACHE_DIR=`` (empty) turns the cache off. The newest KEEP builds stay; older ones are
removed when a new one is added (each edit of the pilot's sources makes one).
"""
import logging
import os
import shutil
import stat
import tempfile

from pilot import zipapp

log = logging.getLogger(__name__)
ENV = "MINIPANDA_CACHE_DIR"
KEEP = 8
PREFIX, SUFFIX = "pilot-", ".pyz"


def directory():
    """The cache directory (not made here), or None when the cache is turned off."""
    if ENV in os.environ:  # '~' expanded: a systemd unit's Environment= or a YAML file leaves it to us
        return os.path.expanduser(os.environ[ENV]) or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minipanda")


def entry_name(digest):
    return f"{PREFIX}{digest}{SUFFIX}"


def take(digest, dest):
    """Copy the kept build of ``digest`` to ``dest`` (written under a temporary name, then renamed); True when it
    was there and sound, False otherwise (the caller builds)."""
    root = directory()
    if root is None or not _private(root, directory=True):
        return False
    kept = os.path.join(root, entry_name(digest))
    if not os.path.lexists(kept):
        return False
    if not _private(kept, directory=False) or zipapp.archive_digest(kept) != digest:
        log.warning("ignoring %s: not a sound pilot zipapp of these sources; building the pilot anew", kept)
        return False
    tmp = dest + ".tmp"
    try:
        shutil.copyfile(kept, tmp)
    except OSError as exc:  # removed meanwhile (another harvester's prune): the cache only saves time
        log.warning("could not copy %s: %s; building the pilot anew", kept, exc)
        _remove(tmp)
        return False
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    _touch(kept)
    return True


def keep(digest, built):
    """Keep a copy of ``built`` (a zipapp just built from sources of ``digest``) for the next harvester; a failure
    is logged, never raised: the cache only saves time."""
    root = directory()
    if root is None or zipapp.archive_digest(built) != digest:  # sources edited while it was built: not this one
        return
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if not _private(root, directory=True):
            log.warning("not keeping the pilot zipapp in %s: the directory is not this user's alone", root)
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=root)
        try:
            with os.fdopen(fd, "wb") as out, open(built, "rb") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, os.path.join(root, entry_name(digest)))
        except BaseException:
            os.unlink(tmp)
            raise
        _prune(root)
    except OSError as exc:  # e.g. a service user whose home is read-only: harmless, the next start builds again
        log.info("could not keep the pilot zipapp in %s: %s", root, exc)


def _private(path, directory):
    """True when ``path`` (not followed if a link) is a directory or regular file as asked, owned by this user and
    writable by no one else."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    return kind and info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _touch(path):
    try:
        os.utime(path)
    except OSError:
        pass


def _prune(root):
    """Remove all but the KEEP most recently used builds."""
    entries = []
    for name in os.listdir(root):
        if name.startswith(PREFIX) and name.endswith(SUFFIX):
            try:
                entries.append((os.lstat(os.path.join(root, name)).st_mtime, name))
            except OSError:
                continue
    for _, name in sorted(entries, reverse=True)[KEEP:]:
        try:
            os.unlink(os.path.join(root, name))
        except OSError:
            pass
