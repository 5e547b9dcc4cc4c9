#!/usr/bin/env python
"""What a command costs before it does anything: the CPU time of ``minipanda``, ``harvester``, ``queueconfig`` and
``pilot`` commands that do little (``--help``, a refused HTTP call, a lint of a small file).

Every command is run as ``python -m PACKAGE ...`` in a subprocess, its CPU time (user + system, from the kernel's
account of the child) and wall time taken; ``python -c pass`` is the floor (the interpreter's own start). With
``--baseline REV`` the same commands of that commit run in alternation with this tree's (``-m`` imports the
packages of the working directory), and the ratio of the medians is printed beside them. Only 127.0.0.1 is
contacted (a refused connection to port 1 for ``job list``); nothing is asserted.

    python3 bench/cli_startup.py                          # this tree, 5 runs of each command
    python3 bench/cli_startup.py --baseline main~3 --repeat 7
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import baseline  # noqa: E402

QUEUES = os.path.join("tests", "data", "queueconfig", "queues.yaml")  # relative: each tree's own copy


def commands(scratch):
    """(label, argv after the interpreter) of every command measured."""
    home = os.path.join(scratch, "home")
    return [
        ("python -c pass", ["-c", "pass"]),
        ("minipanda --help", ["-m", "minipanda", "--help"]),
        ("minipanda --version", ["-m", "minipanda", "--version"]),
        ("minipanda job list (refused)", ["-m", "minipanda", "job", "list", "--url", "http://127.0.0.1:1",
                                          "--home", home]),
        ("minipanda token list", ["-m", "minipanda", "token", "list", "--home", home]),
        ("harvester --help", ["-m", "harvester", "--help"]),
        ("harvester settings", ["-m", "harvester", "settings"]),
        ("queueconfig --help", ["-m", "queueconfig", "--help"]),
        ("queueconfig lint", ["-m", "queueconfig", "lint", "-q", QUEUES]),
        ("pilot --help", ["-m", "pilot", "--help"]),
    ]


def measure(argv, cwd):
    """(CPU seconds, wall seconds) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", metavar="REV", help="also run that commit's commands, alternating with these")
    p.add_argument("--repeat", type=int, default=5, help="runs of each command on each side (default 5)")
    args = p.parse_args()
    labels = ["this tree"] + ([f"baseline {args.baseline}"] if args.baseline else [])
    scratch = tempfile.mkdtemp(prefix="bench-cli-")
    try:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores; "
              f"{args.repeat} runs each, medians")
        header = f"{'command':30} " + " ".join(f"{label + ' CPU ms':>22} {'wall ms':>8}" for label in labels)
        print(header + ("   CPU this/baseline" if args.baseline else ""), flush=True)
        runs = baseline.run_sides(args.baseline, lambda _, tree, command: measure([sys.executable, *command[1]], tree),
                                  args.repeat, cases=commands(scratch))
        for command in commands(scratch):
            medians = [(statistics.median(cpu for cpu, _ in runs.of(side, command)) * 1e3,
                        statistics.median(wall for _, wall in runs.of(side, command)) * 1e3) for side in runs.labels]
            line = f"{command[0]:30} " + " ".join(f"{c:22.0f} {w:8.0f}" for c, w in medians)
            if args.baseline:
                line += f"   {medians[0][0] / medians[1][0]:.2f}"
            print(line, flush=True)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
