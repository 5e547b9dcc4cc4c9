"""The rows and counts the monitor's pages are made of (:mod:`minipanda.monitor.pages`), as plain JSON values,
under a page's filters (:mod:`minipanda.monitor.filters`). Counts are over everything that matches; lists stop at
``limit`` rows.
"""
import datetime
import json

from peewee import fn

from minipanda.core import counts as live_counts, models, states
from minipanda.core.states import JobStatus, TaskStatus
from minipanda.monitor import errorcodes
from minipanda.monitor.filters import JOB_STATES, job_filter, like, task_filter
from minipanda.tasks import service as task_service
from minipanda.workers import harvesters

TASK_STATES = [s.value for s in TaskStatus]
ACTIVE_STATES = sorted(s.value for s in states.ACTIVE_JOB_STATES)
WAITING_STATES = ("pending", "defined", "assigned", "activated")
WORKER_STATES = list(harvesters.WORKER_STATES)


def stamp(when):
    """A naive UTC datetime as 'YYYY-MM-DD hh:mm:ss', or None."""
    return when.strftime("%Y-%m-%d %H:%M:%S") if isinstance(when, datetime.datetime) else when


def plain(value):
    """``value`` with every datetime written as text (the JSON the pages and ``?json`` share)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        return stamp(value)
    return value


def job_row(j):
    """One job as the lists show it."""
    return {"PandaID": j.panda_id, "jobName": j.job_name, "jobStatus": j.status, "computingSite": j.computing_site,
            "prodUserName": j.prod_user_name, "taskID": j.task_id, "attemptNr": j.attempt_nr,
            "currentPriority": j.current_priority, "creationTime": stamp(j.creation_time),
            "modificationTime": stamp(j.modification_time), "stateChangeTime": stamp(j.state_changed_time),
            "errors": errorcodes.job_errors(j)}


def _kept_counts(f):
    """Whether the counts the database keeps (minipanda.core.counts) answer for ``f``: they are by task, queue and
    state; a time, user or task-name filter, or a queue pattern, needs the rows themselves."""
    return (not f.days and not f.user and not f.taskname and not (f.queue and "*" in f.queue)
            and (f.jeditaskid is None or f.jeditaskid > 0))


def _job_counts(f, now):
    """{queue: {state: n}} of the jobs matching ``f``."""
    if _kept_counts(f):
        return live_counts.jobs_by_queue(queue=f.queue, task_id=f.jeditaskid, statuses=f.status)
    Job = models.Job
    query = job_filter(Job.select(Job.computing_site, Job.status, fn.COUNT(Job.panda_id)), f, now) \
        .group_by(Job.computing_site, Job.status)
    return _counts_by(query)


def job_list(f, now=None, total=None):
    """{filters, total, jobs}: jobs matching ``f``, most recently changed first (``total``: when already known)."""
    now = now or states.utcnow()
    Job = models.Job
    if total is None:
        total = sum(n for by_state in _job_counts(f, now).values() for n in by_state.values())
    picked = [row[0] for row in newest_ids(f, now).tuples()]
    rows = Job.select().where(Job.panda_id.in_(picked)).order_by(Job.state_changed_time.desc(), Job.panda_id.desc())
    return {"filters": f.as_dict(), "total": total, "limit": f.limit, "jobs": [job_row(j) for j in rows]}


def newest_ids(f, now):
    """The query of the PandaIDs of the ``f.limit`` jobs matching ``f`` that changed last, newest first (ties: higher PandaID
    first), as PanDA's monitor lists them.

    A job's modification_time is its state_changed_time: every writer sets both to the same time, at each state
    change (states.change_job_status and its bulk twins, submission, the task generator); nothing else writes
    either (tests/test_monitor_queries.py holds this). So the newest of each state come from that state's end of
    the (status, state_changed_time) index, the watchdog's and the charts' own, and the newest of all are the
    newest of those few lists: no index of its own on modification_time, which every state change rewrote twice
    (schema 12 drops it). The ids first, then their rows: sorting a task's jobs (no index has both task and time)
    then sorts pairs of (time, id), not whole rows."""
    Job = models.Job
    order = (Job.state_changed_time.desc(), Job.panda_id.desc())
    branches = []
    for index, status in enumerate(f.status or JOB_STATES):
        branch = job_filter(Job.select(Job.panda_id, Job.state_changed_time), f, now, with_status=False) \
            .where(Job.status == status).order_by(*order).limit(f.limit).alias(f"s{index}")
        # a SELECT of its own around each branch: SQLite allows no ORDER BY or LIMIT in a member of a UNION
        branches.append(Job.select(branch.c.panda_id, branch.c.state_changed_time).from_(branch))
    union = branches[0]
    for branch in branches[1:]:
        union = union + branch  # UNION ALL
    newest = union.alias("newest")
    return Job.select(newest.c.panda_id).from_(newest).order_by(
        newest.c.state_changed_time.desc(), newest.c.panda_id.desc()).limit(f.limit)


def _counts_by(query):
    """{key1: {key2: n}} of a (key1, key2, count) query."""
    out = {}
    for *keys, n in query.tuples():
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key or "", {})
        node[keys[-1] or ""] = n
    return out


def ordered(names, order):
    return [s for s in order if s in names] + sorted(s for s in names if s not in order)


def jobs_by_queue(f, now):
    """({queue: {state: n}}, states present in the usual order)."""
    counts = _job_counts(f, now)
    present = {s for by_state in counts.values() for s in by_state}
    return dict(sorted(counts.items())), ordered(present, JOB_STATES)


def workers_by_queue(queue=None):
    """({queue: {worker status: n}}, statuses present), from harvester's worker reports."""
    Worker = models.Worker
    query = Worker.select(Worker.computing_site, Worker.status, fn.COUNT(Worker.id)).where(Worker.status.is_null(False))
    if queue:
        query = query.where(like(Worker.computing_site, queue))
    counts = _counts_by(query.group_by(Worker.computing_site, Worker.status))
    present = {s for by_state in counts.values() for s in by_state}
    return dict(sorted(counts.items())), ordered(present, WORKER_STATES)


