#!/usr/bin/env python
"""Bulk submit in process, piece by piece: what each part of a 5,000-job job/submit costs, this tree beside another.

--jobs jobs (bench/dispatch.py's spec, as bench/bulk.py's client sends it) go through what the route does with a
request's body, one thread, on SQLite (a temporary file), --chunk per call: the body's JSON parsed and its depth
checked (wire.parse_body), every spec checked, the rows of the jobs and their files made and inserted, the status
log, the COMMIT, the reply's JSON; and the garbage collections that ran meanwhile (inside those pieces: they run
wherever an allocation sets them off). CPU by time.thread_time, wall by time.perf_counter, per job. Objects that
exist before the first call are frozen (gc.freeze) on both sides, as a server process does since round 9, so that
the collections reflect each tree's own allocations; what the freeze buys the server is bench/bulk.py's to show.

--http: the same calls over HTTP to a ``minipanda serve`` of each tree (SQLite, 127.0.0.1 only): the client's
phases (its specs built, encoded, the call until the reply's headers, the reply read and decoded: wall and the
client's CPU) and the server's (bench/submit_hooks on its PYTHONPATH: the body received on the loop thread, the app's
runs on a request thread, the body parsed, submit_jobs, the reply's JSON, the collections), per call. The app's wall
beyond its CPU is its request thread waiting: for a core, the GIL, the disk.

With --baseline REV the same runs for that commit's minipanda too, alternating, --rounds times each. Pieces a tree
does not have are left out. Nothing is started but this script's own runs (and, with --http, the servers it stops).

    python3 bench/submit_pieces.py --baseline 6e7d087 --rounds 3
    python3 bench/submit_pieces.py --http --baseline 6e7d087 --rounds 3
    python3 bench/submit_pieces.py --positional --baseline 6e7d087 --rounds 3   # as panda-client sends them
"""
import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import baseline  # noqa: E402

BODY, CHECK, INSERTS, ROWS, LOG, COMMIT, REPLY, GC = (
    "the body: JSON parsed, depth checked", "every spec checked", "the INSERTs of the jobs and files (values bound)",
    "the rows made (around the INSERTs)", "the status log", "COMMIT", "the reply's JSON",
    "of all these: garbage collection")


def job_spec(queue, index):  # bench/dispatch.py's, not imported from there: it puts its own tree first on the path
    return {"jobName": f"bench.{queue}.{index}", "computingSite": queue, "prodSourceLabel": "managed",
            "transformation": "http://127.0.0.1/trf/runme.sh", "jobParameters": "--x 1", "coreCount": 1,
            "minRamCount": 1000, "maxWalltime": 600,
            "Files": [{"type": "log", "lfn": f"log.{index}.tgz", "scope": "bench"}]}


def positional(spec):
    """panda-client 2.2's form of a spec: its JobSpec values in order ("NULL" where unset), then its files'."""
    from minipanda.core import jobspec

    def file_values(entry):
        return [entry.get(name, "NULL") for name in jobspec.FILESPEC_ATTRIBUTES] + [None]

    return [spec.get(name, "NULL") for name in jobspec.JOBSPEC_ATTRIBUTES] + [list(map(file_values, spec["Files"]))]


