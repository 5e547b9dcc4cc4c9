#!/usr/bin/env python
"""Where bulk dispatch + finish spends its time in process, statement by statement: --jobs jobs submitted, then
taken --bulk at a time (handlers.acquire_jobs) and each batch finished with one bulk update
(handlers.update_jobs_bulk), on SQLite in a temporary file or the PostgreSQL database given with --db. Prints the
process's CPU time per job beside the part spent inside the database's execute(), split by statement.
Times are CPU time of this process (SQLite runs in it; on PostgreSQL the server's own work is not in them). The
database's own work is the floor no HTTP or Python change moves. No network but the database's; nothing is
started.

    python3 bench/bulk_sql.py                        # 10,000 jobs, 100 per batch, SQLite
    python3 bench/bulk_sql.py --db postgresql://user:pw@127.0.0.1:5432/bench
    python3 bench/bulk_sql.py --baseline 3a2fc5d --rounds 3   # this tree and that commit's, alternating (SQLite)
    python3 bench/bulk_sql.py --baseline HEAD --schema-sql 'DROP INDEX job_modification'   # what one index costs
"""
import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10000, help="jobs (default 10,000)")
    p.add_argument("--bulk", type=int, default=100, help="jobs per getJob and per bulk update (default 100)")
    p.add_argument("--db", help="database URL (default: SQLite in a temporary file); PostgreSQL: emptied first")
    p.add_argument("--baseline", metavar="REV", help="also run with that commit's minipanda, alternating with this "
                   "tree's, --rounds times each, and print the medians side by side")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side with --baseline (default 3)")
    p.add_argument("--schema-sql", action="append", default=[], metavar="SQL", help="a statement run on the "
                   "database once its schema is made, before the jobs (repeatable; an experiment, e.g. "
                   "'DROP INDEX job_modification' to see what one index costs; with --baseline, on this tree's side only: "
                   "--baseline HEAD compares the same code with and without)")
    p.add_argument("--tree", help=argparse.SUPPRESS)  # the minipanda to import (a --baseline checkout)
    args = p.parse_args(argv)
    if args.baseline:
        return compare(args)
    if args.tree:
        sys.path.insert(0, args.tree)
    home = None if args.db else tempfile.mkdtemp(prefix="bench-bulk-sql-")
    try:
        return run(args, args.db or "sqlite:///" + os.path.join(home, "bench.db"))
    finally:
        if home:
            shutil.rmtree(home, ignore_errors=True)


