#!/usr/bin/env python
"""The settle duty's cost: an idle cycle, and a cycle per job it settles, this tree beside a baseline commit's.

Each side runs in a process of its own, in its own tree (``python bench/settle_cycles.py --child`` with that tree
first on the module path), on a fresh SQLite database: a task of --jobs jobs made by the generator, then rounds of
--per-cycle jobs dispatched and finished through the server's own functions (what a pilot's getJob and final
update do) followed by one settle cycle, and then idle cycles (nothing ended since the last one) while the task
still runs. Prints the median CPU ms per job settled and per idle cycle, side by side, with the load average.

    python3 bench/settle_cycles.py --baseline main~6                  # 2,000 jobs, 20 per cycle
    python3 bench/settle_cycles.py --baseline main~6 --per-cycle 100
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def child(jobs, per_cycle, idle_cycles):
    """Runs in the tree being measured; prints one JSON line."""
    directory = tempfile.mkdtemp(prefix="bench-settle-")
    try:
        measure(directory, jobs, per_cycle, idle_cycles)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure(directory, jobs, per_cycle, idle_cycles):
    """The settle cycles' CPU on a task of ``jobs`` jobs in a SQLite database in ``directory``."""
    from minipanda.core import dispatch, queues, schema, updates
    from minipanda.tasks import generator, service, settings, settle
    from minipanda.core.auth import Identity

    schema.open_database(f"sqlite:///{directory}/minipanda.db")
    queues.ensure_queues(["BENCH"])
    config = settings.Settings({"brokerage.bootstrap_queued": 2 * jobs, "generator.max_jobs_per_cycle": 2 * jobs})
    identity = Identity(name="bench", role="admin")
    task_id = service.submit_task({"taskName": "bench", "exec": "true", "nJobs": jobs, "nScouts": 0,
                                   "site": "BENCH"}, identity)
    while generator.run(config):
        pass
    per_job, idle = [], []
    settle.run(config)
    done = 0
    while done + per_cycle < jobs:  # one job stays running: the task is not over, the cycles keep their work
        offer = dispatch.Offer(queue="BENCH", prod_source_label="user", cores=1, memory_mb=4000, n_jobs=per_cycle,
                               node="wn1", pilot_id="p1")
        for job in dispatch.claim_jobs(offer):
            for state in ("running", "finished"):
                updates.update_job({"jobId": str(job["PandaID"]), "state": state, "node": "wn1"})
        started = time.process_time()
        settled = settle.run(config)["settled"]
        per_job.append((time.process_time() - started) * 1000 / max(1, settled))
        done += per_cycle
        if len(idle) < idle_cycles:
            started = time.process_time()
            settle.run(config)
            idle.append((time.process_time() - started) * 1000)
    print(json.dumps({"per_job_ms": statistics.median(per_job), "idle_cycle_ms": statistics.median(idle),
                      "task": task_id}))


def run_side(tree, args):
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--jobs", str(args.jobs),
                           "--per-cycle", str(args.per_cycle)], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", metavar="REV", help="the commit to run beside this tree")
    p.add_argument("--jobs", type=int, default=2000, help="jobs of the task (default 2,000)")
    p.add_argument("--per-cycle", type=int, default=20, help="jobs ended between two settle cycles (default 20)")
    p.add_argument("--rounds", type=int, default=2, help="runs per side, alternating (default 2)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.jobs, args.per_cycle, 50)
    import baseline

    print(f"bench/settle_cycles.py: {args.jobs} jobs, {args.per_cycle} ended per cycle; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    def one_run(label, where, _):
        result = run_side(where, args)
        print(f"  {label}: {result['per_job_ms']:.3f} ms per job settled, idle cycle "
              f"{result['idle_cycle_ms']:.3f} ms", flush=True)
        return result

    runs = baseline.run_sides(args.baseline, one_run, args.rounds, baseline_label=args.baseline)
    results = {label: runs.of(label) for label in runs.labels}
    print("\n| side | CPU ms per job settled | CPU ms per idle cycle |\n|---|---:|---:|")
    for label, rows in results.items():
        print(f"| {label} | {statistics.median(r['per_job_ms'] for r in rows):.3f} | "
              f"{statistics.median(r['idle_cycle_ms'] for r in rows):.3f} |")
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