def task_rows(f, now, limit):
    Task = models.Task
    query = task_filter(Task.select(), f, now).order_by(Task.jedi_task_id.desc()).limit(limit)
    tasks = list(query)
    counts = task_service.input_counts([t.jedi_task_id for t in tasks])
    by_task = live_counts.jobs_by_task([t.jedi_task_id for t in tasks])
    out = []
    for t in tasks:
        row = task_service.task_dict(t, counts[t.jedi_task_id])
        out.append({key: row[key] for key in ("jediTaskID", "taskName", "userName", "status", "superStatus",
                                              "creationDate", "modificationTime", "nFiles", "nFilesFinished",
                                              "nFilesFailed", "pctFinished", "pctFailed")}
                   | {"jobs": by_task.get(t.jedi_task_id, {})})
    return out


def recent_errors(f, now, limit=20):
    """The most recently failed jobs matching ``f`` (latest failure first), with what their error codes mean."""
    Job = models.Job
    query = job_filter(Job.select(), f, now, with_status=False).where(Job.status == JobStatus.FAILED.value)
    # A failed job's state_changed_time is when it failed: the (status, state_changed_time) index gives the newest
    # failures in order, where sorting by modification_time read every failed job.
    return [job_row(j) for j in query.order_by(Job.state_changed_time.desc(), Job.panda_id.desc()).limit(limit)]


def harvester_rows(now):
    out = []
    for h in harvesters.list_instances():
        row = models.HarvesterInstance.get_by_id(h["harvester_id"])
        out.append(dict(h, heartbeat_age_s=round((now - row.last_heartbeat).total_seconds(), 1)))
    return out


def worker_statistics(queue=None):
    """harvester's latest worker counts: [{harvester, queue, time, counts: [{jobType, resourceType, status, n}]}]."""
    WS = models.WorkerStatistics
    query = WS.select().order_by(WS.queue, WS.harvester_id)
    if queue:
        query = query.where(WS.queue == queue)
    out = []
    for row in query:
        try:
            stats = json.loads(row.statistics)
        except ValueError:
            stats = {}
        counts = [{"jobType": jt, "resourceType": rt, "status": st, "n": n}
                  for jt, by_rt in sorted(stats.items()) if isinstance(by_rt, dict)
                  for rt, by_st in sorted(by_rt.items()) if isinstance(by_st, dict)
                  for st, n in sorted(by_st.items())]
        out.append({"harvester": row.harvester_id, "queue": row.queue, "time": stamp(row.modification_time),
                    "counts": counts})
    return out
