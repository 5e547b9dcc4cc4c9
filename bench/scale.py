#!/usr/bin/env python
"""Scale benchmark: the claim rate and the monitor's main pages stay flat as history grows.

Two databases, built first (and kept with --keep DIR, reused on the next run):

- **small**: a task of --small jobs (default 10,000), made by the generator duty; nothing archived;
- **large**: --live job rows (default 100,000): a task of --jobs jobs made by the generator duty (default 50,000)
  plus finished jobs of the last weeks written with bulk SQL; and --archived jobs (default 10,000,000), each with a
  log file and three state-history rows, in the archive beside it (bulk SQL; on SQLite 1,000,000 per month file),
  as months of the retention duty (:mod:`minipanda.tasks.retention`) leave them.

On SQLite they are two files under DIR; with ``--pg URL`` they are two schemas (``bench_small``, ``bench_large``) of
that PostgreSQL database, each server and connection of the bench pointed at its schema by ``search_path``.

Then, side by side in one run:

1. **Retention**: --move finished jobs older than 30 days are added to the large database and the retention duty
   moves them to the archive: jobs moved per second, and how long each batch held the live write lock.
2. **Dispatch**: the single-job claim a pilot's getJob makes (dispatch.claim_jobs, in this process: the server's
   code without HTTP); rounds alternate between the databases; median round, ratio large / small (goal >= 0.8).
3. **Monitor**: each main page's data (dashboard, job list, task list, queue list, the bench queue's page) made in
   this process (wall and CPU time: the CPU figure does not count waiting for a core on a loaded machine), and
   ``GET <page>?json`` from a real ``minipanda serve --auth none`` on each database, median of --requests (goal:
   the dashboard <= 200 ms on the large one); and ``job show``'s lookup of an archived job.

    python bench/scale.py                                   # the sizes above; ~6 GB of disk, ~12 min to build
    python bench/scale.py --archived 1000000 --live 20000 --jobs 10000    # a quick run
    python bench/scale.py --keep DIR                        # keep the databases in DIR (reused when present)
    python bench/scale.py --keep DIR --baseline REV         # and the pages from REV's server (before schema 9)
    python bench/scale.py --pg postgresql://user:pw@127.0.0.1/db --archived 1000000   # PostgreSQL

Prints figures and the machine's load; asserts nothing.
"""
import argparse
import datetime
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests  # noqa: E402

import baseline  # noqa: E402
from dispatch import process_cpu  # noqa: E402

from minipanda.core import archive, auth, counts, db, dispatch, models, queues, schema, states  # noqa: E402
from minipanda.core.db import make_database  # noqa: E402
from minipanda.monitor import filters, pagedata  # noqa: E402
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


