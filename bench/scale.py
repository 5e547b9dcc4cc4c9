#!/usr/bin/env python
"""Scale benchmark of the task side: job generation of one big task, and dispatch on a big job table.

1. **Generation**: one task of --jobs jobs (default 100,000; nJobs, no input, one log file each) is submitted
   and the generator duty makes all of them (split, names, brokerage, priorities, bulk inserts), timed from
   submission to the last job row.
2. **Dispatch at two table sizes**: the same single-job claim a pilot's getJob makes (dispatch.claim_jobs, in
   this process: the server's own code path without HTTP) is timed on a job table of --small rows (default
   10,000) and on one of --large rows (default 1,000,000: the generated task plus finished jobs of the past, as a
   server accumulates them). Rounds alternate between the two databases and the median round is reported side by
   side, with the ratio large / small (goal: >= 0.8).

    python bench/scale.py                                  # SQLite files in a temporary directory
    python bench/scale.py --jobs 20000 --large 200000      # a quicker run
    python bench/scale.py --keep DIR                       # keep the databases in DIR (reused when present)

Prints figures and asserts nothing. Needs about 1.5 GB of disk for the default sizes.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minipanda.core import auth, db, dispatch, models, queues, schema, states  # noqa: E402
from minipanda.tasks import generator, jobbuild, service, settings  # noqa: E402

QUEUE = "BENCH"
SETTINGS = {"brokerage.bootstrap_queued": 1e12, "generator.batch": 2000, "generator.max_jobs_per_cycle": 1e9}


def open_db(path):
    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    queues.ensure_queues([QUEUE])
    return database


def fill_history(n, chunk=20000):
    """``n`` finished jobs of the past (one log file each), written in bulk as the server would have left them."""
    now = states.utcnow()
    first = (db.database.execute_sql('SELECT MAX("panda_id") FROM "job"').fetchone()[0] or 0) + 1
    attributes = json.dumps({"processingType": "history"})
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        ids = range(first + start, first + start + count)
        jobs = [(pid, 0, 0, None, f"old.{pid}", "finished", QUEUE, "user", "someone", None, "minipanda",
                 "/bin/sh", "-c true", 1, 3, 900, 900, 1, 1000, 600, 0, 1, now, now, now, attributes, False, True,
                 None) for pid in ids]
        files = [(pid, "log", f"old.{pid}.log.tgz", None, None, "old.log", "old.log", 1000, "ad:00000001",
                  "finished", None) for pid in ids]
        with db.database.atomic():
            jobbuild.insert_jobs(jobs, files)


def generate(n_jobs, name):
    """Submit a task of ``n_jobs`` jobs and run the generator until all exist; returns seconds."""
    config = settings.Settings(SETTINGS)
    started = time.perf_counter()
    task_id = service.submit_task({"taskName": name, "exec": "echo %RNDM:1", "nJobs": n_jobs, "nScouts": 0},
                                auth.Identity("bench", "user"))
    made = 0
    while made < n_jobs:
        step = generator.run(config)
        if not step:
            raise RuntimeError(f"the generator stopped after {made} of {n_jobs} jobs")
        made += step
    elapsed = time.perf_counter() - started
    status = models.Task.get_by_id(task_id).status
    return elapsed, status


def claim_rate(n_claims):
    """Single-job claims per second (the getJob path), and the p50/p99 latency in ms."""
    offer = dispatch.Offer(queue=QUEUE, prod_source_label="user", cores=1, memory_mb=4000, walltime_s=86400,
                           n_jobs=1, node="wn", pilot_id="bench")
    latencies = []
    started = time.perf_counter()
    for _ in range(n_claims):
        t0 = time.perf_counter()
        if not dispatch.claim_jobs(offer):
            raise RuntimeError("no activated jobs left to claim; raise --jobs or lower --claims")
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return n_claims / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def build(path, total, task_jobs, label):
    """A database of ``total`` job rows: a generated task of ``task_jobs`` plus finished history."""
    if os.path.exists(path):
        open_db(path)
        rows = models.Job.select().count()
        print(f"{label}: reusing {path} ({rows:,} job rows)")
        return None
    open_db(path)
    started = time.perf_counter()
    fill_history(total - task_jobs)
    history = time.perf_counter() - started
    seconds, status = generate(task_jobs, f"bench.{label}")
    rows = models.Job.select().count()
    print(f"{label}: {rows:,} job rows ({total - task_jobs:,} finished history in {history:.1f} s); generated a task "
          f"of {task_jobs:,} jobs in {seconds:.1f} s = {task_jobs / seconds:,.0f} jobs/s (task {status})")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs of the generated task (large database)")
    parser.add_argument("--large", type=int, default=1_000_000, help="job rows of the large database")
    parser.add_argument("--small", type=int, default=10_000, help="job rows of the small database")
    parser.add_argument("--claims", type=int, default=2000, help="claims per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", help="directory for the databases (kept; reused on the next run)")
    args = parser.parse_args()
    if args.claims * args.rounds > min(args.jobs, args.small):
        parser.error("--claims x --rounds must not exceed the activated jobs of either database")
    workdir = args.keep or tempfile.mkdtemp(prefix="minipanda-scale-")
    os.makedirs(workdir, exist_ok=True)
    small, large = os.path.join(workdir, "small.db"), os.path.join(workdir, "large.db")
    try:
        print(f"== generation ({workdir})")
        build(small, args.small, args.small, "small")
        db.database.close()
        generation = build(large, args.large, args.jobs, "large")
        db.database.close()
        print(f"\n== dispatch: {args.rounds} rounds x {args.claims} single-job claims, alternating databases")
        results = {"small": [], "large": []}
        for _ in range(args.rounds):
            for label, path in (("small", small), ("large", large)):
                open_db(path)
                results[label].append(claim_rate(args.claims))
                db.database.close()
        print(f"{'':24}{'small':>14}{'large':>14}")
        rows = {"small": args.small, "large": args.large}
        print(f"{'job rows':24}{rows['small']:>14,}{rows['large']:>14,}")
        medians = {}
        for label in results:
            rates = [r[0] for r in results[label]]
            medians[label] = statistics.median(rates)
        p50 = {k: statistics.median(r[1] for r in v) for k, v in results.items()}
        p99 = {k: statistics.median(r[2] for r in v) for k, v in results.items()}
        print(f"{'claims/s (median round)':24}{medians['small']:>14,.0f}{medians['large']:>14,.0f}")
        print(f"{'latency p50 ms':24}{p50['small']:>14.2f}{p50['large']:>14.2f}")
        print(f"{'latency p99 ms':24}{p99['small']:>14.2f}{p99['large']:>14.2f}")
        print(f"\nratio large / small: {medians['large'] / medians['small']:.2f} (goal >= 0.8)")
        if generation:
            print(f"generation of {args.jobs:,} jobs: {generation:.1f} s ({args.jobs / generation:,.0f} jobs/s)")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
