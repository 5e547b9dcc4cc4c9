"""The SSH transport: batch commands and worker files on a remote login/submit host, through paramiko.

With :mod:`harvester.transport.ssh_connection` (the kept connection, its host-key checks and its errors), the only
modules that import paramiko. A call that found the connection dropped is retried once, when nothing of it can have
run yet. Commands run in exec channels (:mod:`harvester.transport.ssh_channels`), their command lines built with
``shlex.join`` from argv lists; files move by SFTP, written under a temporary name and renamed, so a reader never
sees half a file; the safe file operations go to a helper kept open on the host.

A connection that cannot be made raises one of three distinct errors (:class:`HostUnreachable`,
:class:`AuthenticationFailed`, :class:`UnknownHostKey`, and :class:`HostKeyChanged`, from
:mod:`harvester.transport.ssh_connection`); in :meth:`SshTransport.run` they become exit status 255 with the message
on stderr, as the ssh command does.
"""
import base64
import errno
import json
import logging
import os
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
from harvester.transport.base import CommandResult, Landing, Transport, TransportError, _check_argv, _checked, _decode
from harvester.transport.ssh_channels import FileHelper, absolute, command_line, drain, dropped, split_pid, trailer
from harvester.transport.ssh_connection import Connection, SshError, SshSettings, reason

log = logging.getLogger(__name__)
SSH_FAILED_RC = 255  # ssh's own exit status when the connection, not the command, failed
_HELPER_SOURCE = safehelper.program()
_POOL, _POOL_LOCK = {}, threading.Lock()


class SshTransport(Transport):
    """Commands and files on ``settings.host`` over SSH (see the module docstring)."""

    name = "ssh"

    def __init__(self, settings: SshSettings):
        self.settings = settings
        with _POOL_LOCK:
            self._conn = _POOL.setdefault(settings, Connection(settings))
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
                    return CommandResult(SSH_FAILED_RC, "", f"ssh {self.settings.where}: {reason(exc)}", argv=argv)
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
                if not drain(channel, out, err, sink):
                    if time.monotonic() > deadline:
                        channel.close()
                        pid, stderr = split_pid(_decode(b"".join(err)))
                        self._kill(pid)
                        return CommandResult(-9, _decode(b"".join(out)), stderr, True, argv)
                    select.select([channel], [], [], 0.05)
            drain(channel, out, err, sink)
            code = channel.recv_exit_status() if channel.exit_status_ready() else -1
            # no exit status: the command was killed by a signal (paramiko drops exit-signal), or the link died
            lost = code == -1 and dropped(channel.get_transport())
            code = SSH_FAILED_RC if lost else code
        except (paramiko.SSHException, OSError, EOFError) as exc:
            lost, code = True, SSH_FAILED_RC
            err.append(f"\n{reason(exc)}".encode())
        finally:
            channel.close()
        stderr = split_pid(_decode(b"".join(err)))[1]
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
                                         f"{reason(exc)}") from None

    def makedirs(self, path, mode=0o755):
        path = absolute(path)

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
        path = absolute(path)
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
        path = absolute(path)
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
            helper = self._conn.helper = FileHelper(self._channel())
            try:
                helper.channel.exec_command(command_line(self._helper("serve")))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._drop_helper(helper)
                raise TransportError(f"ssh {self.settings.where}: cannot start the file helper: {reason(exc)}") \
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
            raise TransportError(f"ssh {self.settings.where}: file operations failed: {reason(exc)}") from None

    def _drop_helper(self, helper):
        helper.close()
        if self._conn.helper is helper:
            self._conn.helper = None

    def fetch(self, root, path, local, limit=None):
        landing = Landing(local)
        try:
            result = self._exec(self._channel(), command_line(self._helper("cat", root, path, str(limit or ""))),
                                None, self.settings.command_timeout, ("fetch", root, path), landing)
            sent = _checked(trailer(result, self.settings.where), f"fetch {root}/{path} from {self.settings.host}")
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
        return _checked(trailer(result, self.settings.where), f"send {local} to {root}/{path} on "
                                                                f"{self.settings.host}")

    def _channel(self):
        try:
            return self._conn.transport().open_session(timeout=self.settings.connect_timeout)
        except SshError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._conn.drop()
            raise TransportError(f"ssh {self.settings.where}: {reason(exc)}") from None

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


def _write(sftp, temp, data):
    with sftp.open(temp, "wb") as handle:
        handle.set_pipelined(True)
        handle.write(data)