class Target:
    """One of the bench's two databases: a SQLite file under ``workdir/label``, or the schema ``bench_<label>`` of
    the PostgreSQL database ``pg_url`` (every connection and server of the bench pointed at it by search_path)."""

    def __init__(self, label, workdir, pg_url=None):
        self.label, self.pg_url = label, pg_url
        self.home = os.path.join(workdir, label)
        os.makedirs(self.home, exist_ok=True)
        self.path = os.path.join(self.home, "minipanda.db")
        self.schema = f"bench_{label}"
        self.url = pg_url or "sqlite:///" + self.path

    @property
    def postgres(self):
        return self.pg_url is not None

    def env(self):
        """The environment of a server on this database (libpq reads PGOPTIONS)."""
        env = dict(os.environ)
        if self.postgres:
            env["PGOPTIONS"] = f"-c search_path={self.schema}"
        return env

    def exists(self):
        if not self.postgres:
            return os.path.exists(self.path)
        database = make_database(self.pg_url)
        database.connect()
        try:
            return bool(database.execute_sql("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND "
                                             "table_name = 'job'", (self.schema,)).fetchone())
        finally:
            database.close()

    def open(self):
        """Bind the models to this database (created or upgraded as ``minipanda serve`` would) and connect."""
        if not self.postgres:
            database = schema.open_database(self.url)
        else:
            database = make_database(self.pg_url)
            database.connect()
            database.execute_sql(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            database.close()
            database.connect_params["options"] = f"-c search_path={self.schema}"
            db.database.initialize(database)
            database.connect()
            schema.upgrade_schema(database)
        database.connect(reuse_if_open=True)
        queues.ensure_queues([QUEUE])
        return database


def stamp_sql(database, when):
    """A time as an SQL literal of ``database``."""
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"TIMESTAMP '{text}'" if isinstance(database, db.peewee.PostgresqlDatabase) else f"'{text}'"


def bulk_jobs(execute, first, n, stamp, suffix="", chunk=500_000):
    """``n`` finished jobs from PandaID ``first`` that ended at ``stamp`` (an SQL literal), each with a log file and
    three history rows, written with INSERT ... SELECT over a recursive sequence (no Python per row); ``suffix``:
    "_archive" writes PostgreSQL's archive tables."""
    for start in range(first, first + n, chunk):
        end = min(start + chunk, first + n) - 1
        seq = f"WITH RECURSIVE seq(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM seq WHERE i < {end}) "
        execute(f"{seq}INSERT INTO job{suffix} ({JOB_COLUMNS}) SELECT i, 0, 0, 'old.' || i, 'finished', '{QUEUE}', "
                f"'user', 'someone', '/bin/sh', '-c true', 1, 3, 900, 900, 1, 1000, 600, 0, 1, {stamp}, {stamp}, "
                f"{stamp}, {stamp}, {stamp}, '{{}}', FALSE, TRUE FROM seq")
        row_id = "row_id, " if suffix else ""  # the archive tables have no sequences: the ids are given
        execute(f"{seq}INSERT INTO job_file{suffix} ({row_id}panda_id, type, lfn, dataset, destination_dblock, "
                f"fsize, checksum, status) SELECT {'i, ' if suffix else ''}i, 'log', 'old.' || i || '.log.tgz', "
                "'old.log', 'old.log', 1000, 'ad:00000001', 'finished' FROM seq")
        log_id = "id, " if suffix else ""
        execute(f"{seq}INSERT INTO status_log{suffix} ({log_id}panda_id, old_status, new_status, time, reason, kind) "
                f"SELECT {'3 * i + t.k, ' if suffix else ''}i, t.o, t.n, {stamp}, 'bench', 'transition' FROM seq, "
                "(SELECT 0 AS k, NULL AS o, 'activated' AS n UNION ALL SELECT 1, 'activated', 'running' UNION ALL "
                "SELECT 2, 'running', 'finished') AS t")


def fill_history(database, n, when, first=None):
    first = max(first or 0, (database.execute_sql('SELECT MAX("panda_id") FROM "job"').fetchone()[0] or 0) + 1)
    with database.atomic():
        bulk_jobs(database.execute_sql, first, n, stamp_sql(database, when))
        next_ids(database, first + n)
    return first


def next_ids(database, free):
    """PostgreSQL: the id sequences continue after the ids bulk SQL gave, live or archived (job ``free``, its file
    ``free``, its history rows ``3 * free``), as on a server that made those rows itself."""
    if isinstance(database, db.peewee.PostgresqlDatabase):
        for table, column, last in (("job", "panda_id", free - 1), ("job_file", "row_id", free - 1),
                                    ("status_log", "id", 3 * free)):
            database.execute_sql(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), GREATEST(%s, "
                                 f"(SELECT COALESCE(MAX({column}), 0) FROM {table}), "
                                 f"(SELECT last_value FROM {table}_{column}_seq)))", (last,))


def fill_archive(database, n, first_month):
    """``n`` archived jobs, PER_MONTH per month from ``first_month``, PandaIDs below every live one."""
    year, month, made, pid = first_month.year, first_month.month, 0, 1
    store = archive.for_database(database)
    while made < n:
        count = min(PER_MONTH, n - made)
        when = datetime.datetime(year, month, 15)
        if isinstance(database, db.peewee.PostgresqlDatabase):
            with database.atomic():
                bulk_jobs(database.execute_sql, pid, count, stamp_sql(database, when), suffix="_archive")
        else:
            conn = store._connect(store.path(f"{year:04d}-{month:02d}"))
            store._prepare(conn, "job")
            with conn:
                bulk_jobs(conn.execute, pid, count, stamp_sql(database, when))
            conn.close()
        made, pid = made + count, pid + count
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    next_ids(database, pid)
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


def archived_jobs(database):
    """The jobs in PostgreSQL's archive tables; None on SQLite (its month files are not counted: too slow)."""
    if isinstance(database, db.peewee.PostgresqlDatabase):
        return database.execute_sql("SELECT COUNT(*) FROM job_archive").fetchone()[0]
    return None


def build(target, live, task_jobs, archived):
    """A database of ``live`` job rows (a generated task of ``task_jobs``, the rest recent finished jobs) and
    ``archived`` jobs in its archive. Returns a line saying what was made and how long it took."""
    label = target.label
    if target.exists():
        database = target.open()
        rows = models.Job.select().count()
        database.close()
        return f"{label}: reusing {target.schema if target.postgres else target.path} ({rows:,} live job rows)"
    database = target.open()
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
    if target.postgres:
        database.execute_sql("VACUUM ANALYZE")  # as autovacuum would after a bulk load: the planner's statistics
    database.close()
    return (f"{label}: {rows:,} live job rows: {live - task_jobs:,} finished of last week by bulk SQL in "
            f"{history_s:.1f} s, a task of {task_jobs:,} jobs by the generator in {generation_s:.1f} s "
            f"({task_jobs / generation_s:,.0f} jobs/s); {archived:,} archived jobs (+ {archived:,} files, "
            f"{3 * archived:,} history rows) by bulk SQL in {archive_s:.1f} s ({load()})")


def measure_retention(target, n):
    """Add ``n`` finished jobs of 40 days ago and let the retention duty move them; (jobs/s, lock hold ms list)."""
    database = target.open()
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
        done = retention.run(settings.Settings({"retention.log_days": 0}), target.home)
        elapsed = time.perf_counter() - started
    finally:
        archive.delete_live = real
        database.close()
    return done["jobs_archived"][0] / elapsed, holds


def claim_rate(n_claims):
    """Single-job claims per second (the getJob path), the p50/p99 latency in ms, and CPU ms per claim."""
    offer = dispatch.Offer(queue=QUEUE, prod_source_label="user", cores=1, memory_mb=4000, walltime_s=86400,
                           n_jobs=1, node="wn", pilot_id="bench")
    latencies = []
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n_claims):
        t0 = time.perf_counter()
        if not dispatch.claim_jobs(offer):
            raise RuntimeError("no activated jobs left to claim; raise --jobs or lower --claims")
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    latencies.sort()
    return (n_claims / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
            cpu * 1000 / n_claims)


