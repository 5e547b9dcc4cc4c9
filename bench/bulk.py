#!/usr/bin/env python
"""The server's bulk paths at scale: many jobs submitted over HTTP, then taken and finished in batches.

  submit          --jobs jobs through job/submit, --chunk (5,000, the server's limit) per call, one client
  dispatch+finish --clients clients, each taking --bulk jobs per getJob (nJobs) and reporting the whole batch
                  finished with ONE updateJobsInBulk, until the queue is empty

Both rates are printed overall and per tenth of the run (flat means the cost per job does not grow with the
table), with the server's CPU per job and the load average, once per database URL given (--db, repeatable; the
default is SQLite in a temporary home) and, with --baseline REV, for that commit's server beside this one's in
the same run (the order alternates per database). Correctness: every job dispatched exactly once and finished.

Only 127.0.0.1 is contacted; the servers this script starts are the only processes it stops.

    python3 bench/bulk.py                                   # 200,000 jobs on SQLite (the issue's scenario)
    python3 bench/bulk.py --jobs 20000 --baseline HEAD~5    # before/after, side by side
    python3 bench/bulk.py --db sqlite --db postgresql://user:pw@127.0.0.1:5432/bench
    python3 bench/bulk.py --jobs 20000 --writer-lock        # SQLite: the writer lock's share of the wall time

A PostgreSQL database given with --db is EMPTIED (its public schema dropped) before each run: give one of its own.
"""
import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # run as a script it is first already; imported (by tests) it must not hide harvester/
    sys.path.insert(0, HERE)

import baseline  # noqa: E402
import dispatch  # noqa: E402
from dispatch import NO_JOBS, Connection, Server, job_spec, load_average, process_cpu  # noqa: E402

try:  # the server's own dependency; the clients decode ~100 job definitions per getJob
    import orjson
    _loads = orjson.loads
except ImportError:  # pragma: no cover - a checkout without it installed
    _loads = json.loads

# What urllib.parse.quote_plus leaves as it is, and the characters JSON text of ASCII data is made of besides
# those: such text is percent-encoded by one C replace per character instead of quote_plus's Python call per byte
# (1.3 ms of client CPU per 100-entry jobList, as much as a tenth of the server's work for the batch).
_PLAIN_JSON = re.compile(r'[A-Za-z0-9_.~ \-{}\[\]":,]*\Z')
_ESCAPES = tuple((char, "%%%02X" % ord(char)) for char in '{}[]":,')


def quote_plus(text):
    """``urllib.parse.quote_plus(text)``, the same bytes, faster for JSON text."""
    if not _PLAIN_JSON.match(text):
        return urllib.parse.quote_plus(text)
    for char, escaped in _ESCAPES:
        text = text.replace(char, escaped)
    return text.replace(" ", "+")


def form(fields):
    """``urllib.parse.urlencode(fields)`` (str keys and values), the same bytes."""
    return "&".join(f"{quote_plus(key)}={quote_plus(value)}" for key, value in fields.items())


class LeanConnection(Connection):
    """The dispatch bench's keep-alive connection sending the same request bytes and reading the same replies, with
    less client CPU: on a 2-core machine what the 8 clients spend is taken from the server under test."""

    def post(self, path, fields):
        for attempt in (1, 2):  # one reconnect if the server closed an idle keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection(dispatch.HOST, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=form(fields), headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
                return _loads(data)
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise


