#!/usr/bin/env python
"""Where a files job's CPU goes: ``minipanda testbed`` run with ``--files none`` and ``--files 1mb`` (alternating,
same tree), every process's CPU split by thread and the server's request CPU by route, per job, side by side with
the difference. The split comes from bench/files_cpu_hooks/sitecustomize.py, put on the testbed's PYTHONPATH (the
server + harvester process and each pilot load it; the product never does).

  routes    CPU of the request threads inside the WSGI app (access log, bottle, handler, database), by route,
            ms per job (requests x ms per request); granian's own threads and the event loop reading the bodies
            are in "threads" (native, minipanda-http)
  threads   CPU of each thread of the testbed's process (server duties, harvester agents, request threads, the
            testbed's main thread: it writes the inputs) and of the pilots' threads (main: the job loop, stage-in,
            payload; wrap-up: stage-out, log, final updates), ms per job
  summary   the testbed's own cpu_minipanda_per_job_ms (inputs' writing and payloads left out): the whole run's CPU
            over its jobs, so what is paid once per run is spread over --jobs (at 300 jobs ~3 s of start-up
            read as ~10 ms per job; at 2,000 as ~1.5)
  once per run  of that CPU, what is not paid per job (from marks the hooks take of each process's CPU): the
            testbed process's start-up (imports, database, server, harvester, and the pilot zipapp's building,
            which harvester's thread may finish after it) until the demo task's submission,
            its tail from the task's end to the summary (the pilots' last idle getJob tries), each pilot's start-up
            until its first getJob and its tail after its last job update (idle tries, exit)
  steady    summary minus once-per-run over the jobs: what each further job costs, the figure to hold against
            the goals (<= 15 ms without files, <= 25 ms with one input and one output) and against bench/testbed.py's
            2,000-job runs (whose summary spreads the same fixed costs over 2,000 jobs)

Nothing is asserted; the load average is printed. Only 127.0.0.1 is contacted.

    python3 bench/files_cpu.py --jobs 300 --repeat 2
    python3 bench/files_cpu.py --files none,small,1mb --baseline main~3   # the same split for another commit too
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
HOOKS = os.path.join(HERE, "files_cpu_hooks")
sys.path.insert(0, HERE)

import baseline  # noqa: E402


def run_once(tree, files, jobs, base):
    out = tempfile.mkdtemp(prefix=f"files-{files}-", dir=base)
    env = dict(os.environ, FILES_CPU_DIR=out,
               PYTHONPATH=os.pathsep.join(p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p))
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", os.path.join(out, "home"), "--port", "0",
            "--jobs", str(jobs), "--job-seconds", "0", "--files", files]
    with open(os.path.join(out, "testbed.out"), "wb") as log:
        code = subprocess.run(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900).returncode
    summary = json.load(open(os.path.join(out, "home", "summary.json")))
    if code or not summary.get("complete"):
        raise SystemExit(f"testbed --files {files} in {tree}: exit {code}, see {out}")
    n = summary["attempts"]
    routes, threads = {}, {}
    fixed = {"testbed start-up": 0.0, "testbed tail": 0.0, "pilots' start-up": 0.0, "pilots' tail": 0.0}
    pilots = 0  # the pilots whose hooks wrote their figures (each one started)
    for path in glob.glob(os.path.join(out, "*.json")):
        data = json.load(open(path))
        side = "testbed" if os.path.basename(path).startswith("testbed-") else "pilots"
        marks = data.get("marks", {})
        if side == "testbed":
            fixed["testbed start-up"] += marks["submitted"] - summary.get("cpu_inputs_s", 0)
            fixed["testbed tail"] += marks["summary"] - marks["task_done"]
            # the pilot zipapp, built once per run on a thread of its own, may still be at it after the submission
            zipapp = data["alive"].get("pilot-zipapp", 0) + data["ended"].get("pilot-zipapp", 0)
            fixed["testbed start-up"] += max(0.0, zipapp - data["threads_at_submission"].get("pilot-zipapp", 0))
        else:
            start = marks.get("first_getjob", marks["exit"])
            fixed["pilots' start-up"] += start
            pilots += 1
            fixed["pilots' tail"] += marks["exit"] - marks.get("last_update", start)
        for key, (count, seconds) in data["routes"].items():
            entry = routes.setdefault(key, [0, 0.0])
            entry[0] += count
            entry[1] += seconds
        for name, seconds in list(data["alive"].items()) + list(data["ended"].items()):
            threads[(side, name)] = threads.get((side, name), 0) + seconds
    shutil.rmtree(os.path.join(out, "home"), ignore_errors=True)
    return {"per_job": summary["cpu_minipanda_per_job_ms"], "inputs_ms": 1000 * summary.get("cpu_inputs_s", 0) / n,
            "fixed_s": fixed, "jobs": n, "pilots": summary["pilots_started"],
            "pilot_start_ms": 1000 * fixed["pilots' start-up"] / max(1, pilots),
            "steady": summary["cpu_minipanda_per_job_ms"] - 1000 * sum(fixed.values()) / n,
            "routes": {k: (c / n, 1000 * s / n, 1000 * s / c) for k, (c, s) in routes.items()},
            "threads": {k: 1000 * s / n for k, s in threads.items()}}


def mean(runs, pick):
    values = [pick(run) for run in runs]
    return sum(values) / len(values)


def report(label, results, kinds):
    print(f"\n== {label}: ms per job (mean of {len(results[kinds[0]])} runs each; last column: "
          f"{kinds[-1]} - {kinds[0]})")
    print(f"{'summary: cpu_minipanda_per_job_ms':58s}" + "".join(
        f"{mean(results[k], lambda r: r['per_job']):>10.2f}" for k in kinds) +
        f"{mean(results[kinds[-1]], lambda r: r['per_job']) - mean(results[kinds[0]], lambda r: r['per_job']):>+10.2f}")
    print(f"{'  of it once per run (s; the rest is paid per job):':58s}" + "".join(
        f"{mean(results[k], lambda r: sum(r['fixed_s'].values())):>9.2f}s" for k in kinds))
    for name in results[kinds[0]][0]["fixed_s"]:
        print(f"    {name + ' (s)':54s}" + "".join(
            f"{mean(results[k], lambda r: r['fixed_s'][name]):>9.2f}s" for k in kinds))
    label = "(one pilot's start-up, ms)"
    print(f"    {label:54s}" + "".join(
        f"{mean(results[k], lambda r: r['pilot_start_ms']):>10.1f}" for k in kinds))
    print(f"{'per job, start-up and tail apart (steady)':58s}" + "".join(
        f"{mean(results[k], lambda r: r['steady']):>10.2f}" for k in kinds) +
        f"{mean(results[kinds[-1]], lambda r: r['steady']) - mean(results[kinds[0]], lambda r: r['steady']):>+10.2f}")
    keys = sorted({key for k in kinds for run in results[k] for key in run["routes"]})

    def route_ms(kind, key):
        return mean(results[kind], lambda r: r["routes"].get(key, (0, 0, 0))[1])

    keys.sort(key=lambda key: -route_ms(kinds[-1], key))
    print("routes (request threads, in the app)           requests/job, ms/request, ms/job per --files")
    for key in keys:
        cells = "".join(f"{route_ms(k, key):>10.2f}" for k in kinds)
        last = results[kinds[-1]]
        per_request = mean(last, lambda r: r["routes"].get(key, (0, 0, 0))[2])
        count = mean(last, lambda r: r["routes"].get(key, (0, 0, 0))[0])
        print(f"  {key[:42]:42s} {count:5.2f} {per_request:6.2f}{cells}{route_ms(kinds[-1], key) - route_ms(kinds[0], key):>+10.2f}")
    names = sorted({name for k in kinds for run in results[k] for name in run["threads"]})

    def thread_ms(kind, name):
        return mean(results[kind], lambda r: r["threads"].get(name, 0))

    names.sort(key=lambda name: -thread_ms(kinds[-1], name))
    print("threads (testbed process = server + harvester + the testbed; pilots summed)")
    for name in names:
        if max(thread_ms(k, name) for k in kinds) < 0.05:
            continue
        cells = "".join(f"{thread_ms(k, name):>10.2f}" for k in kinds)
        print(f"  {name[0] + ': ' + name[1]:56s}{cells}{thread_ms(kinds[-1], name) - thread_ms(kinds[0], name):>+10.2f}")
    print(f"  {'(testbed main thread: of it the inputs writing)':56s}" + "".join(
        f"{mean(results[k], lambda r: r['inputs_ms']):>10.2f}" for k in kinds))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=300,
                   help="jobs per run (default 300; what a run pays once, ~2.5-3.5 s here, is shown apart)")
    p.add_argument("--files", default="none,1mb", help="comma-separated --files values, first is the reference")
    p.add_argument("--repeat", type=int, default=2, help="runs per --files value and tree (default 2)")
    p.add_argument("--baseline", metavar="REV", help="also split that commit's testbed (alternating)")
    args = p.parse_args(argv)
    kinds = args.files.split(",")
    base = tempfile.mkdtemp(prefix="bench-files-cpu-")
    try:
        print(f"bench/files_cpu.py: {args.jobs} no-op jobs per run, --files {args.files}, {args.repeat} runs each; "
              f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

        def every_kind(label, tree, case):  # one run of each --files kind, in the order given
            return {kind: run_once(tree, kind, args.jobs, base) for kind in kinds}

        runs = baseline.run_sides(args.baseline, every_kind, args.repeat, prepare=baseline.compile_tree)
        results = {label: {k: [run[k] for run in runs.of(label)] for k in kinds} for label in runs.labels}
        for label in runs.labels:
            report(label, results[label], kinds)
        print("\nper job, each run (whole run / steady, ms; pilots started):")
        for label in runs.labels:
            for kind in kinds:
                print(f"  {label:24s} {kind:6s} " + "  ".join(
                    f"{r['per_job']:.2f} / {r['steady']:.2f} ({r['pilots']})" for r in results[label][kind]))
        if len(runs.labels) == 2:
            for kind in kinds:
                ours, theirs = (mean(results[label][kind], lambda r: r["steady"]) for label in runs.labels)
                old_ours, old_theirs = (mean(results[label][kind], lambda r: r["per_job"]) for label in runs.labels)
                print(f"--files {kind}: steady {ours:.2f} ms against {theirs:.2f} ({ours / theirs:.2f} x); "
                      f"whole run {old_ours:.2f} against {old_theirs:.2f} ({old_ours / old_theirs:.2f} x)")
                for name, pick in (("testbed start-up, s", lambda r: r["fixed_s"]["testbed start-up"]),
                                   ("one pilot's start-up, ms", lambda r: r["pilot_start_ms"])):
                    ours, theirs = (mean(results[label][kind], pick) for label in runs.labels)
                    print(f"    {name} {ours:.3g} against {theirs:.3g} ({ours / theirs:.2f} x)")
        print(f"\nload at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
