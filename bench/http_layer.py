#!/usr/bin/env python
"""The HTTP layer's own CPU per request: minipanda.server.http (granian, the body read on the loop, the app on a
request thread) in front of a WSGI app that does nothing, this tree's beside a baseline commit's, alternating.

Each round is a child process of its own that starts the server on a free 127.0.0.1 port, sends --requests POSTs of
a pilot-sized form body over --clients keep-alive connections (http.client), and reads the CPU time of every thread
of that process from /proc: the loop thread (``minipanda-http``), the request threads, granian's Rust I/O threads
and the thread granian schedules requests from, each per request (the clients' threads are not counted). Only the
server this script started is stopped; nothing but loopback is contacted.

    python3 bench/http_layer.py --baseline main~3           # 3 rounds each, alternating, one table
    python3 bench/http_layer.py --requests 20000 --rounds 5
"""
import argparse
import collections
import http.client
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time

BODY = "state=finished&jobId=4000123&pilotID=pilot-1&transExitCode=0&pilotErrorCode=0&node=wn-1&" \
       "cpuConsumptionTime=12&coreCount=1&timestamp=2026-12-07T05%3A30%3A00"


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"StatusCode": 0, "bytes": %d}' % len(body)]


def thread_cpu():
    """{native thread id: (name as the kernel knows it, user + system ticks)} of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        out[int(tid)] = (text[text.index("(") + 1:text.rindex(")")], int(fields[11]) + int(fields[12]))
    return out


def one_round(module, requests, clients):
    server = module.HttpServer.bind("127.0.0.1", 0)
    server.start(app, threads=8)
    per_client = requests // clients

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=60)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            for _ in range(per_client):
                conn.request("POST", "/server/panda/updateJob", body=BODY, headers=headers)
                conn.getresponse().read()
        finally:
            conn.close()

    try:
        before = thread_cpu()
        threads = [threading.Thread(target=client, name=f"bench-client-{n}") for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        after = thread_cpu()
        names = {t.native_id: t.name for t in threading.enumerate()}
        names.update({t.native_id: t.name for t in threads})
    finally:
        server.stop()
    ticks = collections.Counter()
    for tid, (comm, used) in after.items():
        name = names.get(tid, comm)
        group = ("clients" if name.startswith("bench-client") else "request threads"
                 if name.startswith("minipanda-request") else "granian (Rust I/O)" if comm.startswith("tokio")
                 else "loop (minipanda-http)" if name == "minipanda-http" else "granian (scheduling)"
                 if name == comm else "other")
        ticks[group] += used - before.get(tid, (comm, 0))[1]
    done = per_client * clients
    micro = {group: 1e6 * value / os.sysconf("SC_CLK_TCK") / done for group, value in ticks.items()}
    micro["server, all"] = sum(v for k, v in micro.items() if k not in ("clients", "other"))
    return done / wall, micro


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", metavar="REV", help="also measure that commit's minipanda/server/http.py (and the "
                   "modules it imports from its tree: bridge.py, requestthreads.py)")
    p.add_argument("--requests", type=int, default=6000, help="requests per round (default 6,000)")
    p.add_argument("--clients", type=int, default=6, help="keep-alive client connections (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating (default 3)")
    p.add_argument("--one", metavar="HTTP_PY", help=argparse.SUPPRESS)  # a child: one round with that module
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_round(load(args.one, "http_under_test"), args.requests, args.clients)))
        return 0
    print(f"bench/http_layer.py: {args.requests} POSTs per round, {args.clients} clients, {args.rounds} rounds per "
          f"side; {os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    import baseline

    def one_side(label, tree, _):
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--one",
                                os.path.join(tree, "minipanda", "server", "http.py"), "--requests",
                                str(args.requests), "--clients", str(args.clients)], capture_output=True,
                               text=True, timeout=900, check=True, env=dict(
                                   os.environ, PYTHONPATH=os.pathsep.join(
                                       [tree] + [path for path in [os.environ.get("PYTHONPATH")] if path])))
        rate, micro = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"  {label}: {rate:.0f} requests/s, server {micro['server, all']:.0f} us CPU per request", flush=True)
        return rate, micro

    runs = baseline.run_sides(args.baseline, one_side, args.rounds)
    results = {label: runs.of(label) for label in runs.labels}
    groups = ["loop (minipanda-http)", "request threads", "granian (Rust I/O)", "granian (scheduling)",
              "server, all"]
    print("\nmedian of the rounds, CPU microseconds per request (requests/s is wall-clock, load-dependent)")
    print("| side | requests/s | " + " | ".join(groups) + " |")
    print("|---|---:|" + "---:|" * len(groups))
    medians = {}
    for label, rows in results.items():
        medians[label] = {g: statistics.median(m.get(g, 0.0) for _, m in rows) for g in groups}
        print(f"| {label} | {statistics.median(r for r, _ in rows):.0f} | "
              + " | ".join(f"{medians[label][g]:.0f}" for g in groups) + " |")
    if args.baseline:
        new, old = medians["this tree"], medians[f"baseline {args.baseline}"]
        print(f"this tree / baseline, server CPU per request: {new['server, all'] / old['server, all']:.2f}; "
              f"loop thread: {new['loop (minipanda-http)'] / old['loop (minipanda-http)']:.2f}")
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
