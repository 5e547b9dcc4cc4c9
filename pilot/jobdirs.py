"""Job directories reused from one job to the next instead of made and removed for each.

A pilot running thousands of short jobs made ``PandaJob_<id>`` and three files in it (``payload.stdout``,
``payload.stderr``, ``job_definition.json``) for every job and removed them all at its end: eight inode creations
and deletions per job. On a journal-less ext4 each new inode then costs 0.1-0.5 ms of CPU (the allocator skips
every recently deleted inode), on Lustre/GPFS/NFS each create and unlink is a metadata server round trip. So a
finished job's directory is kept as a spare (renamed, emptied of everything its payload left, its three files
truncated) and a later job's directory is a spare renamed to ``PandaJob_<id>``, its files truncated in place.

Jobs of one pilot may belong to different users and every payload runs as the pilot's user, so nothing a job left
may reach a later job's files. A directory becomes a spare only when the payload's whole process tree is known to
be gone (the pilot is a child subreaper: proctree.ProcessTree.gone; without a subreaper directories are never
reused) and is reused only when it is still what the pilot made: a real directory (lstat: no symlink), the same
inode, owner, group and mode, no ACL, no subdirectory. Each kept file is opened with O_NOFOLLOW and checked with
fstat (a regular file, one link, the pilot's uid and group, the mode a new file gets, no ACL) before it is
truncated; anything else in the directory is removed. A file that fails its check is removed and made afresh, a
directory that fails is removed (as before) and a new one made; both are logged.

Not covered, as with a fresh directory: a process that escaped the tree (started through a daemon of the same
user) and kept a descriptor of the directory or of a file in it. A payload running while the next job's directory
is made ready (jobrun.JobRun.prepare_ahead) can reach that directory in either case: it has the pilot's uid.
"""
import collections
import logging
import os
import shutil
import stat
import threading

log = logging.getLogger(__name__)
KEPT = ("payload.stdout", "payload.stderr", "job_definition.json")  # truncated and reused; anything else goes
SPARES = 8  # directories kept for later jobs: the next one is made ready while up to wrapup.QUEUE_BOUND + 1 ended
# jobs wait for their stage-out, so a pilot ahead of its wrap-up still finds one when the wrap-up catches up
_OPEN_EXISTING = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang us
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ACLS = ("system.posix_acl_access", "system.posix_acl_default")


class _Unfit(Exception):
    """A spare directory or a kept file that is not what the pilot made: it is removed, not reused. Never leaves
    this module (not a pilot error: the job goes on in a directory or file made new)."""


