#!/usr/bin/env python
"""Scale benchmark: the claim rate and the monitor's dashboard stay flat as history grows.

Two SQLite databases, built first (and kept with --keep DIR, reused on the next run):

- **small**: a task of --small jobs (default 10,000), made by the generator duty; nothing archived;
- **large**: --live job rows (default 100,000): a task of --jobs jobs made by the generator duty (default 50,000)
  plus finished jobs of the last weeks written with bulk SQL; and --archived jobs (default 10,000,000), each with a
  log file and three state-history rows, in the archive's month files beside it (bulk SQL, 1,000,000 per month),
  as months of the retention duty (:mod:`minipanda.tasks.retention`) leave them.

Then, side by side in one run:

1. **Retention**: --move finished jobs older than 30 days are added to the large database and the retention duty
   moves them to the archive: jobs moved per second, and how long each batch held the live write lock.
2. **Dispatch**: the single-job claim a pilot's getJob makes (dispatch.claim_jobs, in this process: the server's
   code without HTTP); rounds alternate between the databases; median round, ratio large / small (goal >= 0.8).
3. **Monitor**: the dashboard's queries in this process, and ``GET /monitor/?json`` (the dashboard's data) from a
   real ``minipanda serve --auth none`` on each database, median of --requests (goal <= 200 ms on the large one);
   and ``job show``'s lookup of an archived job (archive.find, newest month first).

    python bench/scale.py                                   # the sizes above; ~6 GB of disk, a few minutes to build
    python bench/scale.py --archived 1000000 --live 20000 --jobs 10000    # a quick run
    python bench/scale.py --keep DIR                        # keep the databases in DIR (reused when present)

Prints figures and the machine's load; asserts nothing.
"""
import argparse
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from minipanda.core import archive, auth, db, dispatch, models, queues, schema, states  # noqa: E402
from minipanda.monitor import queries  # noqa: E402
from minipanda.tasks import generator, retention, service, settings  # noqa: E402

QUEUE = "BENCH"
SETTINGS = {"brokerage.bootstrap_queued": 1e12, "generator.batch": 2000, "generator.max_jobs_per_cycle": 1e9}
PER_MONTH = 1_000_000
JOB_COLUMNS = ("panda_id, job_definition_id, jobset_id, job_name, status, computing_site, prod_source_label, "
               "prod_user_name, transformation, job_pars, attempt_nr, max_attempt, current_priority, "
               "assigned_priority, core_count, min_ram_count, max_walltime, max_cpu_count, max_disk_count, "
               "creation_time, modification_time, state_changed_time, start_time, end_time, attributes, scout, settled")


def load():
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def open_db(path):
    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    queues.ensure_queues([QUEUE])
    return database


def bulk_jobs(execute, first, n, when, chunk=500_000):
    """``n`` finished jobs from PandaID ``first`` that ended at ``when``, each with a log file and three history
    rows, written with INSERT ... SELECT over a recursive sequence (no Python per row)."""
    stamp = when.strftime("%Y-%m-%d %H:%M:%S")
    for start in range(first, first + n, chunk):
        end = min(start + chunk, first + n) - 1
        seq = f"WITH RECURSIVE seq(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM seq WHERE i < {end}) "
        execute(f"{seq}INSERT INTO job ({JOB_COLUMNS}) SELECT i, 0, 0, 'old.' || i, 'finished', '{QUEUE}', 'user', "
                f"'someone', '/bin/sh', '-c true', 1, 3, 900, 900, 1, 1000, 600, 0, 1, '{stamp}', '{stamp}', "
                f"'{stamp}', '{stamp}', '{stamp}', '{{}}', 0, 1 FROM seq")
        execute(f"{seq}INSERT INTO job_file (panda_id, type, lfn, dataset, destination_dblock, fsize, checksum, "
                f"status) SELECT i, 'log', 'old.' || i || '.log.tgz', 'old.log', 'old.log', 1000, 'ad:00000001', "
                "'finished' FROM seq")
        execute(f"{seq}INSERT INTO status_log (panda_id, old_status, new_status, time, reason, kind) SELECT i, "
                f"t.o, t.n, '{stamp}', 'bench', 'transition' FROM seq, (SELECT NULL AS o, 'activated' AS n UNION "
                "ALL SELECT 'activated', 'running' UNION ALL SELECT 'running', 'finished') AS t")


def fill_history(database, n, when, first=None):
    first = max(first or 0, (database.execute_sql('SELECT MAX("panda_id") FROM "job"').fetchone()[0] or 0) + 1)
    with database.atomic():
        bulk_jobs(database.execute_sql, first, n, when)
    return first


