"""Where batch commands run and worker files are written: the submit host, reached locally or over SSH.

A :class:`Transport` runs commands given as argv lists (never a shell line) and moves files. Batch plugins get one
injected and never know whether it is local or remote; the SSH implementation (:mod:`harvester.transport.ssh`: exec channel
+ SFTP, one kept connection per host) maps the same methods:

- ``run`` maps to an exec channel: argv is quoted into one command line there, ``env`` becomes ``NAME=value``
  prefixes (additions to the login environment, never a replacement), ``cwd`` a quoted ``cd``;
- file methods map to SFTP calls (``write_file``/``put_file`` write a temporary name and rename, as here);
- ``read_file`` of ``/proc/...`` works over SFTP too, which is what the local batch plugin needs;
- ``files`` runs a batch of :mod:`harvester.transport.safefiles` operations (never through a symlink, regular files only,
  verified copies) in ONE round trip: in this process locally, by a ``python3`` helper kept open over SSH.
  Everything that touches an access point or a storage path (where pilots write) goes through it, ``fetch`` and
  ``send`` (whole files between this host and the submit host, checked by size and adler32) or a plugin's own
  commands.

Every file method takes absolute paths on the submit host. Failures of file methods raise :class:`TransportError`
naming the path; ``run`` never raises for a failing command: its :class:`CommandResult` carries the evidence.
"""
import dataclasses
import errno
import os
import shutil
import signal
import stat
import subprocess
import uuid
import zlib
from typing import Optional

from harvester.errors import HarvesterError
from harvester.transport import safefiles, safepaths

NOT_FOUND_RC, NOT_EXECUTABLE_RC = 127, 126  # the shell's codes, so callers need to know only one convention
_REAP_TIMEOUT = 5  # s to collect output after a timed-out command's group was killed


class TransportError(HarvesterError):
    """A file operation on the submit host failed, or no transport can be made for a queue. ``code``: why a path
    was refused (:mod:`harvester.transport.safefiles` codes), None for other failures."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """The outcome of one command.

    Attributes:
        returncode: the exit status (127 when the executable was not found, 126 when it could not be run, -N when
            signal N ended it, -9 after a timeout).
        stdout, stderr: the output, decoded as UTF-8 with undecodable bytes replaced.
        timed_out: True when the command was killed because it outlived ``timeout``.
        argv: the command, for error messages.
        lost: True when the connection to the submit host dropped while the command ran: it may have taken
            effect, its answer is lost.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    argv: tuple = ()
    lost: bool = False

    @property
    def ok(self):
        """True when the command ran to its end with exit status 0."""
        return self.returncode == 0 and not self.timed_out

    def describe(self):
        """The evidence in one line: command, outcome, and the ends of stdout and stderr."""
        outcome = "timed out" if self.timed_out else f"exit status {self.returncode}"
        command = " ".join(arg if len(arg) <= 200 else f"<{len(arg)} characters>" for arg in self.argv)
        return f"{command!r}: {outcome}; stdout: {_tail(self.stdout)!r}; stderr: {_tail(self.stderr)!r}"