def submit(server, queue, n_jobs, chunk, marks):
    """Submit in chunks; return (ids, [(jobs so far, seconds so far)])."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    headers = {"Accept": "application/json", "Authorization": f"Bearer {server.token}",
               "Content-Type": "application/json"}
    ids, progress, t0 = [], [], time.perf_counter()
    try:
        for start in range(0, n_jobs, chunk):
            specs = [job_spec(queue, i) for i in range(start, min(n_jobs, start + chunk))]
            body = json.dumps({"jobs": specs})
            conn.request("POST", "/api/v1/job/submit", body=body, headers=headers)
            response = conn.getresponse()
            reply = json.loads(response.read())
            if response.status != 200 or not reply.get("success"):
                raise RuntimeError(f"submit failed: HTTP {response.status}: {reply.get('message')}")
            ids.extend(row[0] for row in reply["data"])
            if len(ids) >= marks[len(progress)] if len(progress) < len(marks) else False:
                progress.append((len(ids), time.perf_counter() - t0))
    finally:
        conn.close()
    return ids, progress


def drain(server, queue, n_clients, bulk, n_jobs, marks, time_limit):
    """Clients take ``bulk`` jobs per getJob and finish each batch with one updateJobsInBulk."""
    lock, got, errors, progress = threading.Lock(), [], [], []
    deadline = time.monotonic() + time_limit
    gate = threading.Barrier(n_clients + 1)
    t0 = [0.0]

    def client(index):
        conn = LeanConnection(server.port, server.token, timeout=600)
        # each client is one pilot asking again and again, as a pilot does (the server's fair share of a queue's
        # last jobs counts the pilots that asked recently: a new pilotID per call would be a new pilot each time)
        fields = {"computingElement": queue, "prodSourceLabel": "managed", "mem": "2000", "nJobs": str(bulk),
                  "node": f"bench-node-{index}", "pilotID": f"pilot-{index}"}
        try:
            gate.wait()
            for call in range(n_jobs // bulk + 50):
                if time.monotonic() > deadline:
                    errors.append(f"client {index}: time limit reached")
                    break
                reply = conn.post("/server/panda/getJob", fields)
                if reply.get("StatusCode") == NO_JOBS:
                    break
                if reply.get("StatusCode") != 0:
                    errors.append(f"client {index}: getJob {reply.get('StatusCode')}: {reply.get('errorDialog')}")
                    break
                ids = [j["PandaID"] for j in reply["jobs"]]
                entries = [{"jobId": pid, "state": "finished", "pilotID": fields["pilotID"], "transExitCode": 0,
                            "pilotErrorCode": 0, "node": fields["node"]} for pid in ids]
                answer = conn.post("/server/panda/updateJobsInBulk", {"jobList": json.dumps(entries)})
                bad = [r for r in answer.get("results", []) if r.get("StatusCode") != 0]
                if answer.get("StatusCode") != 0 or len(answer.get("results", [])) != len(ids) or bad:
                    errors.append(f"client {index}: updateJobsInBulk: {str(bad or answer)[:300]}")
                with lock:
                    got.extend(ids)
                    while len(progress) < len(marks) and len(got) >= marks[len(progress)]:
                        progress.append((len(got), time.perf_counter() - t0[0]))
        except Exception as exc:  # noqa: BLE001 - report, never hang the barrier
            errors.append(f"client {index}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for thread in threads:
        thread.start()
    gate.wait()
    t0[0] = time.perf_counter()
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic() + 60))
    return got, time.perf_counter() - t0[0], progress, errors


def tree_cpu(pid):
    """User + system CPU seconds so far of process ``pid`` and its live children (serve --workers' processes)."""
    total = process_cpu(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = [int(child) for child in handle.read().split()]
    except OSError:
        return total
    return total + sum(tree_cpu(child) for child in children)


def windows(progress):
    """Rates of each tenth: jobs/s between consecutive marks."""
    rates, last = [], (0, 0.0)
    for jobs, seconds in progress:
        rates.append((jobs - last[0]) / max(1e-9, seconds - last[1]))
        last = (jobs, seconds)
    return rates


def writer_lock(path):
    """(write transactions, seconds the writer lock was held, CPU seconds of the holding threads meanwhile) so far
    in the server writing ``path``; None: not measured. Read after the server's next report (every 0.2 s)."""
    if path is None:
        return None
    time.sleep(0.5)
    totals = [0, 0.0, 0.0]
    for name in glob.glob(glob.escape(path) + ".*[0-9]"):  # one file per server process (<path>.<pid>)
        with open(name) as handle:
            for index, value in enumerate(handle.read().split()):
                totals[index] += float(value)
    return int(totals[0]), totals[1], totals[2]


def py_spy():
    """py-spy from PATH, else beside this interpreter (a venv's bin)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or beside


def result_db_name(db):
    return "sqlite" if db == "sqlite" else "postgresql"


def empty_postgres(url):
    """Drop everything in the PostgreSQL database ``url``, so each server (this tree's or an older one, whose
    schema version differs) starts from an empty database."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("DROP SCHEMA public CASCADE")
            cursor.execute("CREATE SCHEMA public")
    finally:
        conn.close()


def one_run(label, tree, db, args):
    home = tempfile.mkdtemp(prefix="bench-bulk-")
    db_url = "sqlite:///" + os.path.join(home, "minipanda.db") if db == "sqlite" else db
    if db != "sqlite":
        empty_postgres(db_url)
    queue = f"BULK_{int(time.time() * 1000) % 10 ** 9}"
    marks = [args.jobs * k // 10 for k in range(1, 11)]
    lock_file = os.path.join(home, "writer-lock") if args.writer_lock and db == "sqlite" else None
    env = dict(os.environ)
    if lock_file:  # the server (this tree's or the baseline's) sums its writer lock's holds: bench/writer_lock
        env["MINIPANDA_BENCH_WRITER_LOCK"] = lock_file
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(HERE, "writer_lock"),
                                                          os.environ.get("PYTHONPATH")]))
    server = Server(home, db_url, args.threads, workers=args.workers, cwd=tree, env=env)
    spy = None
    try:  # the server is stopped whatever fails from here on (py-spy missing included)
        cpu0 = tree_cpu(server.proc.pid)
        t0 = time.perf_counter()
        sub_client0 = time.process_time()
        ids, sub_progress = submit(server, queue, args.jobs, args.chunk, marks)
        sub_wall, cpu1 = time.perf_counter() - t0, tree_cpu(server.proc.pid)
        sub_client = time.process_time() - sub_client0
        load_sub = load_average()
        if args.py_spy and tree == baseline.ROOT:
            # CPU samples of the thread holding the GIL (--gil; no --idle): where this tree's server spends its
            # Python CPU in dispatch+finish (started after the submission; SQLite releases the GIL while it works:
            # that is not counted)
            spy = subprocess.Popen([py_spy(), "record", "--pid", str(server.proc.pid), "--rate", "250", "--gil",
                                    "--format", "raw", "--output", f"{args.py_spy}-{result_db_name(db)}.txt",
                                    "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            time.sleep(1)  # py-spy attached before the first getJob
        held0 = writer_lock(lock_file)
        drain0, client0 = tree_cpu(server.proc.pid), time.process_time()
        got, wall, progress, errors = drain(server, queue, args.clients, args.bulk, args.jobs, marks, args.time_limit)
        cpu2, client_cpu = tree_cpu(server.proc.pid), time.process_time() - client0
        held1 = writer_lock(lock_file)
        load_drain = load_average()
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
        server.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    duplicates, missed = len(got) - len(set(got)), len(set(ids) - set(got))
    result = {"label": label, "db": result_db_name(db), "jobs": len(ids),
              "submit_rate": len(ids) / sub_wall, "submit_windows": windows(sub_progress),
              "submit_cpu_ms": 1000 * (cpu1 - cpu0) / max(1, len(ids)), "load_submit": load_sub,
              "submit_client_cpu_ms": 1000 * sub_client / max(1, len(ids)),
              "drain_rate": len(set(got)) / wall, "drain_windows": windows(progress),
              "drain_cpu_ms": 1000 * (cpu2 - drain0) / max(1, len(set(got))), "load_drain": load_drain,
              "client_cpu_ms": 1000 * client_cpu / max(1, len(set(got))),
              "lock_ms": 1000 * (held1[1] - held0[1]) / max(1, len(set(got))) if lock_file else None,
              "lock_cpu_ms": 1000 * (held1[2] - held0[2]) / max(1, len(set(got))) if lock_file else None,
              "duplicates": duplicates, "missed": missed, "errors": errors}
    print(f"  {label} on {result['db']}: submit {result['submit_rate']:.0f} jobs/s "
          f"({result['submit_cpu_ms']:.3f} ms server CPU per job), dispatch+finish {result['drain_rate']:.0f} jobs/s "
          f"({result['drain_cpu_ms']:.3f} ms per job" + ("" if result["lock_ms"] is None else
                                                         f", writer lock held {result['lock_ms']:.3f} ms per job, "
                                                         f"the holder's CPU {result['lock_cpu_ms']:.3f}")
          + f"); duplicates {duplicates}, missed {missed}, "
          f"errors {len(errors)}; load {load_drain}", flush=True)
    for error in errors[:5]:
        print(f"    {error}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200000, help="jobs per run (default 200,000)")
    p.add_argument("--chunk", type=int, default=5000, help="jobs per job/submit call (default 5,000)")
    p.add_argument("--clients", type=int, default=8, help="concurrent dispatch clients (default 8)")
    p.add_argument("--bulk", type=int, default=100, help="jobs per getJob and per updateJobsInBulk (default 100)")
    p.add_argument("--threads", type=int, default=8, help="server request threads (default 8; per process)")
    p.add_argument("--workers", type=int, default=1, help="server processes (serve --workers; default 1; more than "
                   "one needs a postgresql:// --db, as serve does): the server CPU is then summed over them")
    p.add_argument("--db", action="append", default=[], help="'sqlite' (a fresh file, the default) or a "
                   "postgresql:// URL (emptied before each run); repeatable: one run each (the same one twice: "
                   "two pairs, in the other order)")
    p.add_argument("--baseline", metavar="REV", help="also run this commit's server (e.g. main~3), side by side")
    p.add_argument("--time-limit", type=float, default=3600, help="s per dispatch phase before it gives up (3600)")
    p.add_argument("--keep", action="store_true", help="keep the SQLite homes")
    p.add_argument("--writer-lock", action="store_true", help="SQLite: also measure how long each server holds "
                   "its writer lock per job dispatched and finished (bench/writer_lock on the server's PYTHONPATH): "
                   "one writer at a time, so 1 / that is the most jobs/s its database work allows")
    p.add_argument("--py-spy", metavar="PREFIX", help="record this tree's server's dispatch+finish with py-spy "
                   "(CPU samples, collapsed stacks) into PREFIX-sqlite.txt / PREFIX-postgresql.txt (pip install py-spy)")
    args = p.parse_args(argv)
    print(f"bench/bulk.py: {args.jobs} jobs, {args.chunk} per submit, {args.clients} clients x {args.bulk} per "
          f"getJob + one updateJobsInBulk; {os.cpu_count()} CPUs, load {load_average()}", flush=True)
    results = [run.result for run in baseline.run_sides(  # one pair per database, the order turned each time
        args.baseline, lambda label, tree, db: one_run(label, tree, db, args), 1, cases=args.db or ["sqlite"])]
    print("\n| server | database | submit jobs/s | submit CPU ms/job | dispatch+finish jobs/s | CPU ms/job | "
          "clients' CPU ms/job | writer lock ms/job (holder's CPU) | per tenth (dispatch+finish, jobs/s) | duplicates/missed | "
          "load 1/5/15 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for r in results:
        tenths = " ".join(f"{x:.0f}" for x in r["drain_windows"])
        held = "" if r["lock_ms"] is None else f"{r['lock_ms']:.3f} ({r['lock_cpu_ms']:.3f})"
        print(f"| {r['label']} | {r['db']} | {r['submit_rate']:.0f} | {r['submit_cpu_ms']:.3f} | "
              f"{r['drain_rate']:.0f} | {r['drain_cpu_ms']:.3f} | {r['client_cpu_ms']:.3f} | {held} | {tenths} | "
              f"{r['duplicates']}/{r['missed']} | {r['load_drain']} |")
    print("\n| server | database | submit jobs/s | per tenth (submit, jobs/s) | server CPU ms/job | the submitting "
          "client's CPU ms/job (its specs built, encoded, the replies decoded) | load 1/5/15 |")
    print("|---|---|---:|---|---:|---:|---|")
    for r in results:
        tenths = " ".join(f"{x:.0f}" for x in r["submit_windows"])
        print(f"| {r['label']} | {r['db']} | {r['submit_rate']:.0f} | {tenths} | {r['submit_cpu_ms']:.3f} | "
              f"{r['submit_client_cpu_ms']:.3f} | {r['load_submit']} |")
    for db in sorted({r["db"] for r in results}):
        new = [r for r in results if r["db"] == db and r["label"] == "this tree"]
        old = [r for r in results if r["db"] == db and r["label"] != "this tree"]
        if new and old:  # medians when a database was given more than once
            def med(runs, key):
                return statistics.median(r[key] for r in runs)

            print(f"{db} ({len(new)} run(s) each, medians): this tree / baseline: submit "
                  f"{med(new, 'submit_rate') / med(old, 'submit_rate'):.2f}x, dispatch+finish "
                  f"{med(new, 'drain_rate') / med(old, 'drain_rate'):.2f}x; server CPU per job submitted "
                  f"{med(new, 'submit_cpu_ms'):.3f} against {med(old, 'submit_cpu_ms'):.3f} ms "
                  f"({med(new, 'submit_cpu_ms') / med(old, 'submit_cpu_ms'):.2f}x), dispatched and finished "
                  f"{med(new, 'drain_cpu_ms'):.3f} against {med(old, 'drain_cpu_ms'):.3f} ms "
                  f"({med(new, 'drain_cpu_ms') / med(old, 'drain_cpu_ms'):.2f}x)")
    print("goal: submit and dispatch+finish >= 10,000 jobs/s each on SQLite")
    bad = [r for r in results if r["duplicates"] or r["missed"] or r["errors"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
