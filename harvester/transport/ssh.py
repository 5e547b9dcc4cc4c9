"""The SSH transport: batch commands and worker files on a remote login/submit host, through paramiko.

The only module that imports paramiko. One kept connection per (host, port, user, key, known_hosts, jump host),
shared by every queue that names the same host, with keepalives; a connection that dropped is made again on the
next call (and a call that found it dropped is retried once, when nothing of it can have run yet). Commands run
in exec channels, their command lines built with ``shlex.join`` from argv lists; files move by SFTP, written under
a temporary name and renamed, so a reader never sees half a file.

Host keys are always checked against ``known_hosts``: an unknown host is refused unless the queue opted in with
``transport.accept_unknown_host`` (then its key is recorded there on first use); a changed key is always refused.
Connection failures raise one of three distinct errors: :class:`HostUnreachable`, :class:`AuthenticationFailed`,
:class:`UnknownHostKey` (and :class:`HostKeyChanged`); in :meth:`SshTransport.run` they become exit status 255
with the message on stderr, as the ssh command does.
"""
import base64
import dataclasses
import errno
import getpass
import json
import logging
import os
import re
import select
import shlex
import socket
import stat
import threading
import time
import uuid
import zlib

import paramiko

from harvester.transport import safehelper, safepaths
from harvester.transport.base import (CommandResult, Landing, Transport, TransportError, _check_argv, _checked,
                                 _decode)

log = logging.getLogger(__name__)
SSH_FAILED_RC = 255  # ssh's own exit status when the connection, not the command, failed
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEEPALIVE_S = 30


class SshError(TransportError):
    """The SSH connection could not be made."""


class HostUnreachable(SshError):
    """No TCP connection / SSH handshake with the host (down, wrong port, firewall, timeout)."""


class AuthenticationFailed(SshError):
    """The host refused our key (or we have no usable key)."""


class UnknownHostKey(SshError):
    """The host's key is not in known_hosts and the queue did not opt in to trusting new hosts."""


class HostKeyChanged(SshError):
    """The host presented a key other than the one known_hosts holds for it."""


