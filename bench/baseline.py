"""An earlier commit of this repository as a tree to run beside the current one, for before/after figures from
one run: ``python -m minipanda ...`` started in that tree imports that tree's packages (``-m`` puts the working
directory first on the module path), pilots included (harvester builds the zipapp from the pilot package it
imported)."""
import os
import shutil
import subprocess
import sys
import tempfile

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


def alternating(sides, rounds):
    """``(label, where)`` of each side for each of ``rounds`` rounds, the order turned every other round: on a shared
    machine the load drifts, and neither side should always run first."""
    for n in range(rounds):
        yield from (sides if n % 2 == 0 else sides[::-1])
