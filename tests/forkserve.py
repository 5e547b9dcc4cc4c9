"""``minipanda serve`` forked from a process that has imported minipanda once (multiprocessing's fork server).

Starting Python and importing the server costs about a second of CPU, several seconds of wall time on a busy
machine, and most HTTP tests start a server of their own. Here the command still runs in a process of its own,
as ``minipanda serve ARGS`` does (``commands.main(argv)``: same parser, same serve loop, its own database
connections, signal handlers, exit code), but that process is forked from the fork server instead of started anew.
The fork server is single-threaded and opens no database or socket, so a fork of it is clean. The tests of the
command's start itself (tests/test_server_*.py, tests/test_cli_service.py) start ``python -m minipanda serve``.
"""
import multiprocessing
import os
import signal
import subprocess
import sys

# The modules ``serve`` imports; the fork server imports them once, before it forks anything (pytest too: a forked
# process imports the test process's main module, pytest's, as multiprocessing does).
PRELOAD = ["pytest", "minipanda.cli.commands", "minipanda.server.process", "minipanda.server.http",
           "minipanda.api.app", "minipanda.tasks.settings"]

_context = None


def context():
    """The fork server's multiprocessing context, its preload set once per test process."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def run(argv, log_path, environ, cwd):
    """The forked process: stdin from /dev/null, stdout and stderr to ``log_path``, the test's environment and
    working directory, then the ``minipanda`` command with ``argv``; its exit status is the process's."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    from minipanda.cli import commands

    sys.exit(commands.main(argv))


class ForkedServe:
    """``minipanda ARGV`` in a process forked from the fork server, with the ``subprocess.Popen`` methods that
    tests/conftest.py's LiveServer and the tests use on a server process (pid, poll, wait, signals)."""

    def __init__(self, argv, log_path):
        self.args, self.returncode = list(argv), None
        # daemon: were a test to leave it running, multiprocessing stops it when the test process ends
        self.process = context().Process(target=run, args=(self.args, log_path, dict(os.environ), os.getcwd()),
                                         name="minipanda " + " ".join(self.args[:1]), daemon=True)
        self.process.start()
        self.pid = self.process.pid

    def poll(self):
        if self.returncode is None and not self.process.is_alive():
            self.returncode = self.process.exitcode  # -N when signal N ended it, as Popen says
            self.process.close()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            self.process.join(timeout)
            if self.poll() is None:
                raise subprocess.TimeoutExpired(["minipanda"] + self.args, timeout)
        return self.returncode

    def send_signal(self, signum):
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)
