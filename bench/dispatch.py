#!/usr/bin/env python
"""Dispatch benchmark: a real ``minipanda serve`` subprocess, concurrent pilot clients on 127.0.0.1.

Phases (each on its own, freshly submitted queue, so leftovers of an earlier run never interfere):

  getJob          C clients call single-job getJob until the queue is empty (the dispatch rate)
  getJob+update   C clients each do getJob, then a final updateJob(state=finished), per job (the pilot cycle)
  bulk getJob     C clients call getJob with nJobs=--bulk until the queue is empty
  in-process      dispatch.claim_jobs in a loop in this process, same database type (the ceiling), alone and
                  followed by updates.update_job(finished) like the HTTP cycle

and one table of figures at the end. Every request loop is bounded in count and in time, and only talks to the
server this script started on 127.0.0.1, which it stops (only that process) before exiting.

    python bench/dispatch.py                       # 5000 jobs, 16 clients, SQLite in a temp home
    python bench/dispatch.py --repeat 3            # best of 3 per phase (a busy machine spreads the figures)
    python bench/dispatch.py --jobs 20000 --clients 32 --threads 8
    python bench/dispatch.py --db postgresql://user:pw@127.0.0.1:5432/bench
    python bench/dispatch.py --phases get --py-spy get.svg   # where the server's time goes (pip install py-spy)
    python bench/dispatch.py --idle 1000           # the same with 1,000 idle TCP connections open to the server

Exit status 1 when any job was dispatched twice or missed, or a client saw an error; the speed goals are only
reported.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

HOST = "127.0.0.1"  # the only address this script ever sends to
SUBMIT_CHUNK = 5000  # the server's per-call limit
NO_JOBS = 20


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[index]


def job_spec(queue, index):
    return {"jobName": f"bench.{queue}.{index}", "computingSite": queue, "prodSourceLabel": "managed",
            "transformation": "http://127.0.0.1/trf/runme.sh", "jobParameters": "--x 1", "coreCount": 1,
            "minRamCount": 1000, "maxWalltime": 600,
            "Files": [{"type": "log", "lfn": f"log.{index}.tgz", "scope": "bench"}]}


class Connection:
    """One keep-alive HTTP/1.1 connection to the server (http.client: far less client CPU than requests, so on
    a 2-core machine more of the CPU goes to the server under test)."""

    def __init__(self, port, token, timeout=60):
        self.port, self.timeout = port, timeout
        self.headers = {"Accept": "application/json", "Authorization": f"Bearer {token}",
                        "Content-Type": "application/x-www-form-urlencoded"}
        self.conn = None

    def post(self, path, fields):
        body = urllib.parse.urlencode(fields)
        for attempt in (1, 2):  # one reconnect if the server closed an idle keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
                return json.loads(data)
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Server:
    """``minipanda serve`` on a free loopback port, in a temporary home; stop() ends only this process. ``env``: the
    server's environment (default: this process's), e.g. with a bench's hooks on its PYTHONPATH."""

    def __init__(self, home, db_url, threads, workers=1, cwd=None, env=None):
        self.home, self.port = home, free_port()
        self.log = open(os.path.join(home, "server.log"), "ab")
        argv = [sys.executable, "-m", "minipanda", "serve", "--home", home, "--host", HOST, "--port",
                str(self.port), "--db", db_url, "--threads", str(threads)]
        if workers > 1:  # several server processes: PostgreSQL only
            argv += ["--workers", str(workers)]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd or ROOT,
                                     env=env)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    pass
                if os.path.exists(os.path.join(home, "admin.token")):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("server did not start within 30 s")
            time.sleep(0.1)
        time.sleep(0.2)  # admin.token is written just before the listener starts accepting
        with open(os.path.join(home, "admin.token")) as handle:
            self.token = handle.read().strip()

    def submit(self, queue, n_jobs):
        """Submit ``n_jobs`` activated jobs to ``queue``; return their PandaIDs."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=300)
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.token}",
                   "Content-Type": "application/json"}
        ids = []
        try:
            for start in range(0, n_jobs, SUBMIT_CHUNK):
                specs = [job_spec(queue, i) for i in range(start, min(n_jobs, start + SUBMIT_CHUNK))]
                conn.request("POST", "/api/v1/job/submit", body=json.dumps({"jobs": specs}), headers=headers)
                response = conn.getresponse()
                reply = json.loads(response.read())
                if response.status != 200 or not reply.get("success"):
                    raise RuntimeError(f"submit failed: HTTP {response.status}: {reply.get('message')}")
                ids.extend(row[0] for row in reply["data"])
        finally:
            conn.close()
        return ids

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def open_idle(port, count):
    """``count`` TCP connections to the server that send nothing (as a crowd of stalled clients would)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
    idle = []
    for _ in range(count):
        try:
            idle.append(socket.create_connection((HOST, port), timeout=5))
        except OSError as exc:
            print(f"  opened only {len(idle)} idle connections: {exc}")
            break
    return idle