def pages(task_id):
    """{page: (path of its ?json, function making its data in this process)} of the monitor's main pages."""
    return {
        "dashboard": ("/monitor/?json", lambda: pagedata.dashboard(filters.parse_filters({}))),
        "job list": ("/monitor/jobs?json", lambda: pagedata.jobs_page(filters.parse_filters({}))),
        "task list": ("/monitor/tasks?json", lambda: pagedata.tasks_page(filters.parse_filters({}, 100))),
        "queue list": ("/monitor/queues?json", pagedata.queues_page),
        "queue page": (f"/monitor/queues/{QUEUE}?json", lambda: pagedata.queue_page(QUEUE)),
        "task page": (f"/monitor/tasks/{task_id}?json",
                      lambda: pagedata.task_page(task_id, filters.parse_filters({}))),
    }


def page_times_inprocess(target, n_requests):
    """{page: (median wall ms, median CPU ms)} of each main page's data made in this process."""
    database = target.open()
    task_id = models.Task.select(db.peewee.fn.MAX(models.Task.jedi_task_id)).scalar()
    out = {}
    for name, (_, make) in pages(task_id).items():
        make()  # warm-up
        walls, cpus = [], []
        for _ in range(n_requests):
            started, cpu = time.perf_counter(), time.thread_time()
            make()
            walls.append((time.perf_counter() - started) * 1000)
            cpus.append((time.thread_time() - cpu) * 1000)
        out[name] = (statistics.median(walls), statistics.median(cpus))
    database.close()
    return out, task_id


WARM_UP = 8  # requests of each page before the timed ones: one per server thread (each opens its connection)


