#!/usr/bin/env python
"""What ``minipanda testbed`` costs before its demo task is submitted: the testbed process's CPU (every thread's) at
the edges of its start-up steps, and the CPU of harvester's thread that makes the pilot zipapp (built, or copied from
the builds kept in the user's cache). One job without files per run (the run's start-up is the same for any size);
the marks come from bench/startup_hooks/sitecustomize.py on the testbed's PYTHONPATH (the product never loads it).

  interpreter + site        the process's CPU when the hooks load (the interpreter, site, the .pth files)
  CLI                       minipanda's parser, testbed's modules and the run's set-up, until the server's start
  server until it answers   its imports, the queue file, the database, the app, granian (the main thread waits)
  server up, tokens         from the app built to the testbed's tokens and HTTP session
  harvester                 its imports, database, queue file, agents started
  demo task                 prepared (inputs: none) and submitted
  total at the submission   the process's CPU then (what files_cpu counts as the testbed's start-up, less the
                            zipapp thread's CPU after the submission)

Medians of --rounds runs of each side, alternating; nothing is asserted; the load average is printed.

    python3 bench/testbed_startup.py --rounds 5
    python3 bench/testbed_startup.py --rounds 5 --baseline 6e7d087
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
HOOKS = os.path.join(HERE, "startup_hooks")
sys.path.insert(0, HERE)

import baseline  # noqa: E402

# (line, mark it starts at (None: 0), mark it ends at)
STEPS = [("interpreter + site", None, "site"), ("CLI: parser, testbed modules, set-up", "site", "server_start"),
         ("server until it answers (imports, queue file, db, app)", "server_start", "app_built"),
         ("server up, tokens, HTTP session", "app_built", "server_up"),
         ("harvester (imports, db, agents started)", "harvester_start", "harvester_up"),
         ("demo task prepared and submitted", "demo_start", "submitted"),
         ("total at the submission", None, "submitted")]


def run_once(tree, base):
    out = tempfile.mkdtemp(prefix="startup-", dir=base)
    marks_file = os.path.join(out, "marks.json")
    env = dict(os.environ, STARTUP_MARKS=marks_file,
               PYTHONPATH=os.pathsep.join(p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p))
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", os.path.join(out, "home"), "--port", "0",
            "--jobs", "1", "--job-seconds", "0", "--files", "none"]
    proc = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"testbed in {tree}: exit {proc.returncode}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    with open(marks_file) as handle:
        marks = json.load(handle)
    shutil.rmtree(out, ignore_errors=True)
    return marks


def step_ms(marks, start, end):
    if end not in marks or (start and start not in marks):
        return None
    return 1000 * (marks[end] - (marks[start] if start else 0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="runs of each side (default 5)")
    p.add_argument("--baseline", metavar="REV", help="also run that commit's testbed (alternating)")
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        print(f"bench/testbed_startup.py: {args.rounds} runs each; load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        runs = baseline.run_sides(args.baseline, lambda label, tree, case: run_once(tree, base), args.rounds,
                                  prepare=baseline.compile_tree)
        print(f"{'ms of CPU of the testbed process, medians':58s}" + "".join(f"{label:>22s}" for label in runs.labels))
        rows = STEPS + [("the zipapp's thread (harvester's, own CPU)", "zipapp", "zipapp")]
        for name, start, end in rows:
            cells = []
            for label in runs.labels:
                if start == "zipapp":
                    values = [1000 * m["zipapp_thread_s"] for m in runs.of(label) if "zipapp_thread_s" in m]
                else:
                    values = [v for v in (step_ms(m, start, end) for m in runs.of(label)) if v is not None]
                cells.append(f"{statistics.median(values):22.0f}" if values else f"{'-':>22s}")
            print(f"{name:58s}" + "".join(cells))
        if len(runs.labels) == 2:
            ours, theirs = (statistics.median(step_ms(m, None, "submitted") + 1000 * m.get("zipapp_thread_s", 0)
                                              for m in runs.of(label)) for label in runs.labels)
            print(f"total with the zipapp's thread: {ours:.0f} ms against {theirs:.0f} ({ours / theirs:.2f} x)")
        print(f"load at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