def run_clients(server, queue, n_clients, n_jobs, bulk=None, update=False, time_limit=600):
    """C threads, each on its own connection, dispatch from ``queue`` until it answers "no jobs".

    Returns a dict of figures: dispatched ids (with repeats, to count duplicates), wall time, latencies.
    """
    lock = threading.Lock()
    got, get_lat, upd_lat, errors = [], [], [], []
    per_call = bulk or 1
    max_calls = n_jobs // per_call + 50  # per client: a bound no correct run gets near
    deadline = time.monotonic() + time_limit
    start_gate = threading.Barrier(n_clients + 1)

    def client(index):
        conn = Connection(server.port, server.token)
        my_ids, my_get, my_upd = [], [], []
        fields = {"computingElement": queue, "prodSourceLabel": "managed", "mem": "2000",
                  "node": f"bench-node-{index}"}
        if bulk:
            fields["nJobs"] = str(bulk)
        try:
            start_gate.wait()
            for call in range(max_calls):
                if time.monotonic() > deadline:
                    errors.append(f"client {index}: time limit reached")
                    break
                fields["pilotID"] = f"pilot-{index}-{call}"
                t0 = time.perf_counter()
                reply = conn.post("/server/panda/getJob", fields)
                my_get.append(time.perf_counter() - t0)
                code = reply.get("StatusCode")
                if code == NO_JOBS:
                    break  # the queue only drains in a phase, so the first "no jobs" means it is empty
                if code != 0:
                    errors.append(f"client {index}: getJob StatusCode {code}: {reply.get('ErrorDiag')}")
                    break
                ids = [j["PandaID"] for j in reply["jobs"]] if bulk else [reply["PandaID"]]
                my_ids.extend(ids)
                if update:
                    for pid in ids:
                        t0 = time.perf_counter()
                        answer = conn.post("/server/panda/updateJob", {
                            "jobId": pid, "state": "finished", "pilotID": fields["pilotID"],
                            "transExitCode": "0", "pilotErrorCode": "0", "node": fields["node"]})
                        my_upd.append(time.perf_counter() - t0)
                        if answer.get("StatusCode") != 0 or answer.get("command") not in (None, "NULL"):
                            errors.append(f"client {index}: updateJob {pid}: {answer}")
        except Exception as exc:  # noqa: BLE001 - report, do not hang the barrier or the run
            errors.append(f"client {index}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
            with lock:
                got.extend(my_ids)
                get_lat.extend(my_get)
                upd_lat.extend(my_upd)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic() + 30))
    wall = time.perf_counter() - t0
    return {"ids": got, "wall": wall, "get_lat": get_lat, "upd_lat": upd_lat, "errors": errors}


def check(result, expected_ids):
    ids = result["ids"]
    unique = set(ids)
    result["duplicates"] = len(ids) - len(unique)
    result["missed"] = len(set(expected_ids) - unique)
    result["foreign"] = len(unique - set(expected_ids))
    result["jobs"] = len(unique)
    result["rate"] = len(ids) / result["wall"] if result["wall"] else float("nan")
    return result