def fill_archive(database, n, first_month):
    """``n`` archived jobs, PER_MONTH per month file from ``first_month``, PandaIDs below every live one."""
    store = archive.for_database(database)
    year, month, made, pid = first_month.year, first_month.month, 0, 1
    while made < n:
        name = f"{year:04d}-{month:02d}"
        count = min(PER_MONTH, n - made)
        conn = store._connect(store.path(name))
        store._prepare(conn, "job")
        with conn:
            bulk_jobs(conn.execute, pid, count, datetime.datetime(year, month, 15))
        conn.close()
        made, pid = made + count, pid + count
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return pid  # the next free PandaID


def generate(n_jobs, name):
    """Submit a task of ``n_jobs`` jobs and run the generator until all exist; returns seconds."""
    config = settings.Settings(SETTINGS)
    started = time.perf_counter()
    service.submit_task({"taskName": name, "exec": "echo %RNDM:1", "nJobs": n_jobs, "nScouts": 0},
                        auth.Identity("bench", "user"))
    made = 0
    while made < n_jobs:
        step = generator.run(config)
        if not step:
            raise RuntimeError(f"the generator stopped after {made} of {n_jobs} jobs")
        made += step
    return time.perf_counter() - started


def build(path, live, task_jobs, archived, label):
    """A database of ``live`` job rows (a generated task of ``task_jobs``, the rest recent finished jobs) and
    ``archived`` jobs in month files beside it. Returns a line saying what was made and how long it took."""
    if os.path.exists(path):
        database = open_db(path)
        rows = models.Job.select().count()
        months = archive.for_database(database).months()
        database.close()
        return f"{label}: reusing {path} ({rows:,} live job rows, {len(months)} archive months)"
    database = open_db(path)
    now = states.utcnow()
    started = time.perf_counter()
    next_id = fill_archive(database, archived, datetime.datetime(now.year - 2, now.month, 1)) if archived else 1
    archive_s = time.perf_counter() - started
    started = time.perf_counter()
    if live > task_jobs:  # live PandaIDs continue after the archived ones, as on a server that ran that long
        fill_history(database, live - task_jobs, now - datetime.timedelta(days=7), next_id)
    history_s = time.perf_counter() - started
    generation_s = generate(task_jobs, f"bench.{label}")
    rows = models.Job.select().count()
    database.close()
    return (f"{label}: {rows:,} live job rows: {live - task_jobs:,} finished of last week by bulk SQL in "
            f"{history_s:.1f} s, a task of {task_jobs:,} jobs by the generator in {generation_s:.1f} s "
            f"({task_jobs / generation_s:,.0f} jobs/s); {archived:,} archived jobs (+ {archived:,} files, "
            f"{3 * archived:,} history rows) by bulk SQL in {archive_s:.1f} s ({load()})")


def measure_retention(path, n):
    """Add ``n`` finished jobs of 40 days ago and let the retention duty move them; (jobs/s, lock hold ms list)."""
    database = open_db(path)
    fill_history(database, n, states.utcnow() - datetime.timedelta(days=40))
    holds, real = [], archive.delete_live

    def timed(*args):
        started = time.perf_counter()
        try:
            return real(*args)
        finally:
            holds.append((time.perf_counter() - started) * 1000)

    archive.delete_live = timed
    try:
        started = time.perf_counter()
        done = retention.run(settings.Settings({"retention.log_days": 0}), os.path.dirname(path))
        elapsed = time.perf_counter() - started
    finally:
        archive.delete_live = real
        database.close()
    return done["jobs_archived"][0] / elapsed, holds


