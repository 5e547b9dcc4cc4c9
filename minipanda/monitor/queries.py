"""Each monitor page's data, as plain JSON values: what the template shows is exactly what ``?json`` returns.

Filters follow PanDA's monitor: ``days`` (changed in the last N days), ``status`` (one state or several joined
by ``|`` or ``,``), ``user``, ``taskname`` (``*`` wildcards), ``queue``, ``jeditaskid`` and ``limit``; PanDA's
own names (``jobstatus``, ``produsername``, ``computingsite``) are accepted too. Counts are over everything that
matches; lists stop at ``limit`` rows.
"""
import dataclasses
import datetime
import json
from typing import Optional

import peewee
from peewee import fn

from minipanda.core import archive, counts as live_counts, jobs as job_service, models, queues, states
from minipanda.core.states import JobStatus, TaskStatus
from minipanda.errors import RequestError
from minipanda.monitor import charts, errorcodes
from minipanda.tasks import service as task_service, why
from minipanda.workers import harvesters

JOB_STATES = [s.value for s in JobStatus]
TASK_STATES = [s.value for s in TaskStatus]
ACTIVE_STATES = sorted(s.value for s in states.ACTIVE_JOB_STATES)
WAITING_STATES = ("pending", "defined", "assigned", "activated")
WORKER_STATES = list(harvesters.WORKER_STATES)
ALIASES = {"jobstatus": "status", "produsername": "user", "username": "user", "computingsite": "queue",
           "task": "jeditaskid", "taskid": "jeditaskid"}
MAX_LIMIT = 1000
TEXT_LIMIT = 256


@dataclasses.dataclass
class Filters:
    days: Optional[int] = None
    status: tuple = ()
    user: Optional[str] = None
    taskname: Optional[str] = None
    queue: Optional[str] = None
    jeditaskid: Optional[int] = None
    limit: int = 100

    def as_dict(self):
        """The filters in force, as the query string would say them (empty ones left out)."""
        out = {"days": self.days, "status": "|".join(self.status) or None, "user": self.user,
               "taskname": self.taskname, "queue": self.queue, "jeditaskid": self.jeditaskid}
        return {key: value for key, value in out.items() if value not in (None, "")}


def _text(params, key):
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, list):
        raise RequestError(f"{key}: given more than once")
    value = str(value).strip()
    if len(value) > TEXT_LIMIT:
        raise RequestError(f"{key}: at most {TEXT_LIMIT} characters, got {len(value)}")
    return value or None