def in_process(db_url, n_jobs, with_update):
    """claim_jobs (and, optionally, update_job) in a loop in this process: no HTTP, no auth, no JSON."""
    from minipanda.core import dispatch, jobs, schema, updates

    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    try:
        queue = "BENCH_INPROC_" + uuid.uuid4().hex[:8]
        expected = []
        for start in range(0, n_jobs, SUBMIT_CHUNK):
            specs = [job_spec(queue, i) for i in range(start, min(n_jobs, start + SUBMIT_CHUNK))]
            expected.extend(row[0] for row in jobs.submit_jobs(specs, "bench"))
        got, lat = [], []
        offer = dispatch.Offer(queue=queue, prod_source_label="managed", memory_mb=2000, cores=1, node="inproc",
                               pilot_id="inproc")
        t0 = time.perf_counter()
        for _ in range(n_jobs + 10):
            c0 = time.perf_counter()
            claimed = dispatch.claim_jobs(offer)
            lat.append(time.perf_counter() - c0)
            if not claimed:
                break
            pid = claimed[0]["PandaID"]
            got.append(pid)
            if with_update:
                updates.update_job({"jobId": pid, "state": "finished", "pilotID": "inproc", "transExitCode": "0"})
        wall = time.perf_counter() - t0
    finally:
        database.close()
    return check({"ids": got, "wall": wall, "get_lat": lat, "upd_lat": [], "errors": []}, expected)


def ms(seconds):
    return f"{seconds * 1000:.1f}"