def _umask():
    """The process's umask, read without changing it (the pilot has threads); 0o022 if it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


_FILE_MODE = None


def file_mode():
    """The permission bits a new file of the pilot gets (``open(path, 'w')``: 0o666 less the umask)."""
    global _FILE_MODE
    if _FILE_MODE is None:
        _FILE_MODE = 0o666 & ~_umask()
    return _FILE_MODE


def _has_acl(target):
    """Whether ``target`` (a path, not followed, or a descriptor) carries a POSIX ACL (a default ACL on a directory
    would hand later files to other users; st_mode does not show it)."""
    try:
        names = os.listxattr(target) if isinstance(target, int) else os.listxattr(target, follow_symlinks=False)
    except (OSError, AttributeError):  # no extended attributes on this file system (or system)
        return False
    return any(name in _ACLS for name in names)


def check_file(fd, gid=None):
    """Raise _Unfit unless the open file ``fd`` is one the pilot made and nobody else can reach: a regular file with
    one link (a second one, made elsewhere by a payload, would read the next job's data), the pilot's uid (and
    ``gid``, the directory's group, when given), the mode a new file gets and no ACL. Its fstat when it is."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _Unfit("not a regular file")
    if st.st_nlink != 1:
        raise _Unfit(f"{st.st_nlink} links")
    if st.st_uid != os.geteuid() or (gid is not None and st.st_gid != gid):
        raise _Unfit(f"owned by {st.st_uid}:{st.st_gid}")
    if stat.S_IMODE(st.st_mode) != file_mode():
        raise _Unfit(f"mode {stat.S_IMODE(st.st_mode):o}")
    if _has_acl(fd):
        raise _Unfit("an ACL")
    return st


def _open_kept(name, dir_fd=None, gid=None):
    """``name`` (in ``dir_fd``) opened for writing, checked and truncated: its descriptor, None if it does not
    exist. Raise _Unfit (descriptor closed) when it is not fit; OSError when it cannot be opened (ELOOP for a
    symlink, ENXIO for a FIFO without reader, EISDIR...)."""
    try:
        fd = os.open(name, _OPEN_EXISTING, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        if check_file(fd, gid).st_size:  # an empty file is left alone: ext4 truncates even one without data
            os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(directory, name, dir_fd):
    """Remove the entry ``name`` of ``directory`` (open as ``dir_fd``) whatever it is: a directory with all it
    holds (shutil.rmtree never follows a symlink), anything else unlinked; OSError if it cannot be."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except (IsADirectoryError, PermissionError):  # Linux answers EISDIR for a directory, others EPERM
        if not stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise
        shutil.rmtree(os.path.join(directory, name))


def open_job_file(path):
    """A file of a job directory opened for writing (binary, unbuffered descriptor): a kept file of a reused
    directory checked and truncated (:func:`check_file`), else made new; one that fails its check (a symlink, a
    hard link, another owner or mode, a FIFO, a directory) is removed and made new, and logged."""
    directory, name = os.path.split(path)
    try:
        fd = _open_kept(path)
        if fd is not None:
            return fd
    except (_Unfit, OSError) as exc:
        why = exc if isinstance(exc, _Unfit) else (exc.strerror or exc)
        log.warning("%s is not the file the pilot left (%s): removed and made new", path, why)
        dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _remove(directory or ".", name, dir_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dir_fd)
    return os.open(path, _CREATE, 0o666)


class JobDirs:
    """The job directories of one pilot: made (a spare renamed, else new) and, at a job's end, kept as spares or
    removed. Thread-safe: jobs are wrapped up on the wrap-up thread while the job loop makes the next ones.

    Args:
        pilot_dir: where the job directories are.
        reuse: False (no subreaper, or --no-cleanup) makes every directory new and removes it at the end, as before.
    """

    def __init__(self, pilot_dir, reuse=True):
        self.pilot_dir, self.reuse = pilot_dir, reuse
        self.spares = collections.deque()  # (path, st_dev, st_ino) of emptied directories, oldest first
        self.made = None  # (mode, uid, gid) of a directory the pilot made new: what a spare must still have
        self.lock = threading.Lock()
        self.serial = 0
        self.given = {}  # job directory -> (st_dev, st_ino) it had when made: only those may become spares
        self.closed = False  # the pilot's end: no more spares
        self.reused = self.fresh = self.refused = 0  # counts, for the pilot's log and the tests

    def make(self, job_dir):
        """The directory ``job_dir`` made for a job: a fit spare renamed to it, else made new (mode 0o770).
        OSError when it cannot be made (it exists already, no room...)."""
        while True:
            with self.lock:
                spare = self.spares.popleft() if self.spares else None
            if spare is None:
                break
            if os.path.lexists(job_dir):  # as os.makedirs would: a job's directory is never taken over
                with self.lock:
                    self.spares.appendleft(spare)
                raise FileExistsError(f"[Errno 17] File exists: '{job_dir}'")
            if self._emptied(spare):
                try:
                    os.rename(spare[0], job_dir)
                except OSError as exc:
                    log.warning("cannot rename the spare job directory %s to %s: %s", spare[0], job_dir, exc)
                    self._discard(spare[0])
                    continue
                self.reused += 1
                self.given[job_dir] = spare[1:]
                return
            self._discard(spare[0])
        os.makedirs(job_dir, mode=0o770)
        self.fresh += 1
        st = os.lstat(job_dir)
        self.given[job_dir] = (st.st_dev, st.st_ino)
        if self.made is None:
            self.made = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if self.reuse and _has_acl(job_dir):  # inherited from the pilot directory: every spare would fail
                log.info("job directories in %s get an ACL from it: each is made new", self.pilot_dir)
                self.reuse = False

    def release(self, job_dir, payload_gone):
        """The job is over: its directory kept as a spare when ``payload_gone`` (its payload's whole process tree
        is known to be gone), it is still the directory :meth:`make` gave (not one put in its place, nor one that
        was there already), it can be emptied, and fewer than SPARES are kept; else removed as before."""
        given = self.given.pop(job_dir, None)
        if not (self.reuse and payload_gone and given is not None and len(self.spares) < SPARES and
                not self.closed):
            self._discard(job_dir)
            return
        with self.lock:
            self.serial += 1
            spare = os.path.join(self.pilot_dir, f"spare_jobdir_{self.serial}")
        try:
            st = os.lstat(job_dir)
            if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != given:
                raise _Unfit("not the directory made for the job")
            os.rename(job_dir, spare)
        except FileNotFoundError:
            return
        except (OSError, _Unfit) as exc:
            log.warning("job directory %s not kept for reuse: %s", job_dir, exc)
            self.refused += 1
            self._discard(job_dir)
            return
        entry = (spare, st.st_dev, st.st_ino)
        if self._emptied(entry):  # now: the job's data must not wait on the disk for a later job
            with self.lock:
                self.spares.append(entry)
        else:
            self._discard(spare)

    def close(self):
        """The pilot's end: the spares removed."""
        with self.lock:
            self.closed = True
            spares, self.spares = list(self.spares), collections.deque()
        for path, _, _ in spares:
            self._discard(path)
        if self.reused or self.refused:
            log.info("job directories: %d reused, %d made new, %d not reusable", self.reused, self.fresh,
                     self.refused)

    # ---- checks ------------------------------------------------------------------------------------------------
    def _emptied(self, spare):
        """Whether the spare ``(path, dev, ino)`` is fit for another job once emptied: everything but the kept
        files removed, those checked and truncated (or removed when they fail). Logged when it is not."""
        path = spare[0]
        try:
            self._check_dir(spare, os.lstat(path))
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, _Unfit) as exc:
            return self._unfit(path, exc)
        try:
            self._check_dir(spare, os.fstat(fd))  # the one just checked, not one swapped in since
            with os.scandir(fd) as entries:
                names = [entry.name for entry in entries]
            for name in names:
                if name in KEPT and self._kept(path, name, fd):
                    continue
                _remove(path, name, fd)
            if os.fstat(fd).st_nlink != 2:
                raise _Unfit("a directory is left in it")
            return True
        except (OSError, _Unfit) as exc:
            return self._unfit(path, exc)
        finally:
            os.close(fd)

    def _kept(self, path, name, dir_fd):
        """Whether the kept file ``name`` passed its check and was truncated (else the caller removes it)."""
        try:
            fd = _open_kept(name, dir_fd, self.made[2])
        except (OSError, _Unfit) as exc:
            log.warning("%s/%s not reused (%s): removed", path, name, exc)
            return False
        if fd is not None:
            os.close(fd)
        return True

    def _check_dir(self, spare, st):
        """Raise _Unfit unless ``st`` is the spare directory as the pilot made it: the same inode, a directory, the
        owner, group and mode of a new job directory, no ACL."""
        if (st.st_dev, st.st_ino) != spare[1:] or not stat.S_ISDIR(st.st_mode):
            raise _Unfit("replaced")
        if self.made is None or (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != self.made:
            raise _Unfit(f"mode {stat.S_IMODE(st.st_mode):o}, owner {st.st_uid}:{st.st_gid}")
        if _has_acl(spare[0]):
            raise _Unfit("an ACL")

    def _unfit(self, path, exc):
        log.warning("job directory %s not reused (%s): removed", path, exc)
        self.refused += 1
        return False

    @staticmethod
    def _discard(path):
        """Remove a directory as the pilot always did (what cannot be removed stays, as before)."""
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
