"""The access log's cost per request: the server's AccessLog middleware around an app that does nothing, with the
queued access log running (QueuedAccessLog, a root handler formatting as `minipanda serve` does into /dev/null).

Prints the CPU the request thread spends per request beyond the app, and the whole process's (request thread and
the listener that formats and writes the lines, drained at the end), per request, for this tree and, with
--baseline, that commit's, alternating, --rounds times each. For instruction counts, which the machine's load
does not move: ``valgrind --tool=cachegrind --cache-sim=no python3 bench/access_log.py --run --requests N`` with
N = 0 and N = 2000, in each tree; the difference over 2000 is the instructions per request.

    python3 bench/access_log.py --baseline main --rounds 5
"""
import argparse
import json
import logging
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import baseline  # noqa: E402


def run(n):
    """One run in this process (cwd: the tree measured)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=open(os.devnull, "w"))
    from minipanda.server import process

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    middleware = process.AccessLog(app)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/server/panda/getJob", "REMOTE_ADDR": "127.0.0.1"}

    def start_response(status, headers, exc_info=None):
        return None

    started = time.thread_time()
    for _ in range(n):
        app(environ, start_response)
    bare = time.thread_time() - started
    queued = process.QueuedAccessLog()
    cpu0, thread0 = time.process_time(), time.thread_time()
    for _ in range(n):
        middleware(environ, start_response)
    thread = time.thread_time() - thread0
    queued.stop()  # the listener writes what is queued
    cpu = time.process_time() - cpu0
    print("RESULT " + json.dumps({"thread_us": 1e6 * (thread - bare) / max(1, n),
                                  "process_us": 1e6 * (cpu - bare) / max(1, n)}), flush=True)


def one_side(label, tree, n):
    result = baseline.child_result([sys.executable, os.path.abspath(__file__), "--run", "--requests", str(n)], tree)
    print(f"  {label}: request thread {result['thread_us']:.1f} us per request, process {result['process_us']:.1f} "
          f"us; load {os.getloadavg()[0]:.2f}", flush=True)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50000, help="requests per run (default 50,000)")
    p.add_argument("--baseline", metavar="REV", help="also run that commit's server module, alternating")
    p.add_argument("--rounds", type=int, default=3, help="runs per side (default 3)")
    p.add_argument("--run", action="store_true", help="one run in this process, in the tree of the cwd")
    args = p.parse_args(argv)
    if args.run:
        return run(args.requests)
    print(f"bench/access_log.py: {args.requests} requests per run; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = baseline.run_sides(args.baseline, lambda label, tree, _: one_side(label, tree, args.requests),
                                 args.rounds)
    for label in results.labels:
        runs = results.of(label)
        print(f"{label} (median of {len(runs)}): request thread {statistics.median(r['thread_us'] for r in runs):.1f}"
              f" us per request, process {statistics.median(r['process_us'] for r in runs):.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
