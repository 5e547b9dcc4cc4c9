#!/usr/bin/env python
"""Bulk dispatch + finish in process, piece by piece: what each part costs inside and outside the writer's lock.

--jobs jobs are submitted on SQLite (a temporary file), then taken --bulk at a time (handlers.acquire_jobs, 8
pilots taking turns on one queue, so the fair share is in play) and each batch finished with one bulk update
(handlers.update_jobs_bulk). Two views:

  pieces      (default, one thread): the CPU (time.thread_time) per job of the claim and the update's round
              inside the writer's lock, the COMMITs, the definitions built after the claim, the fair share's count
  --statements (--threads threads, default 8, each its own pilot): every SQL statement's wall time and CPU per job,
              split by statement; inside the lock, wall minus CPU is the time the writer waited with the lock in
              hand (for the GIL or a core) after the statement let go of the GIL

With --baseline REV the same runs for that commit's minipanda too, alternating, --rounds times each. Pieces a tree
does not have are left out. No network; nothing is started but this script's own runs.

    python3 bench/bulk_pieces.py --baseline 6503221 --rounds 3
    python3 bench/bulk_pieces.py --statements
"""
import argparse
import collections
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import baseline  # noqa: E402
import bulk_jobs  # noqa: E402

PIECES = (("dispatch", "_claim_rows", "claim, inside the lock"),
          ("updates", "_apply_round", "update's round, inside the lock"),
          (None, "commit", "COMMITs"),
          ("dispatch", "_definitions", "definitions, after the claim's COMMIT"),
          ("dispatch", "_waiting", "fair share's count (outside the lock)"))


def run(args):
    """One run in this process (started by main with cwd and PYTHONPATH set to the tree it measures)."""
    from minipanda.api import handlers
    from minipanda.core import dispatch, updates
    from minipanda.core.auth import Identity

    queue, admin = "BULK_PIECES", Identity("admin", "admin")
    _, database = bulk_jobs.sqlite_with_jobs(args.jobs, queue, "bench-bulk-pieces-")
    totals, lock = collections.defaultdict(lambda: [0.0, 0.0]), threading.Lock()

    def add(name, wall, cpu):
        with lock:
            totals[name][0] += wall
            totals[name][1] += cpu

    def timed(name, function):
        def wrapper(*args, **named):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **named)
            finally:
                add(name, time.perf_counter() - wall, time.thread_time() - cpu)
        return wrapper

    if args.statements:
        class Cursor:
            def __init__(self, cursor, name):
                self.cursor, self.name = cursor, name

            def fetchall(self):
                return timed(self.name + " (its rows)", self.cursor.fetchall)()

            def __getattr__(self, attribute):
                return getattr(self.cursor, attribute)

            def __iter__(self):
                return iter(self.cursor)

        execute = type(database).execute_sql

        def execute_sql(self, sql, params=None, *rest, **named):
            name = " ".join(sql.split())[:48] + (" [in the lock]" if self.in_transaction() else "")
            return Cursor(timed(name, execute)(self, sql, params, *rest, **named), name)

        type(database).execute_sql = execute_sql
    else:
        modules = {"dispatch": dispatch, "updates": updates}
        for module, attribute, label in PIECES:
            owner = type(database) if module is None else modules[module]
            if hasattr(owner, attribute):
                setattr(owner, attribute, timed(label, getattr(owner, attribute)))
    database.close()

    def pilot(index, turns):
        database.connect(reuse_if_open=True)
        try:
            for turn in turns:
                name = f"wn{turn % 8 if index is None else index}"
                definitions, _, _ = handlers.acquire_jobs({"computingElement": queue, "nJobs": args.bulk,
                                                           "node": name, "pilotID": name,
                                                           "prodSourceLabel": "managed"}, admin)
                if not definitions:
                    return
                handlers.update_jobs_bulk([{"jobId": job["PandaID"], "state": "finished", "pilotID": name,
                                            "transExitCode": 0, "pilotErrorCode": 0, "node": name}
                                           for job in definitions], admin)
        finally:
            database.close()

    cpu0, t0 = time.process_time(), time.perf_counter()
    if args.statements:
        threads = [threading.Thread(target=pilot, args=(i, iter(int, 1))) for i in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        pilot(None, range(10 ** 9))  # 8 pilots taking turns, one thread
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    per_job = {name: (1000 * w / args.jobs, 1000 * c / args.jobs) for name, (w, c) in totals.items()}
    print("RESULT " + json.dumps({"cpu_ms": 1000 * cpu / args.jobs, "rate": args.jobs / wall, "pieces": per_job,
                                  "load": os.getloadavg()[0]}), flush=True)
    return 0


def one_side(label, tree, args):
    argv = [sys.executable, os.path.abspath(__file__), "--run", "--jobs", str(args.jobs), "--bulk", str(args.bulk),
            "--threads", str(args.threads)] + (["--statements"] if args.statements else [])
    result = dict(baseline.child_result(argv, tree), label=label)
    print(f"  {label}: process CPU {result['cpu_ms']:.4f} ms/job, {result['rate']:.0f} jobs/s; load "
          f"{result['load']:.2f}", flush=True)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20000, help="jobs (default 20,000)")
    p.add_argument("--bulk", type=int, default=100, help="jobs per claim and per bulk update (default 100)")
    p.add_argument("--statements", action="store_true", help="time every SQL statement (wall and CPU) instead of "
                   "the pieces, from --threads threads")
    p.add_argument("--threads", type=int, default=8, help="threads with --statements (default 8)")
    p.add_argument("--baseline", metavar="REV", help="also run that commit's minipanda, alternating with this tree's")
    p.add_argument("--rounds", type=int, default=1, help="runs per side (default 1)")
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # one run, in the tree of the cwd
    args = p.parse_args(argv)
    if args.run:
        return run(args)
    print(f"bench/bulk_pieces.py: {args.jobs} jobs, {args.bulk} per claim + one bulk update, SQLite, "
          f"{'every statement, %d threads' % args.threads if args.statements else 'pieces, one thread'}; "
          f"{os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runs = baseline.run_sides(args.baseline, lambda label, tree, _: one_side(label, tree, args), args.rounds)
    results = [run.result for run in runs]
    names = sorted({name for r in results for name in r["pieces"]},
                   key=lambda name: -max(r["pieces"].get(name, (0, 0))[0] for r in results))
    labels = runs.labels
    print("\n| piece (ms per job, medians) | " + " | ".join(f"{label}: wall / CPU" for label in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name in names:
        cells = []
        for label in labels:
            runs = [r["pieces"][name] for r in results if r["label"] == label and name in r["pieces"]]
            cells.append(f"{statistics.median(w for w, _ in runs):.4f} / {statistics.median(c for _, c in runs):.4f}"
                         if runs else "")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for label in labels:
        print(f"{label}: process CPU {statistics.median(r['cpu_ms'] for r in results if r['label'] == label):.4f} "
              "ms/job (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
