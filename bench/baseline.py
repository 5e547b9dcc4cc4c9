"""An earlier commit of this repository as a tree to run beside the current one, for before/after figures from
one run: ``python -m minipanda ...`` started in that tree imports that tree's packages (``-m`` puts the working
directory first on the module path), pilots included (harvester builds the zipapp from the pilot package it
imported). :func:`run_sides` runs a bench's side for this tree and for that commit's, alternating, and collects
both sides' results."""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkout(rev):
    """A temporary directory holding ``rev``'s files (git archive); remove it with :func:`remove`."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", rev + "^{commit}"], capture_output=True,
                            text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--baseline {rev}: not a commit of {ROOT}: {commit.stderr.strip()}")
    directory = tempfile.mkdtemp(prefix=f"bench-baseline-{rev[:12]}-")
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", commit.stdout.strip()], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", directory], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"--baseline {rev}: git archive failed")
    return directory


PACKAGES = ("minipanda", "harvester", "pilot", "testbed", "queueconfig")


def compile_tree(directory):
    """Byte-compile the packages of ``directory`` (this tree or a checkout), as an installed package is: with
    PYTHONDONTWRITEBYTECODE set, or a fresh checkout, every process would otherwise compile every module it
    imports, at each start, and a side with stale or missing caches would pay for it alone."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", *[p for p in PACKAGES
                                                                 if os.path.isdir(os.path.join(directory, p))]],
                   cwd=directory, check=True, stdout=subprocess.DEVNULL)


def remove(directory):
    if directory and os.path.basename(directory).startswith("bench-baseline-"):
        shutil.rmtree(directory, ignore_errors=True)


THIS_TREE = "this tree"
Run = collections.namedtuple("Run", "label tree case result")


class Runs(list):
    """What :func:`run_sides` ran, each a :class:`Run`, in the order they ran; ``labels``: the sides' labels, this
    tree's first."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def of(self, label, case=None):
        """The results of the side ``label`` (of ``case`` only, when given), in the order they ran."""
        return [run.result for run in self if run.label == label and (case is None or run.case == case)]


def run_sides(rev, run_side, rounds, cases=(None,), prepare=None, baseline_label=None):
    """``run_side(label, tree, case)`` for this tree (label "this tree", tree ROOT) and, when ``rev`` is given, for
    that commit's files (label ``baseline_label``, by default "baseline REV"; tree a :func:`checkout` of it):
    ``rounds`` pairs of runs for each of ``cases``, the order of each pair turned from the one before (on a shared
    machine the load drifts, and neither side should always run first); the pairs are counted on across the cases.
    ``prepare(tree)``, when given, runs for each side's tree before the first run (e.g. :func:`compile_tree`).

    Returns a :class:`Runs`. A side that fails (an exception, SystemExit included) ends the whole: SystemExit naming
    the side and the round and saying what failed. Whatever happens, a process still running in the checkout (its
    working directory inside it, e.g. a server the side did not stop) is stopped, then the checkout is removed."""
    tree = checkout(rev) if rev else None
    sides = [(THIS_TREE, ROOT)] + ([(baseline_label or f"baseline {rev}", tree)] if tree else [])
    runs = Runs([label for label, _ in sides])
    try:
        if prepare:
            for _, where in sides:
                prepare(where)
        pair = 0
        for number, case in enumerate(cases, 1):
            for round_ in range(1, rounds + 1):
                for label, where in sides if pair % 2 == 0 else sides[::-1]:
                    try:
                        result = run_side(label, where, case)
                    except (Exception, SystemExit) as exc:
                        which = f"round {round_} of {rounds}" + (f", case {number} of {len(cases)}"
                                                                 if len(cases) > 1 else "")
                        raise SystemExit(f"{label} ({which}) failed: {_failure(exc)}") from exc
                    runs.append(Run(label, where, case, result))
                pair += 1
    finally:
        if tree:
            stop_left_running(tree)
        remove(tree)
    return runs


def child_result(argv, tree, env=None):
    """Run a bench's own child (``argv``, e.g. the script with its ``--run`` flag) in ``tree`` with that tree first
    on PYTHONPATH (or ``env``), and return the JSON of the last ``RESULT {...}`` line it printed; SystemExit with
    the end of its output when it failed or printed none."""
    out = subprocess.run(argv, cwd=tree, env=env or dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"run failed ({out.returncode}): {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _failure(exc):
    """What ``exc`` says, with the end of a failed child's output when it carries any."""
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, str) else f"exit status {exc.code}"
    text = f"{type(exc).__name__}: {exc}"
    for output in (getattr(exc, "stdout", None), getattr(exc, "stderr", None)):
        if output:
            output = output.decode(errors="replace") if isinstance(output, bytes) else output
            text += "\n" + output[-2000:]
    return text


def stop_left_running(directory, grace=5.0):
    """Stop (SIGTERM, after ``grace`` seconds SIGKILL) every process of this user whose working directory is in
    ``directory``, a checkout made for this run (so none but this run's own); each one stopped is said on stderr."""
    directory = os.path.realpath(directory)
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            where = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone, or another user's
            continue
        if where == directory or where.startswith(directory + os.sep):
            left.append(int(entry))
            print(f"bench/baseline.py: stopping process {entry} left running in {directory}: {command[:200]}",
                  file=sys.stderr, flush=True)
    for signal_ in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, signal_)
            except OSError:  # gone meanwhile
                pass
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            left = [pid for pid in left if _running(pid)]
            time.sleep(0.05)
        if not left:
            break


def _running(pid):
    """Whether ``pid`` still runs (a zombie, stopped but not reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