def claim_rate(n_claims):
    """Single-job claims per second (the getJob path), and the p50/p99 latency in ms."""
    offer = dispatch.Offer(queue=QUEUE, prod_source_label="user", cores=1, memory_mb=4000, walltime_s=86400,
                           n_jobs=1, node="wn", pilot_id="bench")
    latencies = []
    started = time.perf_counter()
    for _ in range(n_claims):
        t0 = time.perf_counter()
        if not dispatch.claim_jobs(offer):
            raise RuntimeError("no activated jobs left to claim; raise --jobs or lower --claims")
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return n_claims / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def dashboard_times(path, n_requests):
    """Milliseconds of ``GET /monitor/?json`` from a real server on ``path`` (first request left out: warm-up)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = os.path.dirname(path)
    log = open(os.path.join(home, "server.log"), "ab")
    server = subprocess.Popen([sys.executable, "-m", "minipanda", "serve", "--home", home, "--db", "sqlite:///" + path,
                               "--port", str(port), "--auth", "none"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(url + "/api/v1/system/is_alive", timeout=5)
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server on {path} did not start; see {home}/server.log") from None
                time.sleep(0.2)
        session, times = requests.Session(), []
        for index in range(n_requests + 1):
            started = time.perf_counter()
            reply = session.get(url + "/monitor/?json", timeout=60)
            reply.raise_for_status()
            if index:
                times.append((time.perf_counter() - started) * 1000)
        return times, len(reply.content)
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000, help="job rows of the small database (a task)")
    parser.add_argument("--live", type=int, default=100_000, help="live job rows of the large database")
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs of the large database's generated task "
                                                                 "(fewer than --live when --archived is set)")
    parser.add_argument("--archived", type=int, default=10_000_000, help="archived jobs beside the large database")
    parser.add_argument("--move", type=int, default=20_000, help="old jobs the retention duty moves (0: skip)")
    parser.add_argument("--claims", type=int, default=1000, help="claims per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10, help="dashboard requests per database")
    parser.add_argument("--keep", help="directory for the databases (kept; reused on the next run)")
    args = parser.parse_args()
    if args.claims * args.rounds > min(args.jobs, args.small):
        parser.error("--claims x --rounds must not exceed the activated jobs of either database")
    if args.jobs > args.live or (args.archived and args.jobs == args.live):
        parser.error("--jobs must be below --live (the rest are recent finished jobs)")
    workdir = args.keep or tempfile.mkdtemp(prefix="minipanda-scale-")
    paths = {name: os.path.join(workdir, name, "minipanda.db") for name in ("small", "large")}
    for path in paths.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        print(f"== building ({workdir}; {load()})")
        print(build(paths["small"], args.small, args.small, 0, "small"))
        print(build(paths["large"], args.live, args.jobs, args.archived, "large"))
        if args.move:
            rate, holds = measure_retention(paths["large"], args.move)
            print(f"\n== retention: moved {args.move:,} jobs (with files and history) at {rate:,.0f} jobs/s in "
                  f"{len(holds)} batches; live write lock held per batch: median {statistics.median(holds):.1f} ms, "
                  f"max {max(holds):.1f} ms ({load()})")
        for path in paths.values():  # a kept database's jobs claimed by an earlier run are offered again
            database = open_db(path)
            with database.atomic():
                database.execute_sql("UPDATE job SET status = 'activated', pilot_id = NULL, node = NULL, "
                                     "start_time = NULL WHERE status = 'sent' AND computing_site = ?", (QUEUE,))
            database.close()
        print(f"\n== dispatch: {args.rounds} rounds x {args.claims} single-job claims, alternating databases")
        results = {"small": [], "large": []}
        for _ in range(args.rounds):
            for label, path in paths.items():
                open_db(path)
                results[label].append(claim_rate(args.claims))
                db.database.close()
        print(f"{'':28}{'small':>14}{'large':>14}")
        rows = {}
        for label, path in paths.items():
            database = open_db(path)
            rows[label] = (models.Job.select().count(), len(archive.for_database(database).months()))
            database.close()
        print(f"{'live job rows':28}{rows['small'][0]:>14,}{rows['large'][0]:>14,}")
        print(f"{'archived jobs':28}{0:>14,}{args.archived:>14,}")
        medians = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
        p50 = {k: statistics.median(r[1] for r in v) for k, v in results.items()}
        p99 = {k: statistics.median(r[2] for r in v) for k, v in results.items()}
        print(f"{'claims/s (median round)':28}{medians['small']:>14,.0f}{medians['large']:>14,.0f}")
        print(f"{'claim latency p50 ms':28}{p50['small']:>14.2f}{p50['large']:>14.2f}")
        print(f"{'claim latency p99 ms':28}{p99['small']:>14.2f}{p99['large']:>14.2f}")
        inproc = {}
        for label, path in paths.items():  # the page's queries alone, in this process: no HTTP, no server threads
            database = open_db(path)
            times = []
            for _ in range(args.requests):
                started = time.perf_counter()
                queries.dashboard(queries.parse_filters({}))
                times.append((time.perf_counter() - started) * 1000)
            inproc[label] = statistics.median(times)
            database.close()
        print(f"{'dashboard queries median ms':28}{inproc['small']:>14.1f}{inproc['large']:>14.1f}")
        dashboards = {label: dashboard_times(path, args.requests) for label, path in paths.items()}
        print(f"{'dashboard ?json median ms':28}{statistics.median(dashboards['small'][0]):>14.1f}"
              f"{statistics.median(dashboards['large'][0]):>14.1f}")
        print(f"{'dashboard ?json max ms':28}{max(dashboards['small'][0]):>14.1f}{max(dashboards['large'][0]):>14.1f}")
        database = open_db(paths["large"])
        lookups = []
        for pid in (1, args.archived // 2, max(1, args.archived - 1)):
            started = time.perf_counter()
            assert archive.find("job", pid) is not None, pid
            lookups.append((time.perf_counter() - started) * 1000)
        database.close()
        print(f"\nratio large / small claims/s: {medians['large'] / medians['small']:.2f} (goal >= 0.8)")
        print(f"dashboard on the large database: {statistics.median(dashboards['large'][0]):.0f} ms median "
              "(goal <= 200 ms)")
        print(f"archived job lookup (in the oldest, a middle, the newest bulk month of {rows['large'][1]} files, "
              "searched newest first): "
              + ", ".join(f"{t:.1f} ms" for t in lookups))
        print(load())
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
