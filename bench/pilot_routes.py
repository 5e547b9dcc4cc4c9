#!/usr/bin/env python
"""The server's CPU per pilot request, in process and without HTTP: the WSGI app of ``minipanda serve`` (access
log, bottle, the API plugin, the token check, the parameters, the handler, the database) called directly, one
thread, SQLite, for the four requests a no-file job makes: getJob, updateJob starting, the log's PUT into the file
store, updateJob finished. This tree beside a baseline commit's (each side a child process started in its own
tree, alternating), so the figures come from one run.

Each side submits --jobs jobs once, then takes them one by one as a pilot does; the CPU time of the process
(``time.process_time``, not wall time: the machine may be shared) is split by route. Nothing is started but the
child processes; no network at all.

    python3 bench/pilot_routes.py --baseline main~3                 # 2,000 jobs, 3 rounds per side
    python3 bench/pilot_routes.py --jobs 500 --profile /tmp/routes  # cProfile of this tree: /tmp/routes.prof
"""
import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
QUEUE = "BENCH_PQ"
ROUTES = ("getJob", "updateJob starting", "PUT log", "updateJob finished")


def call(app, method, path, token, body=b"", content_type="application/x-www-form-urlencoded", extra=None):
    """One request through the WSGI app: (status, body bytes)."""
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "25080", "REMOTE_ADDR": "127.0.0.1",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
               "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": content_type, "HTTP_HOST": "127.0.0.1:25080", "HTTP_ACCEPT": "application/json",
               "HTTP_AUTHORIZATION": f"Bearer {token}"}
    environ.update(extra or {})
    status = []
    result = app(environ, lambda s, h, exc_info=None: status.append(s))
    data = b"".join(result)
    getattr(result, "close", lambda: None)()
    return int(status[0].split()[0]), data


def submit_log_jobs(n, scope):
    """Submit ``n`` jobs to QUEUE, each with only a log file (``log.<i>.tgz`` in ``scope``), 1,000 at a time."""
    from minipanda.core import jobs, models

    spec = {"jobName": "bench", "computingSite": QUEUE, "prodSourceLabel": "managed", "transformation": "run.sh",
            "jobParameters": "", "coreCount": 1, "minRamCount": 1000, "maxWalltime": 600}
    for start in range(0, n, 1000):
        jobs.submit_jobs([dict(spec, jobName=f"bench.{start + i}", Files=[
            {"type": "log", "lfn": f"log.{start + i}.tgz", "scope": scope}])
            for i in range(min(1000, n - start))], "admin")
    models.database.close()


