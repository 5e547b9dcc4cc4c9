"""The payload: its command line, its environment, and its process group.

The command is an argv list, never a shell string: ``[transformation] + shlex.split(jobPars)``, exec'd directly
in the job directory. jobPars keeps the POSIX word syntax PanDA users already write (``--name 'a b'``), but no
shell ever sees it, so ``;``, ``$(...)`` and redirections in a job definition are plain characters. A job that
needs a shell says so itself (transformation ``/bin/sh``, jobPars ``-c '...'``) or ships a script. A script
without a ``#!`` line is run by /bin/sh, as a shell would do.
"""
import errno
import functools
import logging
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
import urllib.parse

from pilot import errors
from pilot.errors import PilotError
from pilot.fileutil import safe_name
from pilot.jobdirs import open_job_file
from pilot.proctree import ProcessTree

log = logging.getLogger(__name__)
TRF_PATH = re.compile(r"^/trf/user/([^/]+)$")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_pilot():
    """A function for the payload to run between fork and exec: the kernel sends it SIGKILL when the pilot dies,
    even by ``kill -9``. None where prctl is missing (not Linux).

    Only where the pilot has no guard (pilot.guard, which kills the payload's whole group and costs no fork): it
    covers the payload's leader only, and running Python in the child means a full fork of the pilot (~7 ms of CPU
    per payload), where the guard's way lets Popen start the child by vfork.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    pilot_pid = os.getpid()

    def in_child():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != pilot_pid:  # the pilot died between fork and prctl: nobody would send the signal
            os._exit(128 + signal.SIGKILL)

    return in_child


@functools.lru_cache(maxsize=1)
def _prctl():
    """libc's prctl, loaded once, or None."""
    try:
        import ctypes  # only for a payload started without a guard: a pilot with one never loads it

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=None)
def _devnull():
    """/dev/null opened once per pilot for the payloads' stdin (subprocess.DEVNULL opens and closes it per
    payload); read-write as DEVNULL's, close-on-exec (each payload gets it as its fd 0 only)."""
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


SHELLS = ("/bin/sh", "sh", "/usr/bin/sh", "/bin/bash", "bash", "/usr/bin/bash")
PLAIN_WORD = re.compile(r"^[A-Za-z0-9_./:,+@%=-]+$")  # nothing a shell would expand, quote, redirect or split on


def command(executable, job_pars):
    """The payload's argv: the executable, then jobPars split like a POSIX shell would split words; a shell asked
    only to start one program with plain words (``sh -c 'sleep 10'``, as minipanda's flat tasks run every
    command) is left out and the program started directly: one process and one exec fewer per job."""
    try:
        args = shlex.split(job_pars or "")
    except ValueError as exc:
        raise PilotError(errors.UNRECOGNIZEDTRFARGUMENTS, f"jobPars cannot be split into arguments: {exc}") from None
    return without_shell([executable] + args)


def without_shell(argv):
    """``[sh, -c, 'prog word ...']`` as ``[prog, word, ...]`` when the shell would do nothing but start ``prog``:
    every word plain (no quote, ``$``, glob, redirection, ``;``, ``&``, ``|``, ``~``), no variable assignment in
    front, and ``prog`` a program on PATH (a shell builtin without one, like ``exit`` or ``cd``, keeps the shell).
    Anything else is returned as it is."""
    if len(argv) != 3 or argv[0] not in SHELLS or argv[1] != "-c":
        return argv
    words = argv[2].split()
    if not words or "=" in words[0] or not all(PLAIN_WORD.match(word) for word in words):
        return argv
    if on_path(words[0]) is None:
        return argv
    return words


_FOUND = {}  # (name, PATH) -> the program shutil.which found


def on_path(name):
    """``shutil.which(name)``, remembered for the pilot's life per name and PATH: a pilot running thousands of short
    jobs of one program walked every PATH directory for it before each (~10 stats, the most of any step of the
    payload's start). A program found before is checked again with one ``access`` and looked up afresh once it
    no longer runs (removed, no longer executable), so the answer is still what ``which`` would say."""
    key = (name, os.environ.get("PATH"))
    found = _FOUND.get(key)
    if found is not None and os.access(found, os.X_OK):
        return found
    found = shutil.which(name)
    if found is None:
        _FOUND.pop(key, None)
    else:
        _FOUND[key] = found
    return found