def run(args, url):
    from minipanda.api import files, handlers

    if hasattr(files, "request_store"):  # no request here, no file store: the bench's reports carry no files
        files.request_store = lambda: None
    from minipanda.core import jobs, schema
    from minipanda.core.auth import Identity

    database = schema.open_database(url)
    database.connect(reuse_if_open=True)
    if url.startswith("postgres"):
        database.execute_sql("TRUNCATE job, file, status_log CASCADE")
    for sql in args.schema_sql:
        database.execute_sql(sql)
    queue = f"BULKSQL_{int(time.time()) % 100000}"
    spec = {"jobName": "bench", "computingSite": queue, "prodSourceLabel": "managed", "transformation": "run.sh",
            "jobParameters": "", "coreCount": 1, "minRamCount": 1000, "maxWalltime": 600,
            "Files": [{"type": "log", "lfn": "log.tgz", "scope": "bench"}]}
    admin = Identity("admin", "admin")
    for start in range(0, args.jobs, 5000):
        jobs.submit_jobs([dict(spec, jobName=f"bench.{start + i}") for i in range(min(5000, args.jobs - start))],
                         "admin")
    spent = collections.defaultdict(lambda: [0, 0.0])
    execute = database.execute_sql

    def timed(sql, params=None, *rest, **named):
        started = time.thread_time()  # CPU of this thread: SQLite works in it; PostgreSQL's own work is not seen
        cursor = execute(sql, params, *rest, **named)
        key = re.sub(r"\s+", " ", sql)
        key = re.sub(r"(\?|%s)(, ?(\?|%s))+", "?,..", key)
        key = re.sub(r"\((\?,\.\.)\)(, \(\?,\.\.\))+", r"(\1), ...", key)[:100]
        spent[key][0] += 1
        spent[key][1] += time.thread_time() - started
        return cursor

    database.execute_sql = timed
    commit = database.commit

    def timed_commit():  # the commit writes the transaction's pages to the WAL (and now and then checkpoints)
        started = time.thread_time()
        commit()
        spent["COMMIT"][0] += 1
        spent["COMMIT"][1] += time.thread_time() - started

    database.commit = timed_commit
    done, cpu0 = 0, time.process_time()
    while True:
        definitions, _, _ = handlers.acquire_jobs({"computingElement": queue, "nJobs": args.bulk, "node": "wn",
                                                   "prodSourceLabel": "managed"}, admin)
        if not definitions:
            break
        entries = [{"jobId": job["PandaID"], "state": "finished", "pilotID": "p", "transExitCode": 0,
                    "pilotErrorCode": 0, "node": "wn"} for job in definitions]
        handlers.update_jobs_bulk(entries, admin)
        done += len(definitions)
    cpu = time.process_time() - cpu0
    inside = sum(seconds for _, seconds in spent.values())
    print(f"bench/bulk_sql.py: {done} jobs dispatched and finished in batches of {args.bulk} on "
          f"{url.split(':', 1)[0]}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  process CPU {1000 * cpu / max(1, done):.3f} ms per job, of which inside execute() and commit() "
          f"{1000 * inside / max(1, done):.3f} ms (SQLite's work and the binding of parameters)")
    top = sorted(spent.items(), key=lambda item: -item[1][1])[:9]
    for key, (calls, seconds) in top:
        print(f"  {1000 * seconds / max(1, done):.4f} ms/job  {calls:6d} calls  {key}")
    print("RESULT " + json.dumps({"cpu": 1000 * cpu / max(1, done), "inside": 1000 * inside / max(1, done),
                                  "statements": {key: 1000 * seconds / max(1, done) for key, (_, seconds) in top}}),
          flush=True)
    return 0


def compare(args):
    """This tree and --baseline's minipanda, alternating, each in a process of its own; medians side by side."""
    sys.path.insert(0, HERE)
    import baseline

    def one_side(label, tree, _):
        mine = tree == baseline.ROOT
        argv = [sys.executable, os.path.abspath(__file__), "--jobs", str(args.jobs), "--bulk", str(args.bulk)]
        argv += ["--db", args.db] if args.db else []
        argv += [x for sql in args.schema_sql for x in ("--schema-sql", sql)] if mine else []
        argv += [] if mine else ["--tree", tree]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=None if mine else tree).stdout
        line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
        result = json.loads(line[len("RESULT "):])
        print(f"  {label}: {result['cpu']:.3f} ms per job, {result['inside']:.3f} inside the database's calls; "
              f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        return result

    runs = baseline.run_sides(args.baseline, one_side, args.rounds)
    results = {label: runs.of(label) for label in runs.labels}
    print(f"\nmedians of {args.rounds} rounds, ms of CPU per job dispatched and finished:")
    print("| | this tree | baseline |\n|---|---:|---:|")
    new, old = results["this tree"], results[f"baseline {args.baseline}"]
    for name, key in (("process", "cpu"), ("inside execute() and commit()", "inside")):
        print(f"| {name} | {statistics.median(r[key] for r in new):.3f} | {statistics.median(r[key] for r in old):.3f} |")
    keys = sorted({k for r in new + old for k in r["statements"]},
                  key=lambda k: -statistics.median(r["statements"].get(k, 0) for r in new + old))
    for key in keys[:8]:
        print(f"| {key[:70]} | {statistics.median(r['statements'].get(key, 0) for r in new):.4f} | "
              f"{statistics.median(r['statements'].get(key, 0) for r in old):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
