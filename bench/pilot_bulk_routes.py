#!/usr/bin/env python
"""The server's CPU per job on the bulk pilot routes a testbed pilot uses, in process and without HTTP: the WSGI app
of ``minipanda serve`` (access log, bottle, the API plugin, the token check, the parameters, the handler, the
database, the file store) called directly, one thread, SQLite. Per batch of --batch jobs, as a no-file job's pilot
sends them (the bodies are copies of a testbed pilot's): one getJob for the batch (``nJobs``), one
``upload_logs`` with the batch's log tarballs, one ``updateJobsInBulk`` with their final reports. This tree beside a
baseline commit's (each side a child process started in its own tree, alternating), so the figures come from one
run. bench/pilot_routes.py measures the one-job-per-request routes.

Each side submits --jobs jobs once, then takes them batch by batch; the CPU time of the process
(``time.process_time``, not wall time: the machine may be shared) is split by route and divided by the jobs. The
file store is under --dir (default: the system's temporary directory; its file system's cost of a new file is
counted). Nothing is started but the child processes; no network at all.

    python3 bench/pilot_bulk_routes.py --baseline acf7a53                 # 2,000 jobs, batches of 40, 3 rounds
    python3 bench/pilot_bulk_routes.py --jobs 500 --profile /tmp/bulk     # cProfile of this tree: /tmp/bulk.prof
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import pilot_routes  # noqa: E402 - its WSGI call and its side-by-side rounds

QUEUE = pilot_routes.QUEUE
SCOPE = "bench.out"
ROUTES = ("getJob", "upload_logs", "updateJobsInBulk")


def call(app, method, path, token, body, content_type, extra=None):
    """One request through the WSGI app as a testbed pilot sends it (its User-Agent): (status, body bytes)."""
    return pilot_routes.call(app, method, path, token, body, content_type,
                             dict(extra or {}, HTTP_USER_AGENT="minipanda-pilot/0.1.0"))


def final_report(panda_id, lfn, fsize, adler32):
    """A testbed pilot's final report of a no-file job (copied from one)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    xml = {lfn: {"guid": str(uuid.uuid4()), "fsize": fsize, "adler32": adler32,
                 "surl": f"http://127.0.0.1:25080/files/{SCOPE}/{lfn}"}}
    return {"jobId": panda_id, "state": "finished", "attemptNr": 1, "coreCount": 1, "timestamp": stamp,
            "pilotID": "wn-1:4075:1796681126", "node": "wn-1", "siteName": QUEUE, "cpuConsumptionTime": 0,
            "cpuConsumptionUnit": "s", "maxRSS": 0, "maxPSS": 0, "maxVMEM": 0,
            "jobMetrics": "coreCount=1 nProcs=0 samples=0", "transExitCode": 0, "pilotErrorCode": 0,
            "pilotErrorDiag": "", "exeErrorCode": 0, "exeErrorDiag": "", "startTime": stamp, "endTime": stamp,
            "pilotTiming": "0|0|0|0|0|0", "xml": json.dumps(xml)}


def child(args):
    """One side, in the tree it was started in: the CPU ms per job of each route, as JSON on stdout."""
    import logging

    logging.disable(logging.CRITICAL)  # the access log's formatting is measured; its output is not wanted
    from minipanda.core import auth
    from minipanda.server import process

    home = tempfile.mkdtemp(prefix="bench-pilot-bulk-routes-", dir=args.dir)
    try:
        os.makedirs(os.path.join(home, "files"), exist_ok=True)
        app, _ = process.build(home)
        token = auth.create_token(auth.load_secret(home), "bench-pilot", "pilot")[0]
        pilot_routes.submit_log_jobs(args.jobs, SCOPE)
        spent = dict.fromkeys(ROUTES, 0.0)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        form = {"siteName": QUEUE, "computingElement": QUEUE, "prodSourceLabel": "managed", "node": "wn-1",
                "pilotID": "wn-1:4075:1796681126", "batchID": "", "coreCount": 1, "mem": 4000, "diskSpace": 10000,
                "remainingTime": 3299, "nJobs": args.batch}
        get_body = json.dumps(form).encode()
        taken = 0
        while taken < args.jobs:
            t0 = time.process_time()
            status, data = call(app, "POST", "/server/panda/getJob", token, get_body, "application/json")
            t1 = time.process_time()
            batch = json.loads(data).get("jobs") or []
            if status != 200 or not batch:
                raise SystemExit(f"getJob: {status} {data[:300]!r}")
            taken += len(batch)
            logs = [(job["PandaID"], job["logFile"], os.urandom(900 + job["PandaID"] % 200)) for job in batch]
            entries = [{"pandaID": pid, "scope": SCOPE, "lfn": lfn, "fsize": len(body),
                        "adler32": f"{zlib.adler32(body) & 0xffffffff:08x}"} for pid, lfn, body in logs]
            head = json.dumps({"files": entries}).encode()
            body = head + b"".join(log for _, _, log in logs)
            t2 = time.process_time()
            status, data = call(app, "POST", "/api/v1/pilot/upload_logs", token, body, "application/octet-stream",
                                {"HTTP_X_MANIFEST_LENGTH": str(len(head))})
            t3 = time.process_time()
            results = json.loads(data).get("data", {}).get("results") or []
            if status != 200 or [r["status"] for r in results] != [201] * len(logs):
                raise SystemExit(f"upload_logs: {status} {data[:300]!r}")
            finals = [final_report(entry["pandaID"], entry["lfn"], entry["fsize"], entry["adler32"])
                      for entry in entries]
            body = json.dumps({"jobList": finals}).encode()
            t4 = time.process_time()
            status, data = call(app, "POST", "/server/panda/updateJobsInBulk", token, body, "application/json")
            t5 = time.process_time()
            replies = json.loads(data).get("results") or []
            if status != 200 or [r.get("StatusCode") for r in replies] != [0] * len(finals):
                raise SystemExit(f"updateJobsInBulk: {status} {data[:300]!r}")
            for route, seconds in zip(ROUTES, (t1 - t0, t3 - t2, t5 - t4)):
                spent[route] += seconds
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile + ".prof")
        print(json.dumps({route: 1000 * seconds / taken for route, seconds in spent.items()}))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=2000, help="jobs taken per round (default 2,000)")
    p.add_argument("--batch", type=int, default=40, help="jobs per getJob, upload_logs and updateJobsInBulk (40, "
                                                         "what a testbed pilot of no-op jobs sends on average)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating (default 3)")
    p.add_argument("--dir", help="where each round's server home is made (default: the temporary directory)")
    p.add_argument("--baseline", metavar="REV", help="also measure that commit's server, alternating")
    p.add_argument("--profile", metavar="PREFIX", help="cProfile (CPU time) of this tree's rounds: PREFIX.prof")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    print(f"bench/pilot_bulk_routes.py: {args.jobs} jobs per round in batches of {args.batch}, {args.rounds} rounds "
          f"per side, in process, SQLite, homes under {args.dir or tempfile.gettempdir()}; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    pilot_routes.compare(args, "pilot_bulk_routes.py", ROUTES, ["--jobs", str(args.jobs), "--batch", str(args.batch)]
                         + (["--dir", args.dir] if args.dir else []), "all three")
    return 0


if __name__ == "__main__":
    sys.exit(main())
