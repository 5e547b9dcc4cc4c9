"""The route layer's parameter check on updateJobsInBulk, side by side in one run, in process on SQLite.

100 heartbeats of dispatched jobs, applied again and again:
- ``update alone``: core/updates.update_jobs, no parameter check;
- ``route, pydantic always``: handlers.update_jobs_bulk with every entry validated by pydantic (params.validated);
- ``route``: handlers.update_jobs_bulk as served (params.check: pydantic only for entries with a value their kind
  does not keep as sent).

    python bench/params_check.py [--entries 100] [--repeat 40]

Prints the median CPU time of this process for each (CPU, not wall time: the machine is shared) and the ratios to
``update alone``, with the load average.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

from minipanda.api import files, handlers, params as route_params
from minipanda.core import jobs, schema, updates
from minipanda.core.auth import Identity

JOB = {"jobName": "bench", "computingSite": "Q", "prodSourceLabel": "managed", "transformation": "run.sh",
       "jobParameters": "", "coreCount": 1, "minRamCount": 1000, "maxWalltime": 600,
       "Files": [{"type": "log", "lfn": "log.tgz", "scope": "test"}]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100, help="entries per bulk update (default 100)")
    parser.add_argument("--repeat", type=int, default=40, help="bulk updates per variant (default 40)")
    args = parser.parse_args(argv)
    files.request_store = lambda: None  # no request here, no file store: these heartbeats carry no files
    db = schema.open_database("sqlite:///" + os.path.join(tempfile.mkdtemp(prefix="params-check-"), "bench.db"))
    db.connect(reuse_if_open=True)
    admin = Identity("admin", "admin")
    ids = [row[0] for row in jobs.submit_jobs([dict(JOB) for _ in range(args.entries)], "admin")]
    handlers.acquire_jobs({"computingElement": "Q", "nJobs": args.entries, "node": "wn"}, admin)
    entries = [{"jobId": i, "state": "running", "node": "wn", "cpuConsumptionTime": 12, "coreCount": 1,
                "maxRSS": 1000, "jobMetrics": "coreCount=1", "pilotID": "p"} for i in ids]
    fast_check = route_params.check

    def always_pydantic(model, params):
        return route_params.validated(model, params)

    variants = {"update alone": lambda: updates.update_jobs([dict(e) for e in entries]),
                "route, pydantic always": lambda: handlers.update_jobs_bulk([dict(e) for e in entries], admin),
                "route": lambda: handlers.update_jobs_bulk([dict(e) for e in entries], admin)}
    times = {name: [] for name in variants}
    for _ in range(args.repeat):  # interleaved, so the machine's load falls on every variant alike
        for name, run in variants.items():
            route_params.check = always_pydantic if name == "route, pydantic always" else fast_check
            started = time.process_time()
            run()
            times[name].append(time.process_time() - started)
    route_params.check = fast_check
    base = statistics.median(times["update alone"])
    print(f"updateJobsInBulk of {args.entries} heartbeats, median CPU time of {args.repeat}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:24s} {median * 1e3:8.1f} ms  x{median / base:.2f}  "
              f"({(median - base) / args.entries * 1e6:+.0f} us per entry)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
