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
"""
import argparse
import collections
import os
import re
import sys
import tempfile
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10000, help="jobs (default 10,000)")
    p.add_argument("--bulk", type=int, default=100, help="jobs per getJob and per bulk update (default 100)")
    p.add_argument("--db", help="database URL (default: SQLite in a temporary file); PostgreSQL: emptied first")
    args = p.parse_args(argv)
    from minipanda.api import handlers
    from minipanda.core import jobs, schema
    from minipanda.core.auth import Identity

    url = args.db or "sqlite:///" + os.path.join(tempfile.mkdtemp(prefix="bench-bulk-sql-"), "bench.db")
    database = schema.open_database(url)
    database.connect(reuse_if_open=True)
    if url.startswith("postgres"):
        database.execute_sql("TRUNCATE job, file, status_log CASCADE")
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
    print(f"  process CPU {1000 * cpu / max(1, done):.3f} ms per job, of which inside execute() "
          f"{1000 * inside / max(1, done):.3f} ms (SQLite's work and the binding of parameters)")
    for key, (calls, seconds) in sorted(spent.items(), key=lambda item: -item[1][1])[:8]:
        print(f"  {1000 * seconds / max(1, done):.4f} ms/job  {calls:6d} calls  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