def _tail(text, limit=500):
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class Transport:
    """The interface: commands and files on the submit host. Use as a context manager or call :meth:`close`."""

    name = "base"

    def run(self, argv, timeout=None, input=None, env=None, cwd=None) -> CommandResult:
        """Run one command and wait for it.

        Args:
            argv: the command as a list of strings (never a shell line).
            timeout: seconds; when exceeded, the command's whole process group is killed.
            input: bytes or str given on stdin (stdin is empty otherwise).
            env: NAME -> value added to the transport's environment.
            cwd: directory to run in.

        Returns:
            A :class:`CommandResult`; a missing executable gives return code 127, not an exception.
        """
        raise NotImplementedError

    def makedirs(self, path, mode=0o755):
        """Create a directory and its parents; an existing one is fine."""
        raise NotImplementedError

    def write_file(self, path, data, mode=0o644):
        """Write bytes (or UTF-8 text) atomically: readers see the old file or the whole new one, never a part."""
        raise NotImplementedError

    def put_file(self, local, remote, mode=None):
        """Place the local file ``local`` at ``remote`` atomically (keeping its mode unless ``mode`` is given)."""
        raise NotImplementedError

    def read_file(self, path) -> Optional[bytes]:
        """The content of a file, or None when it does not exist."""
        raise NotImplementedError

    def exists(self, path) -> bool:
        """True when ``path`` exists."""
        raise NotImplementedError

    def listdir(self, path) -> list:
        """The names in directory ``path``; empty when it does not exist."""
        raise NotImplementedError

    def remove_tree(self, path):
        """Remove a directory tree (or a file); a missing one is fine."""
        raise NotImplementedError

    def files(self, ops) -> list:
        """Run :mod:`harvester.transport.safefiles` operations on the submit host, all in one round trip; one result dict per
        operation, in order (``ok`` false with ``code`` and ``error`` for a refused path: never an exception).

        Raises:
            TransportError: the batch could not be run at all (the host is unreachable, no python3 there).
        """
        raise NotImplementedError

    def fetch(self, root, path, local, limit=None) -> dict:
        """Copy the regular file ``root/path`` on the submit host (walked as :mod:`harvester.transport.safefiles` does) to
        the local file ``local``: written under a temporary name, checked against the size and adler32 the submit
        host computed while it read, then renamed; ``{"size", "adler32"}``. A partial transfer leaves nothing.

        Raises:
            TransportError: refused (``code`` attribute: symlink, not_regular, missing, too_large...) or cut.
        """
        raise NotImplementedError

    def send(self, local, root, path, mode=0o644) -> dict:
        """Place the local file ``local`` at ``root/path`` on the submit host (temporary name, checked by size and
        adler32 there, then renamed); ``{"size", "adler32"}``."""
        raise NotImplementedError

    def close(self):
        """Release connections (nothing to release for a local transport)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class LocalTransport(Transport):
    """Commands as local subprocesses and files on the local file system."""

    name = "local"

    def files(self, ops):
        return safefiles.run_ops(ops)

    def fetch(self, root, path, local, limit=None):
        try:
            root_fd = safepaths.open_root(root)
            try:
                fd, _ = safepaths.open_file(root_fd, root, path, limit)
            finally:
                os.close(root_fd)
        except safepaths.Refused as exc:
            raise TransportError(str(exc), exc.code) from None
        landing = Landing(local)
        try:
            for block in iter(lambda: os.read(fd, safepaths.BLOCK), b""):
                landing.write(block)
            return landing.land()
        finally:
            os.close(fd)
            landing.discard()

    def send(self, local, root, path, mode=0o644):
        folder, name = os.path.split(os.path.abspath(local))
        [result] = safefiles.run_ops([{"op": "copy", "src_root": folder, "src": name, "dst_root": root,
                                       "dst": path, "mode": mode}])
        return _checked(result, f"send {local} to {root}/{path}")

    def run(self, argv, timeout=None, input=None, env=None, cwd=None) -> CommandResult:
        argv = _check_argv(argv)
        data = input.encode("utf-8") if isinstance(input, str) else input
        full_env = {**os.environ, **env} if env else None
        try:
            # a session of its own: a timeout kills the command and everything it started, not harvester
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
                                    start_new_session=True)
        except OSError as exc:
            return _not_started(argv, exc, cwd)
        timed_out = False
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            out, err = _kill_group(proc)
        return CommandResult(proc.returncode, _decode(out), _decode(err), timed_out, argv)

    def makedirs(self, path, mode=0o755):
        try:
            os.makedirs(_absolute(path), mode, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot create directory {path}: {exc.strerror}") from None

    def write_file(self, path, data, mode=0o644):
        data = data.encode("utf-8") if isinstance(data, str) else data
        temp = _temp_name(_absolute(path))
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temp, mode)  # explicit, so the umask does not decide who may read a worker's files
            os.replace(temp, path)
        except OSError as exc:
            _discard(temp)
            raise TransportError(f"cannot write {path}: {exc.strerror}") from None

    def put_file(self, local, remote, mode=None):
        temp = _temp_name(_absolute(remote))
        try:
            source_mode = stat.S_IMODE(os.stat(local).st_mode)
        except OSError as exc:
            raise TransportError(f"cannot put {local} to {remote}: {exc.strerror} ({local})") from None
        try:
            # a hard link shares the mode with the source, so link only when the mode stays as it is
            if not _link(local, temp, mode in (None, source_mode)):
                shutil.copyfile(local, temp)
                os.chmod(temp, source_mode if mode is None else mode)
            os.replace(temp, remote)
        except OSError as exc:
            _discard(temp)
            raise TransportError(f"cannot put {local} to {remote}: {exc.strerror}") from None

    def read_file(self, path):
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ProcessLookupError:  # /proc/<pid>/... of a process that ended while being read
            return None
        except OSError as exc:
            raise TransportError(f"cannot read {path}: {exc.strerror}") from None

    def exists(self, path):
        return os.path.lexists(path)

    def listdir(self, path):
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise TransportError(f"cannot list {path}: {exc.strerror}") from None

    def remove_tree(self, path):
        path = _absolute(path)
        if os.path.normpath(path) == "/":
            raise TransportError("refusing to remove '/'")
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TransportError(f"cannot remove {path}: {exc.strerror} ({exc.filename})") from None


class Landing:
    """A local file being received: written under a temporary name while its size and adler32 are counted, and
    renamed into place by :meth:`land` only when they match what the sender read; :meth:`discard` otherwise (a
    partial transfer never takes the file's name)."""

    def __init__(self, local):
        self.local, self.temp = local, _temp_name(_absolute(local))
        self.handle = open(self.temp, "xb")
        self.value, self.size = 1, 0

    def write(self, block):
        self.value = zlib.adler32(block, self.value)
        self.size += len(block)
        self.handle.write(block)

    def land(self, sent=None):
        """Keep the file when it matches ``sent`` (``{"size", "adler32"}`` from the sender); its own otherwise."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        have = {"size": self.size, "adler32": f"{self.value & 0xffffffff:08x}"}
        sent = sent or have
        if (sent.get("size"), sent.get("adler32")) != (have["size"], have["adler32"]):
            raise TransportError(f"{self.local}: received {self.size} bytes adler32 {have['adler32']}, the sender "
                                 f"read {sent.get('size')} bytes adler32 {sent.get('adler32')}: discarded",
                                 "mismatch")
        os.replace(self.temp, self.local)
        self.temp = None
        return have

    def discard(self):
        if not self.handle.closed:
            self.handle.close()
        if self.temp is not None:
            _discard(self.temp)
            self.temp = None


def _checked(result, what):
    """The result of one safefiles operation, or TransportError with its refusal."""
    if not result.get("ok"):
        raise TransportError(f"{what}: {result.get('error')}", result.get("code"))
    return result


def _check_argv(argv):
    if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"argv must be a non-empty list of strings (never a shell line), got {argv!r}")
    return tuple(argv)


def _not_started(argv, exc, cwd):
    if cwd is not None and exc.filename == cwd:
        return CommandResult(NOT_FOUND_RC, "", f"cannot run {argv[0]}: directory {cwd}: {exc.strerror}",
                             argv=argv)
    if isinstance(exc, FileNotFoundError):
        return CommandResult(NOT_FOUND_RC, "", f"{argv[0]}: command not found (no such executable on this host)",
                             argv=argv)
    return CommandResult(NOT_EXECUTABLE_RC, "", f"{argv[0]}: cannot run: {exc.strerror}", argv=argv)


def _kill_group(proc):
    """Kill a timed-out command's process group and collect what it wrote."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        return proc.communicate(timeout=_REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # a grandchild that left the group still holds the pipes: give up on the rest of the output
        proc.kill()
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        proc.wait()
        return b"", b""


def _decode(data):
    return (data or b"").decode("utf-8", errors="replace")


def _absolute(path):
    if not os.path.isabs(path):
        raise TransportError(f"{path!r}: transports take absolute paths only (the submit host's working "
                             "directory is not ours to rely on)")
    return path


def _temp_name(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _link(source, target, allowed):
    """Hard-link ``source`` to ``target`` when ``allowed``; False when a copy is needed (another file system)."""
    if not allowed:
        return False
    try:
        os.link(source, target)
        return True
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise


def _discard(path):
    try:
        os.unlink(path)
    except OSError:
        pass