def found_before(name, env):
    """The program :func:`on_path` found for ``name`` under ``env``'s PATH, or None (a path, a program not looked up,
    another PATH). The payload is exec'd there at once: Popen's own search tries every PATH directory before it (a
    failed exec each, ~0.1 ms of CPU per job between the pilot and its child)."""
    if "/" in name:
        return None
    return _FOUND.get((name, (env if env is not None else os.environ).get("PATH")))


def environment(job, queue, job_dir, cores, base=None):
    """The payload's environment: the pilot's, plus the job's identity and resources (pilot3's names)."""
    env = dict(os.environ if base is None else base)
    env.update({
        "PandaID": str(job.panda_id), "PanDA_TaskID": str(job.task_id), "PanDA_AttemptNr": str(job.attempt_nr),
        "PANDA_RESOURCE": queue, "PILOT_HOME": job_dir, "PILOT_JOB_DIR": job_dir,
        "ATHENA_CORE_NUMBER": str(cores), "ATHENA_PROC_NUMBER": str(cores), "PANDA_CORE_COUNT": str(cores),
    })
    return env


def transformation(job, job_dir, download, local_dirs, url_prefixes):
    """The executable to run: a downloaded script's path, or the job's command as given.

    Args:
        job: the Job; its ``transformation`` is a URL or a command (absolute path or a name on PATH).
        job_dir: where a downloaded script is written.
        download: callable(url_or_server_path, dest) fetching over HTTP, or None when there is no network.
        local_dirs: directories searched for ``<name>`` instead of downloading (file mode, as pilot3 does with
            HARVESTER_WORKDIR).
        url_prefixes: URL prefixes (queuedata trf_url_prefixes) allowed besides the server's ``/trf/user/``.
    """
    trf = job.transformation
    if not re.match(r"^https?://", trf):
        return trf
    parsed = urllib.parse.urlparse(trf)
    name = os.path.basename(parsed.path)
    if not safe_name(name):
        raise PilotError(errors.TRFDOWNLOADFAILURE, f"transformation URL {trf!r} does not end in a plain file name")
    dest = os.path.join(job_dir, name)
    for directory in local_dirs:
        if directory and os.path.isfile(os.path.join(directory, name)):
            with open(os.path.join(directory, name), "rb") as src, open(dest, "wb") as out:
                out.write(src.read())
            break
    else:
        if download is None:
            raise PilotError(errors.TRFDOWNLOADFAILURE, f"transformation {name} is not in {local_dirs} and "
                                                        "this pilot has no network")
        if TRF_PATH.match(parsed.path):
            source = parsed.path  # PanDA's trf URL: served by the pilot's own server, whatever the host says
        elif any(trf.startswith(prefix) for prefix in url_prefixes if prefix):
            source = trf
        else:
            raise PilotError(errors.TRFDOWNLOADFAILURE, f"transformation URL {trf!r} is not allowed: only the "
                                                        "server's /trf/user/ and queuedata trf_url_prefixes")
        try:
            download(source, dest)
        except (OSError, ValueError) as exc:
            raise PilotError(errors.TRFDOWNLOADFAILURE, f"cannot download {trf}: {exc}") from None
    os.chmod(dest, 0o755)
    return dest