@dataclasses.dataclass(frozen=True)
class SshSettings:
    """Where and how to connect (from a queue's ``transport`` section)."""

    host: str
    port: int = 22
    user: str = ""
    key_file: str = ""
    known_hosts: str = ""
    jump_host: str = ""
    jump_port: int = 22
    jump_user: str = ""
    connect_timeout: float = 30
    command_timeout: float = 300
    accept_unknown_host: bool = False
    python: str = "python3"

    @classmethod
    def from_queue(cls, section):
        expand = lambda p: os.path.expanduser(p) if p else ""  # noqa: E731
        user = section.user or getpass.getuser()
        return cls(host=section.host, port=section.port, user=user, key_file=expand(section.key_file),
                   known_hosts=expand(section.known_hosts or "~/.ssh/known_hosts"),
                   jump_host=section.jump_host or "", jump_port=section.jump_port,
                   jump_user=section.jump_user or user, connect_timeout=section.connect_timeout,
                   command_timeout=section.command_timeout,
                   accept_unknown_host=getattr(section, "accept_unknown_host", False),
                   python=getattr(section, "python", None) or "python3")

    @property
    def where(self):
        return f"{self.user}@{self.host}:{self.port}" + (f" via {self.jump_user}@{self.jump_host}:{self.jump_port}"
                                                         if self.jump_host else "")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse a host missing from known_hosts, or (opted in) record its key there and go on."""

    def __init__(self, settings):
        self.settings = settings

    def missing_host_key(self, client, hostname, key):
        known = self.settings.known_hosts
        fingerprint = f"{key.get_name()} SHA256:{_fingerprint(key)}"
        if not self.settings.accept_unknown_host:
            raise UnknownHostKey(
                f"ssh {hostname}: host key {fingerprint} is not in {known}{'' if os.path.exists(known) else ' (no such file)'}"
                f": refused. Check the fingerprint with the host's admin and add it (ssh-keyscan -p PORT HOST >> "
                f"{known}), or set transport.accept_unknown_host: true to trust a new host on first use")
        folder = os.path.dirname(known)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(known, "a", encoding="ascii") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("ssh %s: unknown host key %s trusted on first use (transport.accept_unknown_host) and recorded "
                    "in %s", hostname, fingerprint, known)


def _fingerprint(key):
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class _Connection:
    """One SSH connection (and its SFTP session), shared by the transports of every queue on that host."""

    def __init__(self, settings):
        self.settings = settings
        self.users = 0
        self.client = self.jump = self.sftp = None
        self.lock = threading.RLock()  # connect/reconnect
        self.sftp_lock = threading.Lock()  # one SFTP request at a time
        self.helper = None  # the kept-open file helper (:class:`_Helper`) on this connection
        self.helper_lock = threading.Lock()  # one batch of file operations at a time

    def active(self):
        transport = self.client.get_transport() if self.client else None
        return transport is not None and transport.is_active()

    def transport(self):
        """The live paramiko transport, connecting first when needed."""
        with self.lock:
            if not self.active():
                self.drop()
                self.connect()
            return self.client.get_transport()

    def sftp_client(self):
        with self.lock:
            transport = self.transport()
            if self.sftp is None or self.sftp.get_channel() is None or self.sftp.get_channel().closed:
                self.sftp = paramiko.SFTPClient.from_transport(transport)
            return self.sftp

    def connect(self):
        s = self.settings
        sock = None
        if s.jump_host:
            self.jump = self._client(s.jump_host, s.jump_port, s.jump_user)
            try:
                sock = self.jump.get_transport().open_channel("direct-tcpip", (s.host, s.port), ("127.0.0.1", 0),
                                                              timeout=s.connect_timeout)
            except (paramiko.SSHException, OSError) as exc:
                raise HostUnreachable(f"ssh {s.where}: the jump host could not reach {s.host}:{s.port}: "
                                      f"{_reason(exc)}") from None
        self.client = self._client(s.host, s.port, s.user, sock)
        log.info("ssh %s: connected", s.where)

    def _client(self, host, port, user, sock=None):
        s = self.settings
        if s.key_file and not os.path.isfile(s.key_file):
            raise AuthenticationFailed(f"ssh {user}@{host}:{port}: key file {s.key_file}: no such file")
        client = paramiko.SSHClient()
        if os.path.exists(s.known_hosts):
            client.load_system_host_keys(s.known_hosts)  # read only: only the opt-in policy appends to it
        client.set_missing_host_key_policy(_HostKeyPolicy(s))
        where = f"{user}@{host}:{port}"
        try:
            client.connect(host, port, username=user, key_filename=s.key_file or None,
                           look_for_keys=not s.key_file, allow_agent=not s.key_file, sock=sock,
                           timeout=s.connect_timeout, banner_timeout=s.connect_timeout,
                           auth_timeout=s.connect_timeout, channel_timeout=s.connect_timeout)
        except SshError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyChanged(f"ssh {where}: the host presented key {exc.key.get_name()} "
                                 f"SHA256:{_fingerprint(exc.key)}, but {s.known_hosts} holds another key for it: "
                                 "refused (the host was reinstalled, or someone is in between); after checking "
                                 f"with its admin, replace its line in {s.known_hosts}") from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise AuthenticationFailed(f"ssh {where}: key file {s.key_file} is protected by a passphrase; harvester "
                                       "needs a key without one (or an SSH agent)") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            key = f"key {s.key_file}" if s.key_file else "the SSH agent and ~/.ssh keys"
            raise AuthenticationFailed(f"ssh {where}: authentication failed with {key} ({exc}); is its public "
                                       f"key in {user}'s authorized_keys on {host}?") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise HostUnreachable(f"ssh {where}: cannot connect: {_reason(exc)} (is the host up and the port "
                                  f"right? connect_timeout {s.connect_timeout:g} s)") from None
        client.get_transport().set_keepalive(_KEEPALIVE_S)
        return client

    def drop(self):
        """Forget the connection (closing what is left of it); the next call connects again."""
        for thing in (self.helper, self.sftp, self.client, self.jump):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a dead connection must not hide anything
                    pass
        self.client = self.jump = self.sftp = self.helper = None


class _Helper:
    """harvester/transport/safehelper.py's ``serve`` loop running on the host in one exec channel, kept open: a batch
    of file operations is one line each way, not a channel, a shell and a Python start per batch."""

    def __init__(self, channel):
        self.channel, self.pending, self.err = channel, b"", []

    def usable(self):
        """Alive as far as can be told without asking: its channel open, its command not ended, its link up."""
        channel = self.channel
        return not (channel.closed or channel.eof_received or channel.exit_status_ready()) and \
            channel.get_transport() is not None and channel.get_transport().is_active()

    def pid(self):
        return _split_pid(_decode(b"".join(self.err)))[0]

    def stderr(self):
        return _split_pid(_decode(b"".join(self.err)))[1]

    def ask(self, request, timeout):
        """Send one request line; its one answer line. Raises socket.timeout past ``timeout`` s, EOFError when the
        helper ended (its stderr in the message), paramiko/OS errors when the link broke."""
        self.channel.sendall(request)
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            if _drain(self.channel, [], self.err, _Appender(self)):
                self.err = self.err[-64:]  # a chatty helper's stderr: its end is what says why
                continue
            if self.channel.closed or self.channel.eof_received or self.channel.exit_status_ready():
                raise EOFError(f"the file helper ended: {self.stderr()[-1000:]!r}")
            if time.monotonic() > deadline:
                raise socket.timeout(f"no answer from the file helper within {timeout:g} s")
            select.select([self.channel], [], [], 0.05)
        line, _, self.pending = self.pending.partition(b"\n")
        return line

    def close(self):
        self.channel.close()


class _Appender:
    """A sink for :func:`_drain` that keeps stdout in the helper's pending bytes."""

    def __init__(self, helper):
        self.helper = helper

    def write(self, block):
        self.helper.pending += block