def _int(params, key, minimum, maximum):
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise RequestError(f"{key}: expected a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RequestError(f"{key}: expected a whole number, got {str(value)[:40]!r}") from None
    if not minimum <= number <= maximum:
        raise RequestError(f"{key}: must be between {minimum} and {maximum}, got {number}")
    return number


def parse_filters(params, default_limit=100):
    """The filters of a page's query string (PanDA's names accepted); RequestError names a bad one."""
    params = dict(params)
    for alias, name in ALIASES.items():
        if params.get(alias) not in (None, "") and params.get(name) in (None, ""):
            params[name] = params[alias]
    status = _text(params, "status")
    wanted = tuple(part.strip() for part in (status or "").replace(",", "|").split("|") if part.strip())
    unknown = [s for s in wanted if s not in JOB_STATES]
    if unknown:
        raise RequestError(f"status: {unknown[0][:40]!r} is not a job state; expected one of {', '.join(JOB_STATES)}")
    return Filters(days=_int(params, "days", 1, 3650), status=wanted, user=_text(params, "user"),
                   taskname=_text(params, "taskname"), queue=_text(params, "queue"),
                   jeditaskid=_int(params, "jeditaskid", 0, 2 ** 63 - 1),
                   limit=_int(params, "limit", 1, MAX_LIMIT) or default_limit)


def like(column, pattern):
    """``column`` matches ``pattern``: equality, or SQL LIKE when it holds ``*`` wildcards (nothing else is one)."""
    if "*" not in pattern:
        return column == pattern
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
    return peewee.NodeList((column, peewee.SQL("LIKE"), escaped, peewee.SQL("ESCAPE '\\'")))


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


def _job_filter(query, f, now, with_status=True):
    Job = models.Job
    if f.days:  # a job's modification_time is its state_changed_time (see job_list): this one has an index
        query = query.where(Job.state_changed_time >= now - datetime.timedelta(days=f.days))
    if with_status and f.status:
        query = query.where(Job.status.in_(list(f.status)))
    if f.user:
        query = query.where(like(Job.prod_user_name, f.user))
    if f.queue:
        query = query.where(like(Job.computing_site, f.queue))
    if f.jeditaskid is not None:
        query = query.where(Job.task_id == f.jeditaskid)
    if f.taskname:
        Task = models.Task
        query = query.where(Job.task_id.in_(Task.select(Task.jedi_task_id).where(like(Task.task_name, f.taskname))))
    return query


def _task_filter(query, f, now):
    Task = models.Task
    if f.days:
        query = query.where(Task.modification_time >= now - datetime.timedelta(days=f.days))
    if f.user:
        query = query.where(like(Task.user_name, f.user))
    if f.taskname:
        query = query.where(like(Task.task_name, f.taskname))
    if f.jeditaskid is not None:
        query = query.where(Task.jedi_task_id == f.jeditaskid)
    return query


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
    query = _job_filter(Job.select(Job.computing_site, Job.status, fn.COUNT(Job.panda_id)), f, now) \
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
        branch = _job_filter(Job.select(Job.panda_id, Job.state_changed_time), f, now, with_status=False) \
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


def _ordered(names, order):
    return [s for s in order if s in names] + sorted(s for s in names if s not in order)


def jobs_by_queue(f, now):
    """({queue: {state: n}}, states present in the usual order)."""
    counts = _job_counts(f, now)
    present = {s for by_state in counts.values() for s in by_state}
    return dict(sorted(counts.items())), _ordered(present, JOB_STATES)


def workers_by_queue(queue=None):
    """({queue: {worker status: n}}, statuses present), from harvester's worker reports."""
    Worker = models.Worker
    query = Worker.select(Worker.computing_site, Worker.status, fn.COUNT(Worker.id)).where(Worker.status.is_null(False))
    if queue:
        query = query.where(like(Worker.computing_site, queue))
    counts = _counts_by(query.group_by(Worker.computing_site, Worker.status))
    present = {s for by_state in counts.values() for s in by_state}
    return dict(sorted(counts.items())), _ordered(present, WORKER_STATES)


def task_rows(f, now, limit):
    Task = models.Task
    query = _task_filter(Task.select(), f, now).order_by(Task.jedi_task_id.desc()).limit(limit)
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
    query = _job_filter(Job.select(), f, now, with_status=False).where(Job.status == JobStatus.FAILED.value)
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


# ---- pages ----------------------------------------------------------------------------------------------------

def dashboard(f, now=None):
    """Tasks, jobs by state per queue, workers per queue, harvesters, recent errors and the newest jobs."""
    now = now or states.utcnow()
    by_queue, job_states = jobs_by_queue(f, now)
    workers, worker_states = workers_by_queue(f.queue)
    totals = {s: sum(c.get(s, 0) for c in by_queue.values()) for s in job_states}
    listed = job_list(dataclasses.replace(f, limit=min(f.limit, 50)), now, total=sum(totals.values()))
    return {"page": "dashboard", "time": stamp(now), "filters": f.as_dict(),
            "tasks": task_rows(f, now, min(f.limit, 100)),
            "jobs_by_queue": by_queue, "job_states": job_states, "job_totals": totals,
            "workers_by_queue": workers, "worker_states": worker_states,
            "worker_statistics": worker_statistics(f.queue if f.queue and "*" not in f.queue else None),
            "harvesters": harvester_rows(now), "recent_errors": recent_errors(f, now),
            "jobs": listed["jobs"], "jobs_total": listed["total"],
            "charts": charts.activity(now, f.queue if f.queue and "*" not in f.queue else None)}


def jobs_page(f, now=None):
    return dict(job_list(f, now), page="jobs")


def _decision(b, queue=None):
    candidates = json.loads(b.candidates or "[]")
    if queue is not None:
        candidates = [c for c in candidates if c.get("queue") == queue]
    return {"id": b.id, "taskID": b.task_id, "time": stamp(b.time), "outcome": b.outcome,
            "requirements": json.loads(b.requirements or "{}"), "candidates": candidates}


def task_page(task_id, f, now=None):
    now = now or states.utcnow()
    task = task_service.get_task(task_id)
    if task is None:
        raise RequestError(f"task {task_id} not found", http=404)
    counts = task_service.input_counts([task.jedi_task_id])[task.jedi_task_id]
    summary = task_service.job_counts(task.jedi_task_id)
    B = models.Brokerage
    decisions = B.select().where(B.task_id == task.jedi_task_id).order_by(B.id.desc()).limit(5)
    jobs = job_list(dataclasses.replace(f, jeditaskid=task.jedi_task_id, taskname=None), now)
    try:
        parameters = json.loads(task.params)
    except ValueError:
        parameters = task.params
    return {"page": "task", "task": task_service.task_dict(task, counts), "parameters": parameters,
            "input_statistics": counts, "job_summary": {s: summary[s] for s in _ordered(set(summary), JOB_STATES)},
            "outputs": [d.name for d in models.Dataset.select(models.Dataset.name).where(
                models.Dataset.task_id == task.jedi_task_id)],
            "history": task_service.task_log(task.jedi_task_id),
            "brokerage": [_decision(b) for b in decisions], "filters": jobs["filters"], "jobs": jobs["jobs"],
            "jobs_total": jobs["total"],
            "charts": {"progress": charts.task_progress(task, task.n_chunks or sum(counts.values()), now)}}


METRIC_FIELDS = (("cpuConsumptionTime", "cpu_consumption_time"), ("cpuConsumptionUnit", "cpu_consumption_unit"),
                 ("nEvents", "n_events"), ("maxRSS", "max_rss"), ("maxPSS", "max_pss"), ("maxVMEM", "max_vmem"),
                 ("avgRSS", "avg_rss"), ("avgPSS", "avg_pss"), ("actualCoreCount", "actual_core_count"),
                 ("jobMetrics", "job_metrics"), ("pilotTiming", "pilot_timing"))
JOB_FIELDS = (("jobName", "job_name"), ("jobStatus", "status"), ("computingSite", "computing_site"),
              ("prodSourceLabel", "prod_source_label"), ("prodUserName", "prod_user_name"),
              ("taskID", "task_id"), ("attemptNr", "attempt_nr"), ("maxAttempt", "max_attempt"),
              ("currentPriority", "current_priority"), ("coreCount", "core_count"),
              ("minRamCount", "min_ram_count"), ("maxWalltime", "max_walltime"), ("maxDiskCount", "max_disk_count"),
              ("transformation", "transformation"), ("jobParameters", "job_pars"),
              ("creationTime", "creation_time"), ("startTime", "start_time"), ("endTime", "end_time"),
              ("modificationTime", "modification_time"), ("heartbeatTime", "heartbeat_time"), ("node", "node"),
              ("pilotID", "pilot_id"), ("batchID", "batch_id"), ("harvesterID", "harvester_id"),
              ("workerID", "worker_id"), ("commandToPilot", "command_to_pilot"), ("scout", "scout"))


def job_page(panda_id, log_info, now=None):
    """The job, its state history, errors with their meaning, metrics, files, logs and why it is where it is.

    ``log_info(job, log_file)`` gives the logs section (see :mod:`minipanda.monitor.logs`)."""
    now = now or states.utcnow()
    job = models.Job.get_or_none(models.Job.panda_id == panda_id)
    found = None
    if job is None:
        found = archive.find("job", panda_id)  # read-only: the page shows it and says where it is kept
        if found is None:
            raise RequestError(f"job {panda_id} not found", http=404)
        job = found.first("job")
        files = found.rows["job_file"]
    else:
        files = list(models.JobFile.select().where(models.JobFile.job == job.panda_id)
                     .order_by(models.JobFile.row_id))
    log_file = next((f for f in files if f.type == "log"), None)
    worker = None
    if job.harvester_id and job.worker_id is not None:
        worker = {"harvester": job.harvester_id, "workerID": job.worker_id}
    try:
        explained = why.explain(job.panda_id, now)["lines"]
    except Exception as exc:  # the explanation is a help; the page must show even when it cannot be made
        explained = [f"no explanation: {type(exc).__name__}"]
    return {"page": "job", "PandaID": job.panda_id,
            "job": {name: stamp(getattr(job, column)) for name, column in JOB_FIELDS},
            "history": job_service.status_log(job.panda_id), "errors": errorcodes.job_errors(job),
            "metrics": {name: getattr(job, column) for name, column in METRIC_FIELDS
                        if getattr(job, column) not in (None, "")},
            "files": [{"type": f.type, "lfn": f.lfn, "scope": f.scope, "dataset": f.dataset, "fsize": f.fsize,
                       "checksum": f.checksum, "status": f.status, "guid": f.guid, "surl": f.surl} for f in files],
            "logs": log_info(job, log_file), "why": explained, "worker": worker,
            "archived": found.where if found else None}


def queue_page(name, now=None):
    now = now or states.utcnow()
    found = [q for q in queues.queue_list() if q["name"] == name]
    if not found:
        raise RequestError(f"queue {name} is not known to the server", http=404)
    queue = found[0]
    Job = models.Job
    by_state = live_counts.jobs_by_queue(queue=name).get(name, {})
    Worker = models.Worker
    workers = {s: n for s, n in Worker.select(Worker.status, fn.COUNT(Worker.id))
               .where(Worker.computing_site == name, Worker.status.is_null(False)).group_by(Worker.status).tuples()}
    # The first 20 of each waiting state, each read in order from the dispatch index, then merged: one query over
    # all four states sorted every waiting job of the queue.
    waiting = sorted((job for status in WAITING_STATES for job in (
        Job.select().where(Job.computing_site == name, Job.status == status)
        .order_by(Job.current_priority.desc(), Job.panda_id).limit(20))),
        key=lambda job: (-job.current_priority, job.panda_id))[:20]
    seen = {("job", job.panda_id): job for job in waiting}
    # The activated jobs ahead of a listed one in dispatch order are the activated ones listed before it: any job
    # ahead of a job of the first 20 is among the first 20 itself.
    activated = [job for job in waiting if job.status == JobStatus.ACTIVATED.value]
    seen.update({("ahead", job.panda_id): index for index, job in enumerate(activated)})
    waiting_rows = []
    for job in waiting:
        row = job_row(job)
        row["why"] = why.explain(job.panda_id, now, seen)["lines"][1:]
        waiting_rows.append(row)
    B = models.Brokerage
    decisions = (B.select().where(B.candidates.contains(json.dumps(name))).order_by(B.id.desc()).limit(5))
    return {"page": "queue", "name": name, "status": queue["status"], "why_not_online": queue["why"],
            "site": queue["site"], "waiting": queue["waiting"], "running": queue["running"],
            "config": queue["queuedata"], "modificationTime": stamp(queue["modificationTime"]),
            "jobs_by_state": {s: by_state[s] for s in _ordered(set(by_state), JOB_STATES)},
            "workers_by_state": {s: workers[s] for s in _ordered(set(workers), WORKER_STATES)},
            "workers": harvesters.list_workers(queue=name, limit=50),
            "worker_statistics": worker_statistics(name), "waiting_jobs": waiting_rows,
            "charts": charts.activity(now, name),
            "brokerage": [d for d in (_decision(b, name) for b in decisions) if d["candidates"]]}


def worker_page(harvester_id, worker_id):
    Worker = models.Worker
    worker = Worker.get_or_none(Worker.harvester_id == harvester_id, Worker.worker_id == worker_id)
    if worker is None:
        raise RequestError(f"worker {worker_id} of harvester {harvester_id} not found", http=404)
    listed = json.loads(worker.pandaid_list or "[]")
    Job = models.Job
    jobs = (Job.select().where(((Job.harvester_id == harvester_id) & (Job.worker_id == worker_id))
                               | Job.panda_id.in_(listed[:1000] or [-1]))
            .order_by(Job.panda_id).limit(MAX_LIMIT))
    return {"page": "worker", "harvester": harvester_id, "workerID": worker_id,
            "worker": {"status": worker.status, "pilotStatus": worker.pilot_status, "queue": worker.computing_site,
                       "batchID": worker.batch_id, "nCore": worker.n_core, "nMemory": worker.n_memory,
                       "walltime": worker.walltime, "submitTime": stamp(worker.submit_time),
                       "startTime": stamp(worker.start_time), "endTime": stamp(worker.end_time),
                       "node": worker.node, "diag": worker.diag, "accessPoint": worker.access_point,
                       "modificationTime": stamp(worker.modification_time)},
            "delivered": delivered(worker), "pandaid_list": listed, "jobs": [job_row(j) for j in jobs]}


def delivered(worker):
    """What the worker's ended allocation delivered, as harvester summed it (docs/harvester.md), or None before
    it reported figures. ``usefulPercent``: payload wall time over the pilot-slot time charged (payload + wait +
    drain)."""
    if worker.elapsed_s is None and worker.payload_wall_s is None:
        return None
    nodes = worker.n_nodes or 1
    slots = None if None in (worker.payload_wall_s, worker.pilot_wait_s, worker.pilot_drain_s) else \
        worker.payload_wall_s + worker.pilot_wait_s + worker.pilot_drain_s
    return {"nodes": nodes, "elapsedSeconds": worker.elapsed_s, "chargeSource": worker.charge_source,
            "chargedNodeHours": None if worker.elapsed_s is None else round(nodes * worker.elapsed_s / 3600, 4),
            "payloadWallSeconds": worker.payload_wall_s, "payloadCpuSeconds": worker.payload_cpu_s,
            "pilotWaitSeconds": worker.pilot_wait_s, "pilotDrainSeconds": worker.pilot_drain_s,
            "jobsRun": worker.jobs_run,
            "usefulPercent": round(100.0 * worker.payload_wall_s / slots, 1) if slots else None}


def tasks_page(f, now=None):
    now = now or states.utcnow()
    return {"page": "tasks", "filters": f.as_dict(), "tasks": task_rows(f, now, f.limit)}


def queues_page():
    rows = []
    for q in queues.queue_list():
        data = q["queuedata"]
        rows.append({"name": q["name"], "status": q["status"], "waiting": q["waiting"], "running": q["running"],
                     "cores": data.get("corecount"), "maxrss": data.get("maxrss"), "why": q["why"]})
    return {"page": "queues", "queues": rows}


def workers_page(params):
    """Workers newest first, filtered by ``queue`` and ``status`` (a worker state)."""
    queue, status = _text(params, "queue"), _text(params, "status")
    if status is not None and status not in WORKER_STATES:
        raise RequestError(f"status: {status[:40]!r} is not a worker state; expected one of {', '.join(WORKER_STATES)}")
    limit = _int(params, "limit", 1, MAX_LIMIT) or 100
    filters = {k: v for k, v in (("queue", queue), ("status", status)) if v}
    return {"page": "workers", "filters": filters, "limit": limit,
            "workers": harvesters.list_workers(queue=queue, status=status, limit=limit)}
