#!/usr/bin/env python
"""The CPU a job's log costs on its way to the server's store: one ``PUT /files/<scope>/<lfn>`` per log (the pilot's
``copytools.stage_out``, as for one job alone, pilot3 and older pilots) beside several logs in one
``POST /api/v1/pilot/upload_logs`` (``pilot.bulklogs.stage_out_logs``, as the wrap-up thread sends the logs of the
jobs whose finals go together), over real HTTP on loopback, pilot and server apart, in one run.

Each round's server is ``minipanda serve``'s app (SQLite, token auth) on a free 127.0.0.1 port in a process of its
own (its duties' CPU counted on both sides alike), with ``--logs`` jobs submitted and dispatched to the bench's pilot
token; the pilot's side is a client process of its own that imports this tree's pilot and uploads each job's log (the
size of a no-op job's tarball, ~0.4 kB, or ``--kb``) one way, then the other (rounds alternating the order), reading
its own CPU time and the server process's (``/proc/<pid>/stat``) around each. Every upload is checked: every log
stored, nothing refused. Only the processes this script starts are stopped; nothing but loopback is contacted.

    python3 bench/logs_bulk.py                       # 600 logs, 30 per request, 3 rounds
    python3 bench/logs_bulk.py --logs 1000 --per-request 50 --kb 64
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

from file_transfer import own_cpu, process_cpu  # the same counters, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WAYS = ("one PUT per log", "logs in one request")


def client(args):
    """The pilot's side: {way: [pilot CPU s, server CPU s, wall s]} for every log, as JSON on stdout."""
    from pilot import bulklogs, comm, copytools
    from pilot.jobdata import FileSpec

    server = comm.ServerClient(args.url, args.token_file)
    jobs = json.loads(args.jobs)
    work = tempfile.mkdtemp(prefix="bench-logs-bulk-")
    try:
        path = os.path.join(work, "log.tgz")
        with open(path, "wb") as handle:
            handle.write(os.urandom(int(args.kb * 1024)))

        def specs(way):
            made = []
            for panda_id, lfn in jobs:
                spec = FileSpec("log", lfn, "")
                spec.path, spec.fsize = path, os.path.getsize(path)
                spec.adler32 = copytools.file_digest(path).hexdigest()
                made.append((panda_id, spec, (f"bench.{way}.{args.round}", lfn)))
            return made

        figures = {}
        order = WAYS if args.round % 2 == 0 else WAYS[::-1]
        for way in order:
            items = specs(WAYS.index(way))
            before = own_cpu(), process_cpu(args.server_pid), time.perf_counter()
            if way == WAYS[0]:
                for panda_id, spec, (scope, _) in items:
                    copytools.stage_out(spec, "http", "", 60, url_template=f"/files/{scope}/{{lfn}}", client=server,
                                        panda_id=panda_id)
            else:
                for start in range(0, len(items), args.per_request):
                    outcomes = bulklogs.stage_out_logs(items[start:start + args.per_request], server, 60)
                    if any(outcome is not None for outcome in outcomes):
                        raise SystemExit(f"logs refused: {outcomes}")
            after = own_cpu(), process_cpu(args.server_pid), time.perf_counter()
            figures[way] = [b - a for a, b in zip(before, after)]
        print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def post(url, params, token):
    import urllib.request

    request = urllib.request.Request(url, json.dumps(params).encode(), {
        "Content-Type": "application/json", "Accept": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=300) as reply:
        return json.loads(reply.read())


def round_(args, number):
    """One round: a fresh server home, the jobs dispatched, the client run; its figures."""
    import logging

    logging.disable(logging.CRITICAL)
    sys.path.insert(0, ROOT)
    from minipanda.core import auth, models
    from minipanda.server import bridge, http, process

    home = tempfile.mkdtemp(prefix="bench-logs-bulk-home-")
    server = None
    try:
        app, context = process.build(home)
        token = auth.create_token(auth.load_secret(home), "bench-pilot", "pilot")[0]
        token_file = os.path.join(home, "pilot.token")
        with open(token_file, "w") as handle:
            handle.write(token)
        server = http.HttpServer.bind("127.0.0.1", 0)
        server.body_limit = context.max_body + bridge.BODY_SLACK
        server.start(app, threads=8)
        url = f"http://127.0.0.1:{server.effective_port}"
        admin = auth.create_token(auth.load_secret(home), "bench-admin", "admin")[0]
        jobs = [{"jobName": f"bench.{n}", "computingSite": "BENCH", "prodSourceLabel": "managed",
                 "transformation": "/bin/true", "jobParameters": "",
                 "Files": [{"type": "log", "lfn": f"bench.{n:06d}.log.tgz", "dataset": "bench"}]}
                for n in range(args.logs)]
        post(url + "/api/v1/job/submit", {"jobs": jobs}, admin)
        taken = post(url + "/server/panda/getJob", {"siteName": "BENCH", "computingElement": "BENCH",
                                                    "nJobs": args.logs}, token)
        if len(taken.get("jobs") or []) != args.logs:
            raise SystemExit(f"{len(taken.get('jobs') or [])} of {args.logs} jobs dispatched: {str(taken)[:300]}")
        logs = {row[0]: row[1] for row in models.JobFile.select(models.JobFile.job, models.JobFile.lfn)
                .where(models.JobFile.type == "log").tuples()}
        argv = [sys.executable, os.path.abspath(__file__), "--client", "--url", url, "--token-file", token_file,
                "--server-pid",
                str(os.getpid()), "--jobs", json.dumps(sorted(logs.items())), "--per-request", str(args.per_request),
                "--kb", str(args.kb), "--round", str(number)]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(f"the client failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--logs", type=int, default=600, help="jobs, one log each (600)")
    p.add_argument("--per-request", type=int, default=30, help="logs in one request (30)")
    p.add_argument("--kb", type=float, default=0.4, help="size of each log in kB (0.4: a no-op job's tarball)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each way once in each (3)")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    for name in ("--url", "--token-file", "--jobs"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--serve-round", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        return client(args)
    if args.serve_round is not None:  # each round's server in a process of its own: nothing left of the last one
        print(json.dumps(round_(args, args.serve_round)))
        return None
    print(f"bench/logs_bulk.py: {args.logs} logs of {args.kb:g} kB, {args.per_request} per request, {args.rounds} "
          f"rounds; load before {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = {way: [] for way in WAYS}
    for number in range(args.rounds):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--serve-round", str(number), "--logs",
                              str(args.logs), "--per-request", str(args.per_request), "--kb", str(args.kb)],
                             cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(f"round {number + 1} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        for way in WAYS:
            results[way].append(figures[way])
        print(f"  round {number + 1}: " + "; ".join(
            f"{way}: pilot {1000 * f[0] / args.logs:.3f}, server {1000 * f[1] / args.logs:.3f} ms CPU per log"
            for way, f in figures.items()), flush=True)
    print(f"\nmedian of {args.rounds} rounds, ms per log; load after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| way | pilot CPU | server CPU | both | wall |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for way in WAYS:
        pilot, server_, wall = (statistics.median(f[i] for f in results[way]) * 1000 / args.logs for i in range(3))
        medians[way] = pilot + server_
        print(f"| {way} | {pilot:.3f} | {server_:.3f} | {pilot + server_:.3f} | {wall:.3f} |")
    print(f"\nlogs in one request / one PUT per log, CPU of both sides: {medians[WAYS[1]] / medians[WAYS[0]]:.2f}")


if __name__ == "__main__":
    main()
