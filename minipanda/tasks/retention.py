"""The retention duty: history leaves the live tables, old archives and unneeded files go.

Each run (``period.retention``, default hourly), in this order:

1. the file store (:mod:`minipanda.tasks.storeclean`): log tarballs, outputs of finished tasks, sandboxes;
2. jobs in a final state, settled by the task side, that ended more than ``retention.job_days`` ago (default 30)
   move with their files and state history to the archive (:mod:`minipanda.core.archive`), in batches of
   ``retention.batch`` (default 500): each batch holds the live write lock only for its delete. A job whose log
   tarball is kept longer than that (``retention.log_days`` above ``retention.job_days``) waits for it, and so do
   the jobs owning the newest row of the job, job_file and status_log tables (see :func:`newest_owners`);
3. tasks in a final state that ended as long ago and have no job left in the live tables move with their
   history, inputs and brokerage decisions, and the kept counts (:mod:`minipanda.core.counts`) drop their rows
   of 0 for tasks that left;
4. archived jobs and tasks that ended more than ``retention.archive_days`` ago are deleted (default 0: kept);
   on SQLite a month's file goes once the whole month is that old.

Every setting in days may be 0: keep that kind forever. Totals go to the retention_stat table (``/metrics``).
"""
import datetime
import logging
import time

from peewee import fn

from minipanda.core import archive, counts, models, states
from minipanda.core.db import database
from minipanda.core.states import FINAL_JOB_STATES, FINAL_TASK_VALUES
from minipanda.tasks import storeclean

log = logging.getLogger(__name__)
FINAL_JOBS = [s.value for s in FINAL_JOB_STATES]
KINDS = ("jobs_archived", "tasks_archived", "archived_jobs_expired", "archived_tasks_expired", "archive_files_expired",
         "log", "output", "sandbox")


def run(settings, home, now=None):
    """One retention pass; returns what it did, {kind: (count, bytes)}."""
    now = now or states.utcnow()
    started = time.perf_counter()
    done = {}
    job_days, log_days = settings.get("retention.job_days"), settings.get("retention.log_days")
    if log_days:
        done["log"] = storeclean.delete_logs(home, log_days, now)
    done["output"] = storeclean.delete_outputs(home, settings.get("retention.output_days"),
                                               settings.get("retention.fetched_output_days"), now)
    if job_days:
        done["sandbox"] = storeclean.delete_sandboxes(home, job_days, now)
        store = archive.for_database()
        batch = max(1, settings.get_int("retention.batch"))
        done["jobs_archived"] = (archive_jobs(store, max(job_days, log_days), now, batch), 0)
        done["tasks_archived"] = (archive_tasks(store, job_days, now, batch), 0)
        with database.atomic():
            counts.tidy()
    archive_days = settings.get("retention.archive_days")
    if archive_days:
        expired = archive.for_database().expire(now - datetime.timedelta(days=archive_days))
        done.update(archived_jobs_expired=(expired["jobs"], 0), archived_tasks_expired=(expired["tasks"], 0),
                    archive_files_expired=(expired["files"], 0))
    record(done, now)
    if any(count for count, _ in done.values()):
        log.info("retention: %s in %.1f s", ", ".join(f"{kind} {count}" + (f" ({size} bytes)" if size else "")
                                                     for kind, (count, size) in done.items() if count),
                 time.perf_counter() - started)
    return done


def _move(store, group, rows, ends):
    """Move one batch: {month: ids} by when each ended. An archive that refuses it is logged; the rows stay live."""
    by_month = {}
    for ident, ended in zip(rows, ends):
        by_month.setdefault(archive.month_of(ended), []).append(ident)
    try:
        return store.move(group, by_month)
    except archive.ArchiveError as exc:
        log.error("retention: could not archive %ss %s..%s: %s", group, rows[0], rows[-1], exc)
        return 0


def newest_owners(group):
    """The jobs (tasks) that own the newest row of each table of ``group``: they stay live.

    SQLite gives a new row the largest id in its table plus one; were the row with the largest id moved away, the
    next row would take its id again: a PandaID (or a history row's id) used twice, once live and once archived.
    Keeping the newest row of each table live keeps every id unique for as long as the database lives."""
    owners = set()
    for table, key in archive.GROUPS[group]:
        primary = archive.PRIMARY_KEYS[table]
        row = database.execute_sql(f'SELECT "{key}" FROM "{table}" WHERE "{primary}" = '
                                   f'(SELECT MAX("{primary}") FROM "{table}")').fetchone()
        if row is not None and row[0] is not None:
            owners.add(row[0])
    return owners


def archive_jobs(store, days, now, batch):
    """Move final, settled jobs that ended more than ``days`` ago; returns how many moved."""
    Job = models.Job
    cutoff = now - datetime.timedelta(days=days)
    settled = (Job.settled != False) | Job.settled.is_null()  # noqa: E712 (SQL)
    keep = list(newest_owners("job")) or [0]
    moved, last = 0, 0
    while True:
        found = list(Job.select(Job.panda_id, Job.state_changed_time)
                     .where(Job.panda_id > last, Job.status.in_(FINAL_JOBS), Job.state_changed_time < cutoff, settled,
                            Job.panda_id.not_in(keep))
                     .order_by(Job.panda_id).limit(batch).tuples())
        if not found:
            return moved
        last = found[-1][0]
        moved += _move(store, "job", [f[0] for f in found], [f[1] for f in found])
        if len(found) < batch:
            return moved


def archive_tasks(store, days, now, batch):
    """Move final tasks that ended more than ``days`` ago and have no job left in the live tables."""
    Task, Job = models.Task, models.Job
    cutoff = now - datetime.timedelta(days=days)
    keep = list(newest_owners("task")) or [0]
    moved, last = 0, 0
    while True:
        found = list(Task.select(Task.jedi_task_id, Task.modification_time)
                     .where(Task.jedi_task_id > last, Task.status.in_(list(FINAL_TASK_VALUES)),
                            Task.modification_time < cutoff, Task.jedi_task_id.not_in(keep),
                            ~fn.EXISTS(Job.select(Job.panda_id).where(Job.task_id == Task.jedi_task_id)))
                     .order_by(Task.jedi_task_id).limit(batch).tuples())
        if not found:
            return moved
        last = found[-1][0]
        moved += _move(store, "task", [f[0] for f in found], [f[1] for f in found])
        if len(found) < batch:
            return moved


def record(done, now):
    """Add this run's counts to the retention_stat table."""
    RetentionStat = models.RetentionStat
    for kind, (count, size) in done.items():
        RetentionStat.insert(kind=kind, count=count, bytes=size, last_time=now).on_conflict(
            conflict_target=[RetentionStat.kind],
            update={RetentionStat.count: RetentionStat.count + count, RetentionStat.bytes: RetentionStat.bytes + size,
                    RetentionStat.last_time: now}).execute()
