"""Helpers of the batch plugin tests: a transport that stands in for a scheduler's commands, and the recorded
outputs of tests/data/batch/ (see its README for where each format comes from)."""
import os

from harvester.batch.base import WorkerSpec
from harvester.transport.base import CommandResult, Transport, _check_argv

DATA = os.path.join(os.path.dirname(__file__), "data", "batch")


def recorded(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return handle.read()


class SchedulerTransport(Transport):
    """The scheduler's stand-in: records every argv (and stdin) it is given and answers with canned
    :class:`CommandResult`s queued per command name; files live in a dict (``stored``), read by ``read_file`` and
    by the ``read`` operation of ``files``."""

    name = "recording"

    def __init__(self):
        self.calls, self.stored, self.answers = [], {}, {}

    def answer(self, command, returncode=0, stdout="", stderr="", lost=False):
        """Queue the next answer to ``command`` (argv[0]); the last one queued repeats. ``lost``: the connection
        dropped while it ran (as :class:`harvester.transport.ssh.SshTransport` reports it)."""
        self.answers.setdefault(command, []).append((returncode, stdout, stderr, lost))
        return self

    def run(self, argv, timeout=None, input=None, env=None, cwd=None):
        argv = _check_argv(argv)  # the same refusal of shell lines as the real transports
        self.calls.append((argv, input))
        queued = self.answers.get(argv[0]) or [(127, "", f"{argv[0]}: command not found", False)]
        returncode, stdout, stderr, lost = queued.pop(0) if len(queued) > 1 else queued[0]
        return CommandResult(returncode, stdout, stderr, argv=argv, lost=lost)

    def commands(self, name):
        return [argv for argv, _ in self.calls if argv[0] == name]

    def makedirs(self, path, mode=0o755):
        pass

    def write_file(self, path, data, mode=0o644):
        self.stored[path] = data.encode() if isinstance(data, str) else data

    def read_file(self, path):
        return self.stored.get(path)

    def exists(self, path):
        return path in self.stored

    def files(self, ops):
        results = []
        for op in ops:
            assert op["op"] == "read", op
            found = {}
            for path in op["paths"]:
                data = self.stored.get(f"{op['root'].rstrip('/')}/{path}")
                found[path] = {"data": data} if data is not None else {"code": "missing", "error": "missing"}
            results.append({"ok": True, "files": found})
        return results

    def listdir(self, path):
        prefix = path.rstrip("/") + "/"
        return sorted({name[len(prefix):].split("/")[0] for name in self.stored if name.startswith(prefix)})


def worker(queue, worker_id=11, environment=None, **changes):
    """A worker of ``queue`` (which names its access point and the pilot's arguments)."""
    fields = dict(worker_id=worker_id, access_point=f"/scratch/harvester/workers/{queue.name}/"
                  f"{worker_id}", argv=("python3", "/opt/pilot.pyz", "--queue", queue.name),
                  environment=environment or {"PANDA_SERVER": "http://panda:25080"}, cores=8, memory_mb=16000,
                  walltime_s=4200)
    fields.update(changes)
    return WorkerSpec(**fields)


def directives(script, prefix):
    """The directive lines a scheduler reads: ``prefix`` lines up to the first command line (blank lines and
    comments do not end the header; the #! line is a comment)."""
    found = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith(prefix):
            found.append(stripped)
        elif stripped and not stripped.startswith("#"):
            break
    return found


def every_line_with(script, prefix):
    """Lines anywhere in the script that start with ``prefix`` (a scheduler that scans the whole file reads
    these)."""
    return [line for line in script.splitlines() if line.lstrip().startswith(prefix)]
