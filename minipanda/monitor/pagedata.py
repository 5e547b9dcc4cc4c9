"""Each monitor page's data, as plain JSON values: what the template shows is exactly what ``?json`` returns. The
page's filters are :mod:`minipanda.monitor.filters`, the rows and counts it shows :mod:`minipanda.monitor.queries`.
Counts are over everything that matches; lists stop at ``limit`` rows.
"""
import dataclasses
import json

from peewee import fn

from minipanda.core import archive, counts as live_counts, jobs as job_service, models, queues, states
from minipanda.core.states import JobStatus
from minipanda.errors import RequestError
from minipanda.monitor import charts, errorcodes
from minipanda.monitor.filters import JOB_STATES, MAX_LIMIT, text, whole_number
from minipanda.monitor.queries import (WAITING_STATES, WORKER_STATES, harvester_rows, job_list, job_row, jobs_by_queue,
                                       ordered, recent_errors, stamp, task_rows, worker_statistics, workers_by_queue)
from minipanda.tasks import service as task_service, why
from minipanda.workers import harvesters


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
            "input_statistics": counts, "job_summary": {s: summary[s] for s in ordered(set(summary), JOB_STATES)},
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
            "jobs_by_state": {s: by_state[s] for s in ordered(set(by_state), JOB_STATES)},
            "workers_by_state": {s: workers[s] for s in ordered(set(workers), WORKER_STATES)},
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
    queue, status = text(params, "queue"), text(params, "status")
    if status is not None and status not in WORKER_STATES:
        raise RequestError(f"status: {status[:40]!r} is not a worker state; expected one of {', '.join(WORKER_STATES)}")
    limit = whole_number(params, "limit", 1, MAX_LIMIT) or 100
    filters = {k: v for k, v in (("queue", queue), ("status", status)) if v}
    return {"page": "workers", "filters": filters, "limit": limit,
            "workers": harvesters.list_workers(queue=queue, status=status, limit=limit)}
