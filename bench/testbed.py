#!/usr/bin/env python
"""The one-command testbed, measured: ``minipanda testbed --jobs 1000 --job-seconds 0.1`` as a user runs it.

Each run is the real command in a subprocess with a fresh temporary home: the server and harvester in one process,
pilots as local batch workers, each job reading its input from the server's file store and uploading its output
and log there (``--files none``: no input or output, only the log). The figures come from the run's own
summary.json (times from the server's database, CPU from the processes and the pilots' own accounts):

  makespan        task submitted -> last job ended (cold: no pilot was up at the submission); with --warm-up,
                  from the warm-up task's submission, the warm-up included
  warm makespan   --warm-up only: the demo task's submission (pilots up and asking for work, inputs already in the
                  file store) -> its last job ended; the way bench/peers.py times the task runners
  cold start      the first task's submission -> its first job started (harvester's launch, the pilots' start), from
                  the server's database (task creation time, the first job's start), the same for both sides
  ideal           jobs x job-seconds / pilots (what the pilots could do if a job cost nothing but its payload)
  CPU floor       CPU of every process (server, harvester, pilots, payloads) / cores: no schedule ends sooner
  CPU per job     server + harvester + pilots, payloads left out, per job attempt
  first job       the command's process start -> the first job reported starting (server and harvester start too)
  pilot steps     from the pilots' own pilot_timing.json: the mean ms of each step between one payload's end and
                  the next payload's start in the same pilot (where a job's wall time goes besides its payload),
                  the median of that gap (the mean holds the rare stalls of a loaded machine), and the end tail:
                  the last pilot's last payload end - the first pilot's (how long pilots sat idle at the end)

Both trees are byte-compiled first, as an installed package is (the start-up of every process is measured).
Nothing is asserted: the goals are only reported, with the load average (the machine may be shared). With
``--baseline REV`` the same runs are made with that commit's testbed (its server, harvester and pilot) in
alternation with this tree's, for figures side by side from one run. Only 127.0.0.1 is contacted; the testbed
stops everything it started, and the bench kills nothing but its own subprocess.

    python3 bench/testbed.py                         # 1000 jobs of 0.1 s on 2 cores, the testbed's 6 pilots
    python3 bench/testbed.py --jobs 2000 --job-seconds 0 --files none --baseline main~8   # no-op, before/after
    python3 bench/testbed.py --pilots 2,4,6          # one run per pilot count, side by side
    python3 bench/testbed.py --jobs 1000 --files none --pilots 6 --warm-up   # warm and cold makespans, one run
"""
import argparse
import glob
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import baseline  # noqa: E402
import fsprobe  # noqa: E402


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="jobs in the demo task (default 1000)")
    p.add_argument("--job-seconds", type=float, default=0.1, help="payload time of each job (default 0.1)")
    p.add_argument("--cores", type=int, default=2, help="cores given to the queue; the CPU floor divides by it (2)")
    p.add_argument("--pilots", default="", help="comma-separated pilot counts, one run each (default: the "
                                                "testbed's own choice, 3 per core, since the payload sleeps)")
    p.add_argument("--files", choices=("small", "none", "1mb"), default="small",
                   help="what each job reads and writes (minipanda testbed --files; default small)")
    p.add_argument("--warm-up", action="store_true",
                   help="minipanda testbed --warm-up: pilots up before the demo task; the warm makespan beside the "
                        "cold one (a baseline must know the option)")
    p.add_argument("--baseline", metavar="REV", help="also run that commit's testbed, alternating with this one")
    p.add_argument("--repeat", type=int, default=1, help="runs per pilot count (default 1)")
    p.add_argument("--time-limit", type=float, default=900, help="seconds before a run is interrupted (900)")
    p.add_argument("--keep", action="store_true", help="keep the testbed homes")
    return p


