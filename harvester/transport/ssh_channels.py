"""What runs in an SSH exec channel: the one remote command line of an argv list, reading a channel's output as it
comes, and the kept-open file helper (harvester/transport/safehelper.py's ``serve`` loop) a batch of file
operations goes to. Channels come from :mod:`harvester.transport.ssh_connection`; nothing here imports paramiko.
"""
import json
import re
import select
import shlex
import socket
import time

from harvester.transport.base import TransportError, _decode

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_PID_MARK = "harvester-pid "
_WRAPPER = (f'printf "{_PID_MARK}%s\\n" "$$" >&2; if [ -n "$1" ]; then cd "$1" || exit 127; fi; shift; '
            'exec env -- "$@"')


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
    return shlex.join(["exec", "sh", "-c", _WRAPPER, "sh", absolute(cwd) if cwd else "", *pairs, *argv])



class FileHelper:
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
        return split_pid(_decode(b"".join(self.err)))[0]

    def stderr(self):
        return split_pid(_decode(b"".join(self.err)))[1]

    def ask(self, request, timeout):
        """Send one request line; its one answer line. Raises socket.timeout past ``timeout`` s, EOFError when the
        helper ended (its stderr in the message), paramiko/OS errors when the link broke."""
        self.channel.sendall(request)
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            if drain(self.channel, [], self.err, _Appender(self)):
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
    """A sink for :func:`drain` that keeps stdout in the helper's pending bytes."""

    def __init__(self, helper):
        self.helper = helper

    def write(self, block):
        self.helper.pending += block



def trailer(result, where):
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


def dropped(transport, wait=1.0):
    """True when ``transport``'s connection has ended; a channel it closed can be seen before it is marked so."""
    deadline = time.monotonic() + wait
    while transport.is_active():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def split_pid(stderr):
    """(the wrapper's pid or None, stderr without the wrapper's first line)."""
    if stderr.startswith(_PID_MARK):
        first, _, rest = stderr.partition("\n")
        pid = first[len(_PID_MARK):].strip()
        return (int(pid) if pid.isdigit() else None), rest
    return None, stderr


def drain(channel, out, err, sink=None):
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



def absolute(path):
    if not str(path).startswith("/"):
        raise TransportError(f"{path!r}: transports take absolute paths only (the submit host's working "
                             "directory is not ours to rely on)")
    return path

