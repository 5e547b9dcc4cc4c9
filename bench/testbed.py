#!/usr/bin/env python
"""The one-command testbed, measured: ``minipanda testbed --jobs 1000 --job-seconds 0.1`` as a user runs it.

Each run is the real command in a subprocess with a fresh temporary home: the server and harvester in one process,
pilots as local batch workers, each job reading its input from the server's file store and uploading its output
and log there. The figures come from the run's own summary.json (times from the server's database):

  makespan        task submitted -> last job ended
  ideal           sum of the job times / cores = jobs x job-seconds / cores      goal: makespan / ideal <= 1.5
  first job       the command's process start -> the first job reported running  goal: <= 5 s
  CPU             server + harvester (the testbed process), pilots with their payloads

Nothing is asserted: the goals are only reported, with the load average (the machine may be shared). Only
127.0.0.1 is contacted; the testbed stops everything it started (its own exit code says whether every job
finished), and the bench kills nothing but its own subprocess.

    python3 bench/testbed.py                         # 1000 jobs of 0.1 s on 2 cores, the testbed's 6 pilots
    python3 bench/testbed.py --pilots 2,4,6          # one run per pilot count, side by side
    python3 bench/testbed.py --jobs 200 --keep       # keep the homes (logs, databases, outputs)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="jobs in the demo task (default 1000)")
    p.add_argument("--job-seconds", type=float, default=0.1, help="payload time of each job (default 0.1)")
    p.add_argument("--cores", type=int, default=2, help="cores given to the queue; the ideal divides by it (2)")
    p.add_argument("--pilots", default="", help="comma-separated pilot counts, one run each (default: the "
                                                "testbed's own choice, 3 per core, since the payload sleeps)")
    p.add_argument("--repeat", type=int, default=1, help="runs per pilot count (default 1)")
    p.add_argument("--time-limit", type=float, default=900, help="seconds before a run is interrupted (900)")
    p.add_argument("--keep", action="store_true", help="keep the testbed homes")
    return p


def run_once(args, pilots, base):
    home = os.path.join(base, f"pilots{pilots}-{time.time_ns()}")
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", home, "--port", "0", "--jobs", str(args.jobs),
            "--job-seconds", f"{args.job_seconds:g}", "--cores", str(args.cores)] + \
        (["--pilots", str(pilots)] if pilots else [])
    started = time.time()
    with open(os.path.join(base, f"pilots{pilots}.out"), "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            code = proc.wait(args.time_limit)
        except subprocess.TimeoutExpired:
            proc.send_signal(2)  # Ctrl-C: the testbed stops what it started
            code = proc.wait(120)
    wall = time.time() - started
    try:
        with open(os.path.join(home, "summary.json")) as handle:
            summary = json.load(handle)
    except OSError:
        summary = {}
    return dict(summary, exit_code=code, wall_s=wall, pilots=summary.get("pilots", pilots), home=home)


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def main(argv=None):
    args = parser().parse_args(argv)
    base = tempfile.mkdtemp(prefix="bench-testbed-")
    print(f"bench/testbed.py: {args.jobs} jobs of {args.job_seconds:g} s, {args.cores} cores, "
          f"pilots {args.pilots or 'as the testbed chooses'}; "
          f"homes under {base}; load before {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    try:
        for pilots in [int(x) for x in args.pilots.split(",") if x.strip()] or [None]:
            for _ in range(args.repeat):
                result = run_once(args, pilots, base)
                results.append(result)
                print(f"  pilots {result['pilots']}: exit {result['exit_code']}, "
                      f"{result.get('finished_inputs', '?')} of {args.jobs} finished, "
                      f"makespan {fmt(result.get('makespan_s'))} s, ratio "
                      f"{fmt(result.get('ratio'), '.2f')}, first job {fmt(result.get('first_job_running_s'))} s, "
                      f"load {result.get('load')}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    ideal = args.jobs * args.job_seconds / args.cores
    print(f"\nideal = {args.jobs} x {args.job_seconds:g} s / {args.cores} cores = {ideal:.1f} s")
    header = ("pilots", "exit", "finished", "makespan s", "makespan/ideal", "jobs/s", "first job s",
              "CPU server+harvester s", "CPU pilots s", "wall s", "load 1/5/15")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" ---: " for _ in header) + "|")
    for r in results:
        print("| " + " | ".join([str(r["pilots"]), str(r["exit_code"]), str(r.get("finished_inputs", "-")),
                                 fmt(r.get("makespan_s")), fmt(r.get("ratio"), ".2f"), fmt(r.get("jobs_per_s")),
                                 fmt(r.get("first_job_running_s")), fmt(r.get("cpu_testbed_s")),
                                 fmt(r.get("cpu_pilots_s")), fmt(r["wall_s"]),
                                 "/".join(str(x) for x in r.get("load", []))]) + " |")
    print("goals: makespan / ideal <= 1.5; first job running <= 5 s after the command started")
    if args.keep:
        print(f"homes kept under {base}")
    return 0 if results and all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
