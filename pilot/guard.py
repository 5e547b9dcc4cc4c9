"""The payload guard: one small process per pilot that kills the running payload's process group if the pilot dies.

A pilot killed outright (``kill -9``, an out-of-memory kill) cannot clean up after itself. The guard is a POSIX
shell started once, when the pilot starts, in a session of its own (a signal to the pilot's process group does not
reach it), reading the pilot's pipe: the pilot writes the process group of each payload it starts (the payload
leads its own session and group) and ``0`` once that payload and its group are gone. When the pipe ends - the
pilot exited, however it died, since the kernel closes a dead process's descriptors - the guard sends SIGKILL to
the last group it was given, then exits. It runs ``read`` and ``kill``, shell builtins: nothing is started per job.

What it replaces: the payload started through ``setpriv --pdeathsig KILL`` (one more exec per job: ~1.5 ms of wall
time and ~2 ms of CPU on this project's 2-core test machine), or by a full fork of the pilot that ran ``prctl``
before exec (~7 ms of CPU). The guard's cost per job is two writes of a few bytes to a pipe. It also covers more:
the payload's whole process group, where the parent-death signal reached only its first process. Where the guard
cannot run (no /bin/sh) or has died, the payload falls back to that fork and ``prctl`` (payload.die_with_pilot).

What neither covers: processes the payload moved to a group of their own (``setsid``) - the pilot, a child
subreaper, kills those while it lives; after its death harvester's sweeper and the batch system do - and a pilot
killed in the moment between starting a payload and writing its group to the pipe.
"""
import logging
import os
import subprocess

log = logging.getLogger(__name__)

# Stop signals are ignored so the guard outlives a warm stop; only positive numbers above 1 are groups (never
# ``kill -- -1``, which would mean every process of the user, nor 0, the guard's own group).
SCRIPT = """trap '' HUP INT QUIT TERM USR1 USR2 XCPU
group=0
while read -r line; do
  case $line in ''|*[!0-9]*) ;; *) group=$line ;; esac
done
if [ "$group" -gt 1 ]; then kill -s KILL -- "-$group"; fi
"""


class Guard:
    """The pilot's side of the guard: its process and the pipe's write end.

    Args:
        proc: the guard's subprocess.Popen.
        fd: the write end of its pipe (close-on-exec, so no payload inherits it).
    """

    def __init__(self, proc, fd):
        self.proc, self.fd = proc, fd
        self.group = 0  # the group the guard holds now

    @classmethod
    def start(cls, shell="/bin/sh"):
        """Start the guard; None (logged) when it cannot run."""
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen([shell, "-c", SCRIPT], stdin=read_fd, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)
        except OSError as exc:
            os.close(write_fd)
            log.warning("no payload guard (%s): each payload is started with a parent-death signal instead", exc)
            return None
        finally:
            os.close(read_fd)
        return cls(proc, write_fd)

    @property
    def pid(self):
        return self.proc.pid

    @property
    def alive(self):
        return self.fd is not None

    def hold(self, group):
        """Kill process group ``group`` if the pilot dies from now on; False when the guard is gone."""
        return self._send(group)

    def release(self):
        """The group held is gone: nothing to kill any more."""
        if self.group:
            self._send(0)

    def _send(self, group):
        if self.fd is None:
            return False
        try:
            os.write(self.fd, b"%d\n" % group)
        except OSError as exc:  # the guard died (EPIPE): later payloads fall back to the parent-death signal
            log.warning("the payload guard (pid %d) is gone: %s", self.proc.pid, exc)
            self.close()
            return False
        self.group = group
        return True

    def close(self, timeout=5.0):
        """End the guard (the pipe closed, it exits; it kills the group it holds, if any); reap it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the payload guard (pid %d) did not exit", self.proc.pid)
