"""Bulk dispatch + finish from several threads in one process, no HTTP: how long the SQLite writer lock is held.

--jobs jobs are submitted, then --threads threads, each on its own connection, take --bulk jobs at a time
(handlers.acquire_jobs) and finish each batch with one bulk update (handlers.update_jobs_bulk), as bench/bulk.py's
clients do over HTTP, until the queue is empty. Prints, per job, the seconds the process held its writer lock
(and the CPU its holding threads spent meanwhile: the part of the lock that does not depend on the load)
(bench/writer_lock), the process's CPU and the wall-clock rate, with the number of write transactions and the load.
Without the HTTP server's threads and parsing, what changes in the transactions (which statements, how they are
grouped) shows with less noise than in bench/bulk.py. With --baseline, that commit's minipanda runs too, the two
alternating, --rounds times each, and the medians are printed side by side.

    python3 bench/bulk_threads.py --jobs 20000 --baseline main --rounds 3
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import baseline  # noqa: E402
import bulk_jobs  # noqa: E402


def run(args):
    """One run in this process (started by main with cwd and PYTHONPATH set to the tree it measures)."""
    from minipanda.api import handlers
    from minipanda.core.auth import Identity

    queue, admin = "BULK_THREADS", Identity("admin", "admin")
    _, database = bulk_jobs.sqlite_with_jobs(args.jobs, queue, "bench-bulk-threads-")
    database.close()
    lock_file = os.environ["MINIPANDA_BENCH_WRITER_LOCK"]

    def held():  # bench/writer_lock rewrites the file every 0.2 s
        time.sleep(0.5)
        with open(f"{lock_file}.{os.getpid()}") as handle:  # bench/writer_lock: one file per process
            transactions, seconds, cpu = handle.read().split()
        return int(transactions), float(seconds), float(cpu)

    done, errors = [], []

    def worker(index):
        database.connect(reuse_if_open=True)
        try:
            while True:
                definitions, _, _ = handlers.acquire_jobs({"computingElement": queue, "nJobs": args.bulk,
                                                           "node": f"wn{index}", "prodSourceLabel": "managed"}, admin)
                if not definitions:
                    break
                handlers.update_jobs_bulk([{"jobId": job["PandaID"], "state": "finished", "pilotID": f"p{index}",
                                            "transExitCode": 0, "pilotErrorCode": 0, "node": f"wn{index}"}
                                           for job in definitions], admin)
                done.append(len(definitions))
        except Exception as exc:  # noqa: BLE001 - reported, and the run counts as failed
            errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
        finally:
            database.close()

    n0, s0, c0 = held()
    cpu0, t0 = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n1, s1, c1 = held()
    total = sum(done)
    print("RESULT " + json.dumps({"jobs": total, "rate": total / wall, "cpu_ms": 1000 * cpu / max(1, total),
                                  "lock_ms": 1000 * (s1 - s0) / max(1, total), "transactions": n1 - n0,
                                  "lock_cpu_ms": 1000 * (c1 - c0) / max(1, total),
                                  "load": os.getloadavg()[0], "errors": errors}), flush=True)
    return 1 if errors or total != args.jobs else 0


def one_side(label, tree, args):
    lock_dir = tempfile.mkdtemp(prefix="bench-lock-")
    env = dict(os.environ, MINIPANDA_BENCH_WRITER_LOCK=os.path.join(lock_dir, "held"),
               PYTHONPATH=os.pathsep.join([tree, os.path.join(HERE, "writer_lock")]))
    argv = [sys.executable, os.path.abspath(__file__), "--run", "--jobs", str(args.jobs), "--threads",
            str(args.threads), "--bulk", str(args.bulk)]
    try:
        result = dict(baseline.child_result(argv, tree, env), label=label)
    finally:
        shutil.rmtree(lock_dir, ignore_errors=True)
    print(f"  {label}: {result['rate']:.0f} jobs/s, writer lock {result['lock_ms']:.4f} ms/job (the holder's CPU "
          f"{result['lock_cpu_ms']:.4f}), CPU "
          f"{result['cpu_ms']:.4f} ms/job, {result['transactions']} write transactions; load {result['load']:.2f}",
          flush=True)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20000, help="jobs (default 20,000)")
    p.add_argument("--threads", type=int, default=8, help="claiming threads (default 8)")
    p.add_argument("--bulk", type=int, default=100, help="jobs per claim and per bulk update (default 100)")
    p.add_argument("--baseline", metavar="REV", help="also run that commit's minipanda, alternating with this tree's")
    p.add_argument("--rounds", type=int, default=3, help="runs per side (default 3)")
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # one run, in the tree of the cwd
    args = p.parse_args(argv)
    if args.run:
        return run(args)
    print(f"bench/bulk_threads.py: {args.jobs} jobs, {args.threads} threads x {args.bulk} per claim + one bulk "
          f"update, SQLite; {os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runs = baseline.run_sides(args.baseline, lambda label, tree, _: one_side(label, tree, args), args.rounds)
    by_side = {label: runs.of(label) for label in runs.labels}
    for label, runs in by_side.items():
        print(f"{label} (median of {len(runs)}): {statistics.median(r['rate'] for r in runs):.0f} jobs/s, writer "
              f"lock {statistics.median(r['lock_ms'] for r in runs):.4f} ms/job (the holder's CPU "
              f"{statistics.median(r['lock_cpu_ms'] for r in runs):.4f}), CPU "
              f"{statistics.median(r['cpu_ms'] for r in runs):.4f} ms/job")
    if args.baseline:
        new, old = by_side["this tree"], by_side[f"baseline {args.baseline}"]
        for key, name in (("rate", "jobs/s"), ("lock_ms", "writer lock per job"),
                          ("lock_cpu_ms", "the lock holder's CPU per job"), ("cpu_ms", "CPU per job")):
            ratio = statistics.median(r[key] for r in new) / statistics.median(r[key] for r in old)
            print(f"  this tree / baseline, {name}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