def run(args):
    """One run in this process (started by main with cwd and PYTHONPATH set to the tree it measures)."""
    from minipanda.api import wire
    from minipanda.core import bulk, jobs, jobspec, schema, states

    home = tempfile.mkdtemp(prefix="bench-submit-pieces-")
    database = schema.open_database("sqlite:///" + os.path.join(home, "minipanda.db"))
    database.connect(reuse_if_open=True)
    totals = {}

    def add(name, wall, cpu):
        total = totals.setdefault(name, [0.0, 0.0])
        total[0] += wall
        total[1] += cpu

    def timed(name, function):
        def wrapper(*args, **named):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **named)
            finally:
                add(name, time.perf_counter() - wall, time.thread_time() - cpu)
        return wrapper

    try:
        from minipanda.core import jobcolumns
        jobcolumns.parse = timed(CHECK, jobcolumns.parse)
    except ImportError:  # before round 9: spec by spec
        jobspec.parse_submitted = timed(CHECK, jobspec.parse_submitted)
        jobspec.positional_to_dict = timed(CHECK, jobspec.positional_to_dict)
    for name in ("insert_rows", "insert_columns"):  # whichever the tree's submission binds its rows with
        if hasattr(bulk, name):
            setattr(bulk, name, timed(INSERTS, getattr(bulk, name)))
    jobs._insert_jobs = timed("_insert_jobs", jobs._insert_jobs)
    states.log_transitions = timed(LOG, states.log_transitions)
    type(database).commit = timed(COMMIT, type(database).commit)
    form = positional if args.positional else (lambda spec: spec)
    bodies = [json.dumps({"jobs": [form(job_spec("Q", i)) for i in range(start, min(args.jobs, start + args.chunk))]})
              .encode() for start in range(0, args.jobs, args.chunk)]
    started = {}

    def collection(phase, info):
        if phase == "start":
            started["wall"], started["cpu"] = time.perf_counter(), time.thread_time()
        else:
            add(GC, time.perf_counter() - started["wall"], time.thread_time() - started["cpu"])

    gc.collect()
    gc.freeze()
    gc.callbacks.append(collection)
    cpu0, t0 = time.thread_time(), time.perf_counter()
    for body in bodies:
        specs = timed(BODY, wire.parse_body)(body, "application/json")["jobs"]
        timed(REPLY, wire.envelope)(jobs.submit_jobs(specs, "admin"))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    gc.callbacks.remove(collection)
    inside = totals.pop("_insert_jobs")
    totals[ROWS] = [inside[i] - totals[INSERTS][i] - totals[LOG][i] for i in (0, 1)]
    per_job = {name: (1000 * w / args.jobs, 1000 * c / args.jobs) for name, (w, c) in totals.items()}
    print("RESULT " + json.dumps({"cpu_ms": 1000 * cpu / args.jobs, "rate": args.jobs / wall, "pieces": per_job,
                                  "load": os.getloadavg()[0]}), flush=True)
    database.close()
    import shutil
    shutil.rmtree(home, ignore_errors=True)
    return 0


def over_http(label, tree, args):
    """One run against a server of ``tree``: {phase: (calls, wall ms, CPU ms) per call}."""
    import http.client
    import shutil
    import dispatch  # puts this tree first on the module path: only its Server class is used here

    home = tempfile.mkdtemp(prefix="bench-submit-http-")
    totals = os.path.join(home, "hooks")
    env = dict(os.environ, MINIPANDA_BENCH_SUBMIT_HOOKS=totals, PYTHONPATH=os.path.join(HERE, "submit_hooks"))
    server = dispatch.Server(home, "sqlite:///" + os.path.join(home, "minipanda.db"), 8, cwd=tree, env=env)

    def server_totals():
        time.sleep(0.5)  # the hooks write every 0.2 s
        out = {}
        for name in os.listdir(home):
            if name.startswith("hooks.") and not name.endswith(".part"):
                with open(os.path.join(home, name)) as handle:
                    for line in handle:
                        phase, count, wall, cpu = line.rstrip("\n").split("\t")
                        out[phase] = (int(count), float(wall), float(cpu))
        return out

    client = {}

    def phase(name, started):
        wall, cpu = time.perf_counter() - started[0], time.thread_time() - started[1]
        total = client.setdefault(name, [0, 0.0, 0.0])
        total[0] += 1
        total[1] += wall
        total[2] += cpu
        return time.perf_counter(), time.thread_time()

    calls = range(0, args.jobs, args.chunk)
    try:
        conn = http.client.HTTPConnection(dispatch.HOST, server.port, timeout=600)
        headers = {"Accept": "application/json", "Authorization": f"Bearer {server.token}",
                   "Content-Type": "application/json"}
        before = server_totals()
        for start in calls:
            now = time.perf_counter(), time.thread_time()
            specs = [job_spec("Q", i) for i in range(start, min(args.jobs, start + args.chunk))]
            now = phase("client: specs built", now)
            body = json.dumps({"jobs": specs})
            now = phase("client: specs encoded (json.dumps)", now)
            conn.request("POST", "/api/v1/job/submit", body=body, headers=headers)
            response = conn.getresponse()
            now = phase("client: the call, until the reply's headers", now)
            data = response.read()
            reply = json.loads(data)
            phase("client: the reply read and decoded", now)
            if response.status != 200 or not reply.get("success"):
                raise SystemExit(f"submit failed: HTTP {response.status}: {reply.get('message')}")
        conn.close()
        after = server_totals()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    n = len(calls)
    pieces = {name: (count / n, 1000 * wall / n, 1000 * cpu / n) for name, (count, wall, cpu) in client.items()}
    for name, (count, wall, cpu) in after.items():
        old = before.get(name, (0, 0.0, 0.0))
        pieces["server: " + name] = ((count - old[0]) / n, 1000 * (wall - old[1]) / n, 1000 * (cpu - old[2]) / n)
    return {"pieces": pieces, "rate": args.jobs / sum(client[name][1] for name in client),
            "load": os.getloadavg()[0], "label": label}