_POOL, _POOL_LOCK = {}, threading.Lock()


class SshTransport(Transport):
    """Commands and files on ``settings.host`` over SSH (see the module docstring)."""

    name = "ssh"

    def __init__(self, settings: SshSettings):
        self.settings = settings
        with _POOL_LOCK:
            self._conn = _POOL.setdefault(settings, _Connection(settings))
            self._conn.users += 1
        self._closed = False

    @classmethod
    def for_queue(cls, queue):
        return cls(SshSettings.from_queue(queue.transport))

    def connect(self):
        """Connect now (instead of on first use); raises the :class:`SshError` that says why it cannot."""
        self._conn.transport()
        return self

    # ---- commands ----------------------------------------------------------------------------------------------
    def run(self, argv, timeout=None, input=None, env=None, cwd=None) -> CommandResult:
        argv = _check_argv(argv)
        line = command_line(argv, env, cwd)
        data = input.encode("utf-8") if isinstance(input, str) else input
        timeout = timeout or self.settings.command_timeout
        for attempt in (1, 2):
            try:
                channel = self._conn.transport().open_session(timeout=self.settings.connect_timeout)
            except SshError as exc:
                return CommandResult(SSH_FAILED_RC, "", str(exc), argv=argv)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                # the channel was never opened, so the command did not run: safe to reconnect and try again
                self._conn.drop()
                if attempt == 2:
                    return CommandResult(SSH_FAILED_RC, "", f"ssh {self.settings.where}: {_reason(exc)}", argv=argv)
                continue
            return self._exec(channel, line, data, timeout, argv)

    def _exec(self, channel, line, data, timeout, argv, sink=None):
        """Run ``line`` in ``channel``: ``data`` (bytes, or a binary file streamed in blocks) on stdin; stdout
        collected, or written to the binary file ``sink`` as it comes."""
        deadline = time.monotonic() + timeout
        out, err = [], []
        try:
            channel.exec_command(line)
            if hasattr(data, "read"):
                for block in iter(lambda: data.read(safepaths.BLOCK), b""):
                    channel.sendall(block)
            elif data:
                channel.sendall(data)
            channel.shutdown_write()
            while not (channel.exit_status_ready() and channel.eof_received) and not channel.closed:
                if not _drain(channel, out, err, sink):
                    if time.monotonic() > deadline:
                        channel.close()
                        pid, stderr = _split_pid(_decode(b"".join(err)))
                        self._kill(pid)
                        return CommandResult(-9, _decode(b"".join(out)), stderr, True, argv)
                    select.select([channel], [], [], 0.05)
            _drain(channel, out, err, sink)
            code = channel.recv_exit_status() if channel.exit_status_ready() else -1
            # no exit status: the command was killed by a signal (paramiko drops exit-signal), or the link died
            lost = code == -1 and _dropped(channel.get_transport())
            code = SSH_FAILED_RC if lost else code
        except (paramiko.SSHException, OSError, EOFError) as exc:
            lost, code = True, SSH_FAILED_RC
            err.append(f"\n{_reason(exc)}".encode())
        finally:
            channel.close()
        stderr = _split_pid(_decode(b"".join(err)))[1]
        if lost:
            self._conn.drop()
            stderr += f"\nssh {self.settings.where}: connection lost while the command ran"
        return CommandResult(code, _decode(b"".join(out)), stderr, False, argv, lost)

    def _kill(self, pid):
        """Kill the process group of a timed-out remote command (a closed channel alone does not stop it)."""
        if pid:
            try:
                channel = self._conn.transport().open_session(timeout=self.settings.connect_timeout)
                self._exec(channel, shlex.join(["kill", "-s", "KILL", "--", f"-{pid}"]), None, 30, ("kill",))
            except (SshError, paramiko.SSHException, OSError, EOFError) as exc:
                log.warning("ssh %s: could not kill timed-out command %s: %s", self.settings.where, pid, exc)

    # ---- files (SFTP) ------------------------------------------------------------------------------------------
    def _sftp(self, what, path, func):
        """Run ``func(sftp)`` under the SFTP lock; reconnect and retry once when the connection had dropped.
        Raises :class:`TransportError` naming ``what`` and ``path``."""
        for attempt in (1, 2):
            try:
                with self._conn.sftp_lock:
                    return func(self._conn.sftp_client())
            except SshError:
                raise
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None and self._conn.active():
                    raise TransportError(f"cannot {what} {path} on {self.settings.host}: "
                                         f"{exc.strerror or exc}") from None
                self._conn.drop()
                if attempt == 2:
                    raise TransportError(f"cannot {what} {path}: ssh {self.settings.where}: "
                                         f"{_reason(exc)}") from None

    def makedirs(self, path, mode=0o755):
        path = _absolute(path)

        def make(sftp):
            parts, current = [p for p in path.split("/") if p], ""
            for part in parts:
                current += "/" + part
                try:
                    if not stat.S_ISDIR(sftp.stat(current).st_mode):
                        raise OSError(errno.ENOTDIR, f"{current} is not a directory")
                except FileNotFoundError:
                    sftp.mkdir(current, mode)
        self._sftp("create directory", path, make)

    def write_file(self, path, data, mode=0o644):
        data = data.encode("utf-8") if isinstance(data, str) else data
        self._place(path, mode, lambda sftp, temp: _write(sftp, temp, data))

    def put_file(self, local, remote, mode=None):
        try:
            source_mode = stat.S_IMODE(os.stat(local).st_mode)
        except OSError as exc:
            raise TransportError(f"cannot put {local} to {remote}: {exc.strerror} ({local})") from None
        self._place(remote, source_mode if mode is None else mode, lambda sftp, temp: sftp.put(local, temp))

    def _place(self, path, mode, fill):
        path = _absolute(path)
        folder, name = os.path.split(path)
        temp = f"{folder}/.{name}.{uuid.uuid4().hex[:12]}.tmp"

        def place(sftp):
            try:
                fill(sftp, temp)
                sftp.chmod(temp, mode)
                sftp.posix_rename(temp, path)
            except BaseException:
                try:
                    sftp.remove(temp)
                except (OSError, paramiko.SSHException, EOFError):
                    pass
                raise
        self._sftp("write", path, place)

    def read_file(self, path):
        def read(sftp):
            try:
                with sftp.open(path, "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None
        return self._sftp("read", path, read)

    def exists(self, path):
        def exists(sftp):
            try:
                sftp.lstat(path)
                return True
            except FileNotFoundError:
                return False
        return self._sftp("look up", path, exists)

    def listdir(self, path):
        def listdir(sftp):
            try:
                return sftp.listdir(path)
            except FileNotFoundError:
                return []
        return self._sftp("list", path, listdir)

    def remove_tree(self, path):
        path = _absolute(path)
        if os.path.normpath(path) == "/":
            raise TransportError("refusing to remove '/'")
        result = self.run(["rm", "-rf", "--", path])
        if not result.ok:
            raise TransportError(f"cannot remove {path} on {self.settings.host}: {result.describe()}")

    # ---- safe file operations: harvester/transport/safehelper.py run there, kept open; whole files one exec each ---
    def _helper(self, *args):
        # -I -S: no user site, no environment, no site module: the helper needs the standard library only, and
        # starts in half the time
        return [self.settings.python, "-I", "-S", "-c", _HELPER_SOURCE, *args]

    def files(self, ops):
        ops = [dict(op, data=base64.b64encode(op["data"]).decode("ascii")) if "data" in op else op for op in ops]
        with self._conn.helper_lock:
            answer = self._ask_helper((json.dumps(ops) + "\n").encode("utf-8"))
        try:
            replies = json.loads(answer)
        except ValueError:
            raise TransportError(f"ssh {self.settings.where}: file operations answered no JSON: "
                                 f"{_decode(answer[:500])!r}") from None
        if not isinstance(replies, list) or len(replies) != len(ops):
            raise TransportError(f"ssh {self.settings.where}: {len(ops)} file operations, "
                                 f"{len(replies) if isinstance(replies, list) else 'no'} results")
        for reply in replies:
            for entry in (reply.get("files") or {}).values():
                if "data" in entry:
                    entry["data"] = base64.b64decode(entry["data"])
        return replies

    def _ask_helper(self, request):
        """One batch to the connection's kept helper (started on first use); its answer line. A helper found dead
        before the batch is sent is replaced (nothing of the batch ran); one that ends, breaks or times out after
        is dropped and the batch fails: it may have run, so it is never repeated here."""
        helper = self._conn.helper
        if helper is not None and not helper.usable():
            helper.close()
            helper = self._conn.helper = None
        if helper is None:
            helper = self._conn.helper = _Helper(self._channel())
            try:
                helper.channel.exec_command(command_line(self._helper("serve")))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._drop_helper(helper)
                raise TransportError(f"ssh {self.settings.where}: cannot start the file helper: {_reason(exc)}") \
                    from None
        try:
            return helper.ask(request, self.settings.command_timeout)
        except socket.timeout as exc:
            self._drop_helper(helper)
            self._kill(helper.pid())
            raise TransportError(f"ssh {self.settings.where}: file operations: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop_helper(helper)
            if not self._conn.active():
                self._conn.drop()
            raise TransportError(f"ssh {self.settings.where}: file operations failed: {_reason(exc)}") from None

    def _drop_helper(self, helper):
        helper.close()
        if self._conn.helper is helper:
            self._conn.helper = None

    def fetch(self, root, path, local, limit=None):
        landing = Landing(local)
        try:
            result = self._exec(self._channel(), command_line(self._helper("cat", root, path, str(limit or ""))),
                                None, self.settings.command_timeout, ("fetch", root, path), landing)
            sent = _checked(_trailer(result, self.settings.where), f"fetch {root}/{path} from {self.settings.host}")
            return landing.land(sent)
        finally:
            landing.discard()

    def send(self, local, root, path, mode=0o644):
        value, size = 1, 0
        with open(local, "rb") as handle:
            for block in iter(lambda: handle.read(safepaths.BLOCK), b""):
                value, size = zlib.adler32(block, value), size + len(block)
        argv = self._helper("receive", root, path, str(size), f"{value & 0xffffffff:08x}", f"{mode:o}")
        with open(local, "rb") as handle:
            result = self._exec(self._channel(), command_line(argv), handle, self.settings.command_timeout,
                                ("send", root, path))
        return _checked(_trailer(result, self.settings.where), f"send {local} to {root}/{path} on "
                                                                f"{self.settings.host}")

    def _channel(self):
        try:
            return self._conn.transport().open_session(timeout=self.settings.connect_timeout)
        except SshError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._conn.drop()
            raise TransportError(f"ssh {self.settings.where}: {_reason(exc)}") from None

    def close(self):
        if self._closed:
            return
        self._closed = True
        with _POOL_LOCK:
            self._conn.users -= 1
            if self._conn.users > 0:
                return
            _POOL.pop(self.settings, None)
        with self._conn.lock:
            self._conn.drop()


def command_line(argv, env=None, cwd=None):
    """The one remote command line for argv (+ environment additions and a working directory): ``shlex.join`` of
    ``exec sh -c WRAPPER sh CWD NAME=value... ARGV...``, so the login shell only splits quoted words. The wrapper
    prints its pid (the session's process group, which a timeout kills), changes directory, and execs the command
    through ``env``."""
    if env:
        bad = [name for name in env if not _ENV_NAME.fullmatch(str(name))]
        if bad:
            raise ValueError(f"environment variable names {bad} are not valid")
    pairs = [f"{name}={value}" for name, value in (env or {}).items()]
    return shlex.join(["exec", "sh", "-c", _WRAPPER, "sh", _absolute(cwd) if cwd else "", *pairs, *argv])


_HELPER_SOURCE = safehelper.program()
_PID_MARK = "harvester-pid "
_WRAPPER = (f'printf "{_PID_MARK}%s\\n" "$$" >&2; if [ -n "$1" ]; then cd "$1" || exit 127; fi; shift; '
            'exec env -- "$@"')


def _trailer(result, where):
    """The helper's last stderr line (its JSON verdict on a cat or receive), or a failure saying what happened."""
    lines = result.stderr.strip().splitlines()
    try:
        verdict = json.loads(lines[-1]) if lines else None
    except ValueError:
        verdict = None
    if isinstance(verdict, dict) and "ok" in verdict and not result.lost and not result.timed_out:
        return verdict
    return {"ok": False, "code": "lost" if result.lost else None,
            "error": f"ssh {where}: {result.describe()}"}


def _dropped(transport, wait=1.0):
    """True when ``transport``'s connection has ended; a channel it closed can be seen before it is marked so."""
    deadline = time.monotonic() + wait
    while transport.is_active():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _split_pid(stderr):
    """(the wrapper's pid or None, stderr without the wrapper's first line)."""
    if stderr.startswith(_PID_MARK):
        first, _, rest = stderr.partition("\n")
        pid = first[len(_PID_MARK):].strip()
        return (int(pid) if pid.isdigit() else None), rest
    return None, stderr


def _drain(channel, out, err, sink=None):
    """Read what is ready on stdout (into ``out``, or written to ``sink``) and stderr; True when anything was
    read."""
    got = False
    while channel.recv_ready():
        block = channel.recv(65536)
        sink.write(block) if sink is not None else out.append(block)
        got = True
    while channel.recv_stderr_ready():
        err.append(channel.recv_stderr(65536))
        got = True
    return got


def _write(sftp, temp, data):
    with sftp.open(temp, "wb") as handle:
        handle.set_pipelined(True)
        handle.write(data)


def _absolute(path):
    if not str(path).startswith("/"):
        raise TransportError(f"{path!r}: transports take absolute paths only (the submit host's working "
                             "directory is not ours to rely on)")
    return path


def _reason(exc):
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout):
        return f"timed out ({text})"
    return text