def run_once(args, pilots, base, tree=ROOT, label="this tree"):
    home = os.path.join(base, f"pilots{pilots}-{time.time_ns()}")
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", home, "--port", "0", "--jobs", str(args.jobs),
            "--job-seconds", f"{args.job_seconds:g}", "--cores", str(args.cores)] + \
        (["--pilots", str(pilots)] if pilots else []) + (["--files", args.files] if args.files != "small" else []) + \
        (["--warm-up"] if args.warm_up else [])
    started = time.time()
    with open(os.path.join(base, f"pilots{pilots}.out"), "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tree)
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
    summary["cold_start_db_s"] = cold_start(home)  # both sides alike, an older testbed's summary has no such figure
    return dict(summary, exit_code=code, wall_s=wall, pilots=summary.get("pilots", pilots), home=home, label=label,
                steps=pilot_steps(home, summary.get("warm_up_panda_ids", [])))


def cold_start(home):
    """The first task's submission (as the server recorded it) -> the first job started, s, from the run's database;
    None when it cannot be read."""
    import datetime
    import sqlite3

    try:
        with sqlite3.connect(os.path.join(home, "server", "minipanda.db")) as conn:
            created = conn.execute("SELECT MIN(creation_time) FROM task").fetchone()[0]
            times = [conn.execute("SELECT MIN(time) FROM status_log WHERE new_status IN ('starting', 'running')")
                     .fetchone()[0], conn.execute("SELECT MIN(start_time) FROM job").fetchone()[0]]
    except sqlite3.Error:
        return None
    started = min((t for t in times if t), default=None)
    if not created or not started:
        return None
    return (datetime.datetime.fromisoformat(started) - datetime.datetime.fromisoformat(created)).total_seconds()


# (name, from mark, to mark, whose marks: 0 = this job's, 1 = the next job's): consecutive spans from one payload's
# end to the next one's start
STEPS = (
    ("payload", "PILOT_PRE_PAYLOAD", "PILOT_POST_PAYLOAD", 0, 0),
    ("end -> stage-out", "PILOT_POST_PAYLOAD", "PILOT_PRE_STAGEOUT", 0, 0),
    ("stage-out + log", "PILOT_PRE_STAGEOUT", "PILOT_POST_STAGEOUT", 0, 0),
    ("-> final update", "PILOT_POST_STAGEOUT", "PILOT_PRE_FINAL_UPDATE", 0, 0),
    ("final update", "PILOT_PRE_FINAL_UPDATE", "PILOT_POST_FINAL_UPDATE", 0, 0),
    ("-> next job in hand", "PILOT_POST_FINAL_UPDATE", "PILOT_POST_GETJOB", 0, 1),
    ("-> its payload start", "PILOT_POST_GETJOB", "PILOT_PRE_PAYLOAD", 1, 1),
)


def pilot_steps(home, leave_out=()):
    """{step: mean ms} over every pair of consecutive jobs of each pilot, from the pilots' timing files, plus
    "payload end -> next start" (the sum of the steps after the payload); {} when there are none. The jobs
    ``leave_out`` (the warm-up's) are not counted."""
    leave_out = {str(panda_id) for panda_id in leave_out}
    spans = {name: [] for name, *_ in STEPS}
    gaps, last_ends = [], []
    for path in glob.glob(os.path.join(home, "harvester", "**", "pilot_timing.json"), recursive=True):
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        jobs = sorted((marks for key, marks in data.items() if key.isdigit() and key != "0" and key not in leave_out
                       and "PILOT_PRE_PAYLOAD" in marks), key=lambda marks: marks["PILOT_PRE_PAYLOAD"])
        if jobs and "PILOT_POST_PAYLOAD" in jobs[-1]:
            last_ends.append(jobs[-1]["PILOT_POST_PAYLOAD"])
        for job, following in zip(jobs, jobs[1:]):
            for name, start, end, start_of, end_of in STEPS:
                first, second = (job, following)[start_of], (job, following)[end_of]
                if start in first and end in second:
                    spans[name].append(second[end] - first[start])
            if "PILOT_POST_PAYLOAD" in job:
                gaps.append(following["PILOT_PRE_PAYLOAD"] - job["PILOT_POST_PAYLOAD"])
    steps = {name: 1000 * statistics.fmean(values) for name, values in spans.items() if values}
    if gaps:
        steps["payload end -> next start"] = 1000 * statistics.fmean(gaps)
        steps["gap median"] = 1000 * statistics.median(gaps)
    if len(last_ends) > 1:
        steps["end tail"] = 1000 * (max(last_ends) - min(last_ends))
    return steps


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def main(argv=None):
    args = parser().parse_args(argv)
    base = tempfile.mkdtemp(prefix="bench-testbed-")
    print(f"bench/testbed.py: {args.jobs} jobs of {args.job_seconds:g} s, files {args.files}, {args.cores} cores, "
          f"pilots {args.pilots or 'as the testbed chooses'}; homes under {base}; "
          f"load before {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"  before: {fsprobe.describe(base)}", flush=True)

    def prepare(tree):
        if tree != ROOT and args.warm_up and "--warm-up" not in open(os.path.join(tree, "testbed", "cli.py")).read():
            shutil.rmtree(base, ignore_errors=True)
            raise SystemExit(f"--warm-up: the baseline {args.baseline}'s testbed has no --warm-up; compare cold runs")
        baseline.compile_tree(tree)

    def one_run(label, where, pilots):
        result = run_once(args, pilots, base, where, label)
        print(f"  {label}, pilots {result['pilots']}: exit {result['exit_code']}, "
              f"{result.get('finished_inputs', '?')} of {args.jobs} finished, "
              f"makespan {fmt(result.get('makespan_s'))} s, ratio {fmt(result.get('ratio'), '.2f')}, "
              + (f"warm {fmt(result.get('makespan_warm_s'))} s, ratio {fmt(result.get('ratio_warm'), '.2f')}, "
                 if args.warm_up else "")
              + f"cold start {fmt(result.get('cold_start_db_s'), '.2f')} s, "
              f"CPU per job {fmt(cpu_per_job(result))} ms, load {result.get('load')}", flush=True)
        return result

    try:
        results = [run.result for run in baseline.run_sides(
            args.baseline, one_run, args.repeat, prepare=prepare,
            cases=[int(x) for x in args.pilots.split(",") if x.strip()] or [None])]
        print(f"  after: {fsprobe.describe(base)}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nideal = {args.jobs} x {args.job_seconds:g} s / pilots; CPU floor = CPU of every process / "
          f"{args.cores} cores")
    header = ("testbed", "pilots", "exit", "finished", "makespan s", "jobs/s", "ideal s", "makespan/ideal",
              "warm makespan s", "warm/ideal", "CPU floor s", "CPU ms/job (no payload)", "server+harvester s",
              "pilots s", "payloads s", "cold start s", "first job s", "load 1/5/15")
    print("| " + " | ".join(header) + " |")
    print("|---|" + "|".join(" ---: " for _ in header[1:]) + "|")
    for r in results:
        print("| " + " | ".join([r["label"], str(r["pilots"]), str(r["exit_code"]), str(r.get("finished_inputs", "-")),
                                 fmt(r.get("makespan_s")), fmt(r.get("jobs_per_s")), fmt(r.get("ideal_s")),
                                 fmt(r.get("ratio"), ".2f"), fmt(r.get("makespan_warm_s")),
                                 fmt(r.get("ratio_warm"), ".2f"), fmt(r.get("cpu_floor_s")), fmt(cpu_per_job(r)),
                                 fmt(r.get("cpu_testbed_s")), fmt(r.get("cpu_pilots_own_s", r.get("cpu_pilots_s"))),
                                 fmt(r.get("cpu_payloads_s")), fmt(r.get("cold_start_db_s"), ".2f"),
                                 fmt(r.get("first_job_started_s",
                                                                         r.get("first_job_running_s"))),
                                 "/".join(str(x) for x in r.get("load", []))]) + " |")
    names = [name for name, *_ in STEPS] + ["payload end -> next start", "gap median", "end tail"]
    if any(r["steps"] for r in results):
        print("\npilot steps, mean ms over consecutive jobs of one pilot (they add up) (pilot_timing.json):")
        print("| testbed | pilots | " + " | ".join(names) + " |")
        print("|---|---:|" + "|".join(" ---: " for _ in names) + "|")
        for r in results:
            print(f"| {r['label']} | {r['pilots']} | " + " | ".join(fmt(r["steps"].get(name)) for name in names) + " |")
    if args.baseline:
        for pilots in sorted({r["pilots"] for r in results}, key=str):
            mean = [[statistics.fmean(figures) if all(figures) and figures else None
                     for figures in ([how(r) for r in results if r["pilots"] == pilots and (r["label"] == "this tree")
                                      == mine] for mine in (True, False))] for how in (cpu_per_job, cpu_with_inputs)]
            if all(mean[0]):
                print(f"pilots {pilots}: CPU per job, this tree / baseline = {mean[0][0] / mean[0][1]:.2f}"
                      + (f"; with the writing of the demo's inputs counted on both sides (a testbed before "
                         f"cpu_inputs_s counted it) {mean[1][0] / mean[1][1]:.2f}" if all(mean[1]) else ""))
    print("goals: makespan / ideal <= 1.1 (1000 x 0.1 s, 6 pilots; bench/peers.py compares the warm one); CPU per "
          "job <= 15 ms without files, "
          "<= 25 ms with one input and one output")
    if args.keep:
        print(f"homes kept under {base}")
    return 0 if results and all(r["exit_code"] == 0 for r in results) else 1


def cpu_per_job(r):
    """ms of CPU per job attempt of server, harvester and pilots, payloads left out; a summary without the
    pilots' own accounts (an older testbed) gives pilots and payloads together."""
    if r.get("cpu_minipanda_per_job_ms") is not None:
        return r["cpu_minipanda_per_job_ms"]
    attempts = r.get("attempts") or r.get("finished_inputs")
    if not attempts or r.get("cpu_testbed_s") is None:
        return None
    return 1000 * (r["cpu_testbed_s"] + r.get("cpu_pilots_s", 0)) / attempts


def cpu_with_inputs(r):
    """cpu_per_job with the testbed's writing of the demo's inputs counted in (as a testbed before cpu_inputs_s)."""
    figure, attempts = cpu_per_job(r), r.get("attempts") or r.get("finished_inputs")
    if figure is None or not attempts:
        return None
    return figure + 1000 * (r.get("cpu_inputs_s") or 0) / attempts


if __name__ == "__main__":
    sys.exit(main())