def one_side(label, tree, args):
    argv = [sys.executable, os.path.abspath(__file__), "--run", "--jobs", str(args.jobs), "--chunk", str(args.chunk)] \
        + (["--positional"] if args.positional else [])
    result = dict(baseline.child_result(argv, tree), label=label)
    print(f"  {label}: thread CPU {result['cpu_ms']:.4f} ms/job, {result['rate']:.0f} jobs/s; load "
          f"{result['load']:.2f}", flush=True)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=40000, help="jobs (default 40,000)")
    p.add_argument("--chunk", type=int, default=5000, help="jobs per submission (default 5,000, the server's limit)")
    p.add_argument("--baseline", metavar="REV", help="also run that commit's minipanda, alternating with this tree's")
    p.add_argument("--rounds", type=int, default=1, help="runs per side (default 1)")
    p.add_argument("--http", action="store_true", help="over HTTP to a server of each tree (see above)")
    p.add_argument("--positional", action="store_true", help="in process: the specs in panda-client's positional "
                   "form (its JobSpec values in order, then its files'), as panda-client's submitJobs sends them")
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # one run, in the tree of the cwd
    args = p.parse_args(argv)
    if args.run:
        return run(args)
    print(f"bench/submit_pieces.py: {args.jobs} jobs, {args.chunk} per submission, SQLite, one thread; "
          f"{os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.http:
        return http_table(args)
    runs = baseline.run_sides(args.baseline, lambda label, tree, _: one_side(label, tree, args), args.rounds)
    results, labels = [run.result for run in runs], runs.labels
    print("\n| piece (ms per job, medians) | " + " | ".join(f"{label}: wall / CPU" for label in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name in (BODY, CHECK, ROWS, INSERTS, LOG, COMMIT, REPLY, GC):
        cells = []
        for label in labels:
            pieces = [r["pieces"][name] for r in results if r["label"] == label and name in r["pieces"]]
            cells.append(f"{statistics.median(w for w, _ in pieces):.4f} / "
                         f"{statistics.median(c for _, c in pieces):.4f}" if pieces else "")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for label in labels:
        mine = [r for r in results if r["label"] == label]
        loads = ", ".join("%.1f" % r["load"] for r in mine)
        print(f"{label}: the whole, thread CPU {statistics.median(r['cpu_ms'] for r in mine):.4f} ms/job, "
              f"{statistics.median(r['rate'] for r in mine):.0f} jobs/s (medians; loads {loads})")
    return 0


def http_table(args):
    def side(label, tree, _):
        result = over_http(label, tree, args)
        print(f"  {label}: {result['rate']:.0f} jobs/s; load {result['load']:.2f}", flush=True)
        return result

    runs = baseline.run_sides(args.baseline, side, args.rounds)
    results, labels = [run.result for run in runs], runs.labels
    names = list(dict.fromkeys(name for r in results for name in r["pieces"]))
    print("\n| per call of %d jobs (medians), ms | " % args.chunk
          + " | ".join(f"{label}: wall / CPU" for label in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name in names:
        cells = []
        for label in labels:
            pieces = [r["pieces"][name] for r in results if r["label"] == label and name in r["pieces"]]
            cells.append(f"{statistics.median(w for _, w, _ in pieces):.1f} / "
                         f"{statistics.median(c for _, _, c in pieces):.1f}" if pieces else "")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for label in labels:
        mine = [r for r in results if r["label"] == label]
        loads = ", ".join("%.1f" % r["load"] for r in mine)
        print(f"{label}: {statistics.median(r['rate'] for r in mine):.0f} jobs/s (median; loads {loads})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
