#!/usr/bin/env python
"""What the width of the job row costs the bulk paths' two UPDATEs on SQLite: the real schema and real rows beside
a copy whose job table keeps only the hot columns (those dispatch and the pilots' updates read or write).

--jobs jobs are submitted through minipanda (jobs.submit_jobs, bench/dispatch.py's job spec) into a scratch SQLite
file; a copy of it gets a job table of the hot columns only (the others moved to a side table, the same indexes,
the count triggers dropped in both as the bulk writers pause them). Then, alternating between the two files,
--bulk jobs at a time are claimed (UPDATE ... WHERE panda_id IN (the dispatch pick) RETURNING panda_id) and
finished (UPDATE ... FROM (VALUES ...)), each in its own transaction with its COMMIT, as the server does; the CPU
of those statements per job is printed for each. Nothing else is measured: the HTTP layer, the status_log and
count writes are the same for both widths. Only temporary files are touched.

    python3 bench/row_width.py                  # 20,000 jobs, 100 per statement, 8 rounds per side
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

# What the claim and the finishing update read, write or pick on: everything else is the cold part of the row.
HOT = ("panda_id", "task_id", "status", "computing_site", "prod_source_label", "attempt_nr", "current_priority",
       "core_count", "min_ram_count", "max_walltime", "max_disk_count", "modification_time", "state_changed_time",
       "start_time", "end_time", "heartbeat_time", "pilot_id", "batch_id", "node", "harvester_id", "worker_id",
       "command_to_pilot", "trans_exit_code", "pilot_error_code", "settled")
QUEUE = "ROWWIDTH"
NOW = "2026-12-07 14:00:00.123456"


def make_database(path, n_jobs):
    from dispatch import job_spec
    from minipanda.core import jobs, schema

    database = schema.open_database("sqlite:///" + path)
    database.connect(reuse_if_open=True)
    for start in range(0, n_jobs, 5000):
        jobs.submit_jobs([job_spec(QUEUE, i) for i in range(start, min(n_jobs, start + 5000))], "admin")
    database.close()


def prepared(source, path, narrow):
    """A copy of ``source``; with ``narrow``, its job table cut to the HOT columns (the rest in job_cold)."""
    con = sqlite3.connect(source)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    shutil.copy(source, path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("PRAGMA synchronous=normal")
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'job'").fetchall():
        con.execute(f'DROP TRIGGER "{name}"')
    if narrow:
        columns = [row[1] for row in con.execute("PRAGMA table_info(job)")]
        table = con.execute("SELECT sql FROM sqlite_master WHERE name = 'job'").fetchone()[0]
        indexes = [sql for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'job' AND "
                                                 "type = 'index' AND sql IS NOT NULL")]
        cold = [column for column in columns if column not in HOT]
        con.execute("CREATE TABLE job_cold AS SELECT panda_id, " + ", ".join(f'"{c}"' for c in cold) + " FROM job")
        definitions = table.split("(", 1)[1].rsplit(")", 1)[0].split(", ")
        kept = [d for d in definitions if d.split()[0].strip('"') in HOT]
        con.execute("ALTER TABLE job RENAME TO job_wide")
        con.execute('CREATE TABLE "job" (' + ", ".join(kept) + ")")
        con.execute("INSERT INTO job SELECT " + ", ".join(f'"{c}"' for c in HOT) + " FROM job_wide")
        con.execute("DROP TABLE job_wide")
        for sql in indexes:
            con.execute(sql)
    con.execute("VACUUM")
    pages = con.execute("SELECT COUNT(*) FROM dbstat WHERE name = 'job'").fetchone()[0]
    return con, pages


def claim_and_finish(con, bulk):
    """CPU seconds of one claim and one finishing update of ``bulk`` jobs, each a transaction with its COMMIT."""
    started = time.thread_time()
    con.execute("BEGIN IMMEDIATE")
    ids = [row[0] for row in con.execute(
        "UPDATE job SET status = 'sent', state_changed_time = ?, modification_time = ?, start_time = ?, "
        "heartbeat_time = ?, node = ?, pilot_id = ? WHERE panda_id IN (SELECT panda_id FROM job WHERE "
        "status = 'activated' AND computing_site = ? AND prod_source_label IN ('managed') ORDER BY "
        "current_priority DESC, panda_id LIMIT ?) AND (status || '') = 'activated' RETURNING panda_id",
        (NOW, NOW, NOW, NOW, "node-1", "pilot-1", QUEUE, bulk)).fetchall()]
    con.execute("COMMIT")
    con.execute("BEGIN IMMEDIATE")
    values = ", ".join(["(?, 0, 0, ?)"] * len(ids))
    params = [value for pid in ids for value in (pid, "node-1")]
    con.execute(f'WITH v(_k, _0, _1, _2) AS (VALUES {values}) UPDATE job SET status = \'finished\', '
                "state_changed_time = ?, modification_time = ?, end_time = ?, heartbeat_time = ?, "
                "trans_exit_code = v._0, pilot_error_code = v._1, node = v._2 FROM v WHERE job.panda_id = v._k "
                "AND (status || '') = 'sent' RETURNING job.panda_id", params + [NOW] * 4).fetchall()
    con.execute("COMMIT")
    return time.thread_time() - started, len(ids)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20000, help="jobs submitted (default 20,000)")
    p.add_argument("--bulk", type=int, default=100, help="jobs per claim and per finishing update (default 100)")
    p.add_argument("--rounds", type=int, default=8, help="rounds per side, alternating (default 8)")
    args = p.parse_args(argv)
    home = tempfile.mkdtemp(prefix="bench-row-width-")
    try:
        make_database(os.path.join(home, "source.db"), args.jobs)
        sides = {"whole row": prepared(os.path.join(home, "source.db"), os.path.join(home, "wide.db"), False),
                 "hot columns only": prepared(os.path.join(home, "source.db"), os.path.join(home, "narrow.db"), True)}
        per_round = args.jobs // args.bulk // args.rounds
        spent = {name: [] for name in sides}
        for index in range(args.rounds):
            for name in (list(sides) if index % 2 == 0 else list(sides)[::-1]):
                results = [claim_and_finish(sides[name][0], args.bulk) for _ in range(per_round)]
                spent[name].append(1000 * sum(s for s, _ in results) / max(1, sum(n for _, n in results)))
        print(f"bench/row_width.py: {args.jobs} jobs, {args.bulk} per claim and per finishing update, SQLite "
              f"{sqlite3.sqlite_version}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, (_, pages) in sides.items():
            print(f"  {name}: job table {pages} pages; the two UPDATEs and their COMMITs "
                  f"{statistics.median(spent[name]):.4f} ms of CPU per job (median of {args.rounds}; "
                  + " ".join(f"{x:.4f}" for x in spent[name]) + ")")
        wide, narrow = (statistics.median(spent[name]) for name in sides)
        print(f"  hot columns only / whole row: {narrow / wide:.2f}x")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