def baseline_copy(target, tree):
    """(home, database URL) of a copy of ``target``'s live SQLite database as a version 8 server (``tree``, a
    checkout of the baseline) expects it: the live counts (schema 9) dropped, the version set back. The archive's
    month files are not copied: the pages measured read none of them."""
    home = os.path.join(target.home, "baseline")
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    path = os.path.join(home, "minipanda.db")
    source = sqlite3.connect(target.path)
    copy = sqlite3.connect(path)
    source.backup(copy)
    source.close()
    for counter in counts.COUNTERS:
        for event in ("insert", "update", "delete"):
            copy.execute(f"DROP TRIGGER IF EXISTS {counter.name}_{event}")
        copy.execute(f"DROP TABLE IF EXISTS {counter.name}")
    copy.execute("UPDATE config SET value = '8' WHERE key = 'schema_version'")
    copy.commit()
    copy.close()
    return home, "sqlite:///" + path


def page_times_http(target, n_requests, task_id, tree=None):
    """{page: [ms, ...]} of ``GET <page>?json`` from a real server on ``target``, after WARM_UP requests; with
    ``tree``, that checkout's server on a copy of the database (:func:`baseline_copy`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home, url = baseline_copy(target, tree) if tree else (target.home, target.url)
    log = open(os.path.join(home, "server.log"), "ab")
    server = subprocess.Popen([sys.executable, "-m", "minipanda", "serve", "--home", home, "--db", url,
                               "--port", str(port), "--auth", "none"], stdout=log, stderr=subprocess.STDOUT,
                              env=target.env(), cwd=tree)
    db_url, url = url, f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(url + "/api/v1/system/is_alive", timeout=5)
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server on {db_url} did not start; see {home}/server.log") \
                        from None
                time.sleep(0.2)
        session, out = requests.Session(), {}
        for name, (path, _) in pages(task_id).items():
            times = []
            for index in range(WARM_UP + n_requests):
                if index == WARM_UP:
                    cpu = process_cpu(server.pid)
                started = time.perf_counter()
                reply = session.get(url + path, timeout=60)
                reply.raise_for_status()
                if index >= WARM_UP:
                    times.append((time.perf_counter() - started) * 1000)
            out[name] = times
            # the server's CPU per request: what the page costs whatever the machine's load
            out[name + " cpu"] = 1000 * (process_cpu(server.pid) - cpu) / n_requests
        return out
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def row(label, small, large, fmt):
    return f"{label:34}{format(small, fmt):>12}{format(large, fmt):>12}"


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
    parser.add_argument("--requests", type=int, default=10, help="requests of each page per database")
    parser.add_argument("--keep", help="directory for the databases (kept; reused on the next run) and the servers' "
                                       "homes and logs")
    parser.add_argument("--baseline", metavar="REV", help="also measure the pages' ?json from that commit's server "
                                                          "(a schema 8 one: before the live counts) on a copy of "
                                                          "each live database, in the same run (SQLite only)")
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL database to hold the two databases as the schemas "
                                                    "bench_small and bench_large (kept; reused on the next run)")
    args = parser.parse_args()
    if args.baseline and args.pg:
        parser.error("--baseline works on SQLite only (a copy of each live database)")
    if args.claims * args.rounds > min(args.jobs, args.small):
        parser.error("--claims x --rounds must not exceed the activated jobs of either database")
    if args.jobs > args.live or (args.archived and args.jobs == args.live):
        parser.error("--jobs must be below --live (the rest are recent finished jobs)")
    workdir = args.keep or tempfile.mkdtemp(prefix="minipanda-scale-")
    targets = {label: Target(label, workdir, args.pg) for label in ("small", "large")}
    try:
        print(f"== building ({args.pg.rsplit('@', 1)[-1] if args.pg else workdir}; {load()})")
        print(build(targets["small"], args.small, args.small, 0))
        print(build(targets["large"], args.live, args.jobs, args.archived))
        if args.move:
            rate, holds = measure_retention(targets["large"], args.move)
            print(f"\n== retention: moved {args.move:,} jobs (with files and history) at {rate:,.0f} jobs/s in "
                  f"{len(holds)} batches; live write lock held per batch: median {statistics.median(holds):.1f} ms, "
                  f"max {max(holds):.1f} ms ({load()})")
        for target in targets.values():  # a kept database's jobs claimed by an earlier run are offered again
            database = target.open()
            with database.atomic():
                database.execute_sql("UPDATE job SET status = 'activated', pilot_id = NULL, node = NULL, "
                                     f"start_time = NULL WHERE status = 'sent' AND computing_site = '{QUEUE}'")
            database.close()
        print(f"\n== dispatch: {args.rounds} rounds x {args.claims} single-job claims, alternating databases "
              f"({load()})")
        results = {"small": [], "large": []}
        for _ in range(args.rounds):
            for label, target in targets.items():
                target.open()
                results[label].append(claim_rate(args.claims))
                db.database.close()
        print(f"{'':34}{'small':>12}{'large':>12}")
        rows, archived = {}, {}
        for label, target in targets.items():
            database = target.open()
            rows[label] = models.Job.select().count()
            archived[label] = archived_jobs(database)
            database.close()
        print(row("live job rows", rows["small"], rows["large"], ",d"))
        print(row("archived jobs", 0, args.archived if archived["large"] is None else archived["large"], ",d"))
        medians = {k: [statistics.median(r[i] for r in v) for i in range(4)] for k, v in results.items()}
        print(row("claims/s (median round)", medians["small"][0], medians["large"][0], ",.0f"))
        print(row("claim latency p50 ms", medians["small"][1], medians["large"][1], ".2f"))
        print(row("claim latency p99 ms", medians["small"][2], medians["large"][2], ".2f"))
        print(row("claim CPU ms", medians["small"][3], medians["large"][3], ".3f"))

        print(f"\n== monitor pages: median of {args.requests} ({load()})")
        inproc, task_ids = {}, {}
        for label, target in targets.items():
            inproc[label], task_ids[label] = page_times_inprocess(target, args.requests)
        http = {label: page_times_http(target, args.requests, task_ids[label]) for label, target in targets.items()}
        before = {}
        if args.baseline:
            tree = baseline.checkout(args.baseline)
            try:
                before = {label: page_times_http(target, args.requests, task_ids[label], tree)
                          for label, target in targets.items()}
            finally:
                baseline.remove(tree)
        print(f"{'':34}{'small':>12}{'large':>12}{'large/small':>12}")
        for name in inproc["small"]:
            for what, small, large in (
                    ("in-process ms", inproc["small"][name][0], inproc["large"][name][0]),
                    ("in-process CPU ms", inproc["small"][name][1], inproc["large"][name][1]),
                    ("?json ms", statistics.median(http["small"][name]), statistics.median(http["large"][name]))):
                print(row(f"{name} {what}", small, large, ".1f") + f"{large / max(small, 0.01):>12.2f}")
            print(row(f"{name} ?json server CPU ms", http["small"][name + " cpu"], http["large"][name + " cpu"], ".1f"))
            if before:
                small, large = (statistics.median(before[label][name]) for label in ("small", "large"))
                print(row(f"{name} ?json ms, {args.baseline[:10]}", small, large, ".1f")
                      + f"{large / max(small, 0.01):>12.2f}")
                print(row(f"{name} ?json server CPU ms, {args.baseline[:10]}", before["small"][name + " cpu"],
                          before["large"][name + " cpu"], ".1f"))
        database = targets["large"].open()
        lookups = []
        for pid in (1, args.archived // 2, max(1, args.archived - 1)) if args.archived else ():
            started = time.perf_counter()
            assert archive.find("job", pid) is not None, pid
            lookups.append((time.perf_counter() - started) * 1000)
        database.close()
        print(f"\nratio large / small claims/s: {medians['large'][0] / medians['small'][0]:.2f} (goal >= 0.8)")
        print(f"dashboard on the large database: {statistics.median(http['large']['dashboard']):.0f} ms median, "
              f"max {max(http['large']['dashboard']):.0f} ms (goal <= 200 ms)")
        if before:
            print(f"dashboard on the large database, {args.baseline}: "
                  f"{statistics.median(before['large']['dashboard']):.0f} ms median, "
                  f"max {max(before['large']['dashboard']):.0f} ms; this tree / baseline: "
                  f"{statistics.median(http['large']['dashboard']) / statistics.median(before['large']['dashboard']):.2f}"
                  f" (server CPU per request {http['large']['dashboard cpu']:.1f} / "
                  f"{before['large']['dashboard cpu']:.1f} ms)")
        if lookups:
            print("archived job lookup (the oldest, a middle, the newest archived job): "
                  + ", ".join(f"{t:.1f} ms" for t in lookups))
        print(load())
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