def child(args):
    """One side, in the tree it was started in: the CPU seconds per route, as JSON on stdout."""
    import logging

    logging.disable(logging.CRITICAL)  # the access log's formatting is measured; its output is not wanted
    from minipanda.core import auth
    from minipanda.server import process

    home = tempfile.mkdtemp(prefix="bench-pilot-routes-")
    try:
        os.makedirs(os.path.join(home, "files"), exist_ok=True)
        app, _ = process.build(home)
        token = auth.create_token(auth.load_secret(home), "bench-pilot", "pilot")[0]
        submit_log_jobs(args.jobs, "bench")
        log_body = os.urandom(2000)
        log_checksum = f"ad:{zlib.adler32(log_body) & 0xffffffff:08x}"
        spent = dict.fromkeys(ROUTES, 0.0)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        form = {"computingElement": QUEUE, "siteName": QUEUE, "prodSourceLabel": "managed", "node": "wn-1",
                "mem": "2000", "diskSpace": "10000", "cpu": "1", "coreCount": "1", "workingGroup": "",
                "pilotID": "pilot-1", "batchID": "1", "getProxyKey": "False", "remainingTime": "36000"}
        get_body = urllib.parse.urlencode(form).encode()
        for n in range(args.jobs):
            t0 = time.process_time()
            status, data = call(app, "POST", "/server/panda/getJob", token, get_body)
            t1 = time.process_time()
            job = json.loads(data)
            if status != 200 or job.get("StatusCode") != 0:
                raise SystemExit(f"getJob: {status} {data[:300]!r}")
            panda_id = job["PandaID"]
            update = {"jobId": panda_id, "state": "starting", "pilotID": "pilot-1", "node": "wn-1",
                      "timestamp": "2026-12-07T05:30:00+00:00", "siteName": QUEUE, "batchID": "1", "coreCount": "1"}
            body = urllib.parse.urlencode(update).encode()
            t2 = time.process_time()
            status, data = call(app, "POST", "/server/panda/updateJob", token, body)
            t3 = time.process_time()
            if status != 200 or json.loads(data).get("StatusCode") != 0:
                raise SystemExit(f"updateJob starting: {status} {data[:300]!r}")
            t4 = time.process_time()
            status, data = call(app, "PUT", f"/files/bench/{job['logFile']}", token, log_body,
                                "application/octet-stream",  # as the pilot sends it: its job and checksum named
                                {"HTTP_X_PANDAID": str(panda_id), "HTTP_X_CHECKSUM": log_checksum})
            t5 = time.process_time()
            if status not in (200, 201):
                raise SystemExit(f"PUT: {status} {data[:300]!r}")
            update.update(state="finished", transExitCode="0", pilotErrorCode="0", cpuConsumptionTime="1",
                          cpuConsumptionUnit="s", maxRSS="1000", nEvents="0")
            body = urllib.parse.urlencode(update).encode()
            t6 = time.process_time()
            status, data = call(app, "POST", "/server/panda/updateJob", token, body)
            t7 = time.process_time()
            if status != 200 or json.loads(data).get("StatusCode") != 0:
                raise SystemExit(f"updateJob finished: {status} {data[:300]!r}")
            for route, seconds in zip(ROUTES, (t1 - t0, t3 - t2, t5 - t4, t7 - t6)):
                spent[route] += seconds
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile + ".prof")
        print(json.dumps({route: 1000 * seconds / args.jobs for route, seconds in spent.items()}))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=2000, help="jobs taken per round (default 2,000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating (default 3)")
    p.add_argument("--baseline", metavar="REV", help="also measure that commit's server, alternating")
    p.add_argument("--profile", metavar="PREFIX", help="cProfile (CPU time) of this tree's rounds: PREFIX.prof")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    print(f"bench/pilot_routes.py: {args.jobs} jobs per round, {args.rounds} rounds per side, in process, SQLite; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    compare(args, "pilot_routes.py", ROUTES, ["--jobs", str(args.jobs)], "all four")
    return 0


def compare(args, script, routes, child_args, all_label):
    """Run ``script``'s child (``--child`` and ``child_args``, in this bench directory) for this tree and for
    ``args.baseline``'s, ``args.rounds`` rounds per side, alternating (``--profile`` for this tree's only); print
    each round's and then the median CPU ms per job of each of ``routes`` side by side, and the load."""
    import baseline

    def one_round(label, where, _):
        argv_child = [sys.executable, os.path.join(HERE, script), "--child"] + child_args
        if args.profile and where == ROOT:
            argv_child += ["--profile", args.profile]
        env = dict(os.environ, PYTHONPATH=where)
        out = subprocess.run(argv_child, cwd=where, env=env, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(f"the child failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {label}: " + ", ".join(f"{r} {figures[r]:.3f}" for r in routes)
              + f" ms; all {sum(figures.values()):.3f} ms per job", flush=True)
        return figures

    runs = baseline.run_sides(args.baseline, one_round, args.rounds)
    results = {label: runs.of(label) for label in runs.labels}
    print("\nmedian of the rounds, server CPU ms per job (process CPU time, in process, no HTTP)")
    print("| side | " + " | ".join(routes) + f" | {all_label} |")
    print("|---|" + "---:|" * (len(routes) + 1))
    medians = {}
    for label, rows in results.items():
        medians[label] = {r: statistics.median(row[r] for row in rows) for r in routes}
        medians[label]["all"] = statistics.median(sum(row.values()) for row in rows)
        print(f"| {label} | " + " | ".join(f"{medians[label][r]:.3f}" for r in routes)
              + f" | {medians[label]['all']:.3f} |")
    if args.baseline:
        new, old = medians["this tree"], medians[f"baseline {args.baseline}"]
        print("this tree / baseline: " + ", ".join(f"{r} {new[r] / old[r]:.2f}" for r in routes)
              + f"; {all_label} {new['all'] / old['all']:.2f}")
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