class Payload:
    """One payload process, leader of its own session and process group.

    Args:
        argv: the command.
        cwd: the job directory; stdout and stderr go to ``payload.stdout`` / ``payload.stderr`` in it.
        env: the environment.
        adopter_pid: the pilot's pid when it is a child subreaper (see proctree.ProcessTree).
        guard: the pilot's guard.Guard, which kills the payload's group if the pilot dies; without one (or once
            it is gone) the payload's leader gets a parent-death signal instead (:func:`die_with_pilot`).
    """

    def __init__(self, argv, cwd, env, adopter_pid=None, guard=None):
        self.argv, self.cwd, self.env, self.adopter, self.guard = argv, cwd, env, adopter_pid, guard
        self.stdout = os.path.join(cwd, "payload.stdout")
        self.stderr = os.path.join(cwd, "payload.stderr")
        self.proc = None
        self.tree = None
        self.returncode = None
        self.rusage = None
        self.pidfd = None  # readable once the payload has exited (Linux 5.3+), else None
        self.outputs = None  # (stdout, stderr) opened ahead of the start (open_outputs)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def open_outputs(self):
        """Create payload.stdout and payload.stderr now, ahead of :meth:`start` (which then only starts the
        process); :meth:`close_outputs` if it never comes."""
        if self.outputs is None:  # those of a reused job directory checked and truncated (pilot.jobdirs)
            # unbuffered: only the payload writes them (a buffered open cost an isatty ioctl and an lseek each)
            out = open(open_job_file(self.stdout), "wb", buffering=0)
            try:
                self.outputs = (out, open(open_job_file(self.stderr), "wb", buffering=0))
            except OSError:
                out.close()
                raise

    def close_outputs(self):
        outputs, self.outputs = self.outputs, None
        for handle in outputs or ():
            handle.close()

    def start(self):
        """Start the payload; raise PilotError when it cannot be executed."""
        guarded = self.guard is not None and self.guard.alive
        self.open_outputs()
        out, err = self.outputs
        self.outputs = None
        with out, err:
            try:
                self.proc = self._spawn(self.argv, out, err, guarded)
            except OSError as exc:
                if exc.errno != errno.ENOEXEC:
                    code = errors.TRANSFORMNOTFOUND if isinstance(exc, FileNotFoundError) else \
                        errors.PAYLOADEXECUTIONFAILURE
                    raise PilotError(code, f"cannot execute {self.argv[0]}: {exc.strerror or exc}") from None
                self.proc = self._spawn(["/bin/sh"] + self.argv, out, err, guarded)  # a script without '#!'
        if guarded and not self.guard.hold(self.proc.pid):
            log.warning("payload pid %d is not guarded: the pilot's death would leave it running", self.proc.pid)
        self.tree = ProcessTree(self.proc.pid, self.adopter, ignore=(self.guard.pid,) if self.guard else ())
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # older kernel or Python: the waker's SIGCHLD (signals.Waker), else polls
            self.pidfd = None
        log.info("payload started: pid %d, argv %s", self.proc.pid, self.argv)
        return self.proc.pid

    def _spawn(self, argv, out, err, guarded):
        # no Python between fork and exec when guarded, so Popen starts the child by vfork
        def spawn(executable):
            return subprocess.Popen(argv, executable=executable, cwd=self.cwd, env=self.env, stdin=_devnull(),
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True,
                                    preexec_fn=None if guarded else die_with_pilot())

        known = found_before(argv[0], self.env)
        if known is not None:
            try:
                return spawn(known)
            except FileNotFoundError:  # gone since it was looked up: PATH is searched as if it never had been
                pass
        return spawn(None)

    def poll(self):
        """The exit code once the payload has exited (negative: killed by that signal), else None."""
        if self.returncode is None and self.proc is not None:
            try:
                pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status, rusage = self.proc.pid, 255 << 8, None
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = rusage
                self.proc.returncode = self.returncode  # reaped here, so Popen must not wait again
                self._close_pidfd()
        self.reap_orphans()
        return self.returncode

    def wait(self, seconds, waker=None, also=None):
        """Wait up to ``seconds`` for the payload to exit, returning as soon as it does (its pidfd becomes
        readable), a signal wakes ``waker`` (signals.Waker) or the descriptor ``also`` becomes readable; then
        :meth:`poll`."""
        if self.returncode is None:
            fds = ([self.pidfd] if self.pidfd is not None else []) + ([also] if also is not None else [])
            if self.pidfd is None and not (waker is not None and waker.wakes_on_child):
                seconds = min(seconds, 0.1)  # nothing would end the sleep at the payload's exit: poll
            if waker is not None:
                waker.sleep(seconds, fds)
            elif fds:
                select.select(fds, [], [], max(0.0, seconds))
            else:
                time.sleep(max(0.0, seconds))
        return self.poll()

    def _close_pidfd(self):
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def reap_orphans(self):
        """Collect orphans re-parented to the pilot (subreaper mode) once they exit."""
        if not self.tree or not self.adopter:
            return
        for pid in list(self.tree.seen - {self.tree.root}):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    self.tree.seen.discard(pid)
            except ChildProcessError:
                self.tree.seen.discard(pid)

    def kill(self, grace):
        """Kill the whole process tree (TERM, then KILL after ``grace`` s) and reap the payload."""
        if self.tree:
            self.tree.kill(grace, reap=self.poll)
        self.poll()

    def release(self):
        """The payload and its group are gone: the guard holds nothing any more (a pid reused later is safe)."""
        if self.guard is not None and self.guard.group == self.pid:
            self.guard.release()

    def cpu_time(self):
        """CPU seconds of the payload and the descendants it reaped (from wait4), 0 before it exits."""
        return (self.rusage.ru_utime + self.rusage.ru_stime) if self.rusage else 0.0