def process_cpu(pid):
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def load_average():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def better(old, new):
    """Keep the faster of two runs of a phase, but carry every run's correctness problems along."""
    if old is None:
        return new
    best = dict(new if new["rate"] > old["rate"] else old)
    for key in ("duplicates", "missed", "foreign"):
        best[key] = old[key] + new[key]
    best["errors"] = old["errors"] + new["errors"]
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per phase (default 5000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (default 16)")
    parser.add_argument("--threads", type=int, default=8, help="server request threads (default 8, as minipanda serve)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (minipanda serve --workers; "
                                                               "PostgreSQL only; default 1)")
    parser.add_argument("--bulk", type=int, default=100, help="nJobs per bulk getJob (default 100)")
    parser.add_argument("--db", help="database URL (default: SQLite in a temporary home); the bench adds its own "
                                     "queues and leaves other rows alone")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every phase this many times and show the fastest run (default 1); duplicates "
                             "and misses are summed over all runs")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds per phase before giving up")
    parser.add_argument("--phases", default="get,cycle,bulk,inproc",
                        help="comma-separated subset of get,cycle,bulk,inproc (default all)")
    parser.add_argument("--idle", type=int, default=0, metavar="N",
                        help="keep N idle TCP connections open to the server during the HTTP phases (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (server log, database)")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="record the server with py-spy --gil during the HTTP phases (pip install py-spy); "
                             "FILE ending in .svg is a flame graph, anything else collapsed stacks")
    args = parser.parse_args(argv)
    if min(args.jobs, args.clients, args.threads, args.bulk, args.repeat) < 1:
        parser.error("--jobs, --clients, --threads, --bulk and --repeat must be positive")
    phases = set(args.phases.split(","))
    unknown = phases - {"get", "cycle", "bulk", "inproc"}
    if unknown:
        parser.error(f"--phases: unknown {', '.join(sorted(unknown))}")

    home = tempfile.mkdtemp(prefix="minipanda-bench-")
    db_url = args.db or "sqlite:///" + os.path.join(home, "minipanda.db")
    kind = db_url.split(":", 1)[0]
    print(f"minipanda dispatch bench: {args.jobs} jobs/phase, {args.clients} clients, {args.threads} server "
          f"threads, {kind}, {os.cpu_count()} cpus, python {sys.version.split()[0]}, load average {load_average()}"
          + (f", {args.idle} idle connections" if args.idle else ""))
    results = {}
    server = Server(home, db_url, args.threads, args.workers)
    spy, idle = None, []
    try:
        run_tag = uuid.uuid4().hex[:8]
        plan = [("get", "getJob (single)", dict(update=False)),
                ("cycle", "getJob+updateJob", dict(update=True)),
                ("bulk", f"bulk getJob nJobs={args.bulk}", dict(bulk=args.bulk))]
        plan = [(key, label, options, f"BENCH_{key.upper()}_{run_tag}_{rep}")
                for rep in range(args.repeat) for key, label, options in plan if key in phases]
        submitted = {}
        t0 = time.perf_counter()
        for key, label, options, queue in plan:  # all submissions first: the phases then measure dispatch alone
            submitted[queue] = server.submit(queue, args.jobs)
        if plan:
            print(f"  submitted {len(plan)} x {args.jobs} jobs in {time.perf_counter() - t0:.1f} s "
                  f"({len(plan) * args.jobs / (time.perf_counter() - t0):.0f} jobs/s)", flush=True)
        if args.idle:
            idle = open_idle(server.port, args.idle)
            print(f"  {len(idle)} idle connections open", flush=True)
        if args.py_spy and plan:
            fmt = "flamegraph" if args.py_spy.endswith(".svg") else "raw"
            # --gil: only the thread holding the GIL is sampled, i.e. where the server's Python CPU time goes
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(server.proc.pid), "--rate", "250", "--gil",
                                    "--format", fmt, "--output", args.py_spy, "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            time.sleep(1)
        for key, label, options, queue in plan:
            print(f"  running {label} on {queue} ...", flush=True)
            server_cpu, client_cpu = process_cpu(server.proc.pid), time.process_time()
            result = check(run_clients(server, queue, args.clients, args.jobs, time_limit=args.time_limit,
                                       **options), submitted[queue])
            calls = max(1, len(result["get_lat"]) + len(result["upd_lat"]))
            result["cpu"] = ((process_cpu(server.proc.pid) - server_cpu) / calls,
                             (time.process_time() - client_cpu) / calls)
            results[label] = better(results.get(label), result)
    finally:
        for sock in idle:
            sock.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        server.stop()
    if "inproc" in phases:
        print("  running in-process claim_jobs loops ...", flush=True)
        for _ in range(args.repeat):
            results["in-process claim"] = better(results.get("in-process claim"),
                                                 in_process(db_url, args.jobs, with_update=False))
            results["in-process claim+update"] = better(results.get("in-process claim+update"),
                                                        in_process(db_url, args.jobs, with_update=True))

    print()
    header = (f"{'phase':<26}{'jobs/s':>8}{'get p50':>9}{'get p99':>9}{'upd p50':>9}{'upd p99':>9}"
              f"{'srv cpu':>9}{'cli cpu':>9}{'dup':>5}{'missed':>7}")
    print(header + "   (ms; cpu = per HTTP request)")
    print("-" * len(header))
    for label, r in results.items():
        upd50 = ms(percentile(r["upd_lat"], 50)) if r["upd_lat"] else "-"
        upd99 = ms(percentile(r["upd_lat"], 99)) if r["upd_lat"] else "-"
        srv, cli = (ms(r["cpu"][0]), ms(r["cpu"][1])) if "cpu" in r else ("-", "-")
        print(f"{label:<26}{r['rate']:>8.0f}{ms(percentile(r['get_lat'], 50)):>9}"
              f"{ms(percentile(r['get_lat'], 99)):>9}{upd50:>9}{upd99:>9}{srv:>9}{cli:>9}"
              f"{r['duplicates']:>5}{r['missed']:>7}")
    single, cycle = results.get("getJob (single)"), results.get("getJob+updateJob")
    claim, claim_upd = results.get("in-process claim"), results.get("in-process claim+update")
    bulk = next((r for label, r in results.items() if label.startswith("bulk")), None)
    print()
    if single and claim:
        print(f"HTTP getJob / in-process claim:                  {single['rate'] / claim['rate']:.2f}")
    if cycle and claim_upd:
        print(f"HTTP getJob+updateJob / in-process claim+update: {cycle['rate'] / claim_upd['rate']:.2f}")
    if cycle:
        requests_per_s = (len(cycle["get_lat"]) + len(cycle["upd_lat"])) / cycle["wall"]
        print(f"HTTP requests/s in the getJob+updateJob phase:   {requests_per_s:.0f}")
    print(f"load average at the end: {load_average()} (other work on the machine lowers every figure)")
    failed = False
    for label, r in results.items():
        for error in r["errors"][:5]:
            print(f"ERROR {label}: {error}")
        if r["errors"] or r["duplicates"] or r["missed"] or r["foreign"]:
            failed = True
    goals = []
    if single:
        goals.append(("single getJob >= 1000 jobs/s", single["rate"] >= 1000))
    if bulk:
        goals.append(("bulk getJob >= 10000 jobs/s", bulk["rate"] >= 10000))
    goals.append(("0 duplicates, 0 missed", not failed))
    print("goals: " + ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in goals))
    if args.keep:
        print(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
