"""Round 8's cuts of a no-op job's CPU, each beside the code it replaced, in one run, in process (SQLite).

- ``settle: the finished jobs' files``: 500 log rows into the task's dataset as the settle duty writes them per
  500 jobs: peewee's ``insert_many(dicts).on_conflict_ignore()`` (before) against ``bulk.insert_rows(...,
  skip_existing=True)`` (now);
- ``monitor: the pilots' PandaIDs``: 50 (PandaID, worker) links, harvester's monitor per queue and cycle: peewee's
  ``insert_many`` (before) against ``monitor.link_jobs`` (now);
- ``Settings.get``: one setting read from the ``config`` table: ``Config.get_or_none`` (before) against the plain
  SELECT (now);
- ``the payload's program on PATH``: ``shutil.which`` (before) against ``payload.on_path`` (now);
- ``the payload's start``: ``Popen(["true"])`` and its reaping, this process's CPU and the child's (before:
  Popen tries an exec in each PATH directory before ``true``'s; now: ``executable=`` what on_path found).

    python bench/noop_cuts.py [--repeat 30]

Prints the median CPU time of this process per call and per job (CPU, not wall time: the machine is shared), the
ratio, and the load average. Nothing is asserted.
"""
import argparse
import datetime
import os
import shutil
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harvester import db as harvester_db, models as harvester_models  # noqa: E402
from harvester.agents import monitor  # noqa: E402
from minipanda.core import bulk, models, schema  # noqa: E402
from minipanda.core.db import database  # noqa: E402
from minipanda.tasks import settings, settle  # noqa: E402
from pilot import payload  # noqa: E402

NOW = datetime.datetime(2026, 12, 7, 17, 0, 0)


def cpu_per_call(fn, calls, repeat, reset=None):
    """Median CPU seconds of one call over ``repeat`` rounds of ``calls`` calls (``reset`` run between rounds): this
    process's and its reaped children's."""
    def spent():
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    rounds = []
    for _ in range(repeat):
        if reset:
            reset()
        began = spent()
        for _ in range(calls):
            fn()
        rounds.append(spent() - began)
    return statistics.median(rounds) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="rounds per variant (default 30)")
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="noop-cuts-")
    db = schema.open_database("sqlite:///" + os.path.join(home, "bench.db"))
    db.connect(reuse_if_open=True)
    dataset = models.Dataset.create(name="user.bench.log", type="log", user_name="bench", task_id=1,
                                    creation_time=NOW, modification_time=NOW)
    rows = [(dataset.id, f"bench.{n:06d}.log.tgz", "", 1234, "ad:0badf00d", "http://127.0.0.1/files/user.bench",
             "ready", n, NOW) for n in range(500)]
    dicts = [dict(zip(("dataset", "lfn", "guid", "fsize", "checksum", "location", "status", "panda_id",
                       "creation_time"), row)) for row in rows]

    def clear_files():
        models.DatasetFile.delete().execute()

    def files_before():
        with database.atomic():
            models.DatasetFile.insert_many(dicts).on_conflict_ignore().execute()

    def files_now():
        with database.atomic():
            bulk.insert_rows(models.DatasetFile._meta.table_name, settle.OUTPUT_COLUMNS,
                             [row[:-1] + (bulk.time_param(NOW),) for row in rows], skip_existing=True)

    harvester_db.open_database(os.path.join(home, "harvester.db"))
    pairs = [(1000 + n, 7) for n in range(50)]

    def clear_links():
        harvester_models.JobWorker.delete().execute()

    def links_before():
        with harvester_models.database.atomic():
            harvester_models.JobWorker.insert_many([{"panda_id": p, "worker_id": w, "time": NOW}
                                                    for p, w in pairs]).on_conflict_ignore().execute()

    def links_now():
        with harvester_models.database.atomic():
            monitor.link_jobs(pairs, NOW)

    read = settings.Settings()
    models.Config.insert(key="generator.batch", value="500").execute()

    def setting_before():
        row = models.Config.get_or_none(models.Config.key == "generator.batch")
        return settings.check("generator.batch", row.value)

    path_program = "true"
    env = dict(os.environ)
    payload.on_path(path_program)

    def start(executable):
        proc = subprocess.Popen([path_program], executable=executable, cwd=home, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                close_fds=True)
        proc.wait()
    figures = [
        ("settle: the finished jobs' files (500 rows)", 500,
         cpu_per_call(files_before, 1, args.repeat, clear_files), cpu_per_call(files_now, 1, args.repeat, clear_files)),
        ("monitor: the pilots' PandaIDs (50 links)", 50,
         cpu_per_call(links_before, 1, args.repeat, clear_links), cpu_per_call(links_now, 1, args.repeat, clear_links)),
        ("Settings.get (one setting)", None, cpu_per_call(setting_before, 200, args.repeat),
         cpu_per_call(lambda: read.get("generator.batch"), 200, args.repeat)),
        ("the payload's program on PATH", 1, cpu_per_call(lambda: shutil.which(path_program), 200, args.repeat),
         cpu_per_call(lambda: payload.on_path(path_program), 200, args.repeat)),
        ("the payload's start (`true`, pilot + child)", 1, cpu_per_call(lambda: start(None), 50, args.repeat),
         cpu_per_call(lambda: start(payload.found_before(path_program, env)), 50, args.repeat)),
    ]
    print(f"bench/noop_cuts.py: median CPU of this process, {args.repeat} rounds each; load before "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| cut | before, µs per call | now, µs per call | now ÷ before | saved per job, µs |")
    print("|---|---:|---:|---:|---:|")
    for name, per_job, before, now in figures:
        saved = f"{(before - now) / per_job * 1e6:.1f}" if per_job else "-"
        print(f"| {name} | {before * 1e6:.1f} | {now * 1e6:.1f} | {now / before:.2f} | {saved} |")
    print(f"load after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    harvester_db.close_database()
    db.close()
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
