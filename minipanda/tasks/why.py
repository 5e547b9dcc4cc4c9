"""``minipanda why PANDAID``: why a job is where it is, in plain words.

Reads what the server already knows: the job's state and errors, its task, the brokerage decision that placed it
(every queue's verdict), its queue's status, the jobs ahead of it, and the retry verdict in its state history. A
job the retention duty archived is found in the archive and said to be so.
"""
import json

from minipanda.core import archive, counts, models, states
from minipanda.core.states import JobStatus
from minipanda.errors import RequestError
from minipanda.tasks import brokerage
from peewee import fn



def explain(panda_id, now=None, seen=None):
    """{"PandaID", "status", "lines": [sentences], "brokerage": [candidate verdicts] or None}.

    ``seen``: a dict the caller passes to every call when it explains many jobs at once (the monitor's queue page:
    20 waiting jobs of one queue, mostly of one task); the task, queue and brokerage rows are then read once, and
    a job row the caller has just read can be put there as ``seen[("job", panda_id)]``, and the activated jobs
    ahead of it in dispatch order as ``seen[("ahead", panda_id)]``."""
    job = _cached(seen, ("job", panda_id), lambda: models.Job.get_or_none(models.Job.panda_id == panda_id))
    found = None
    if job is None:
        found = archive.find("job", panda_id)
        if found is None:
            raise RequestError(f"job {panda_id} not found", http=404)
        job = found.first("job")
    now = now or states.utcnow()
    task = _cached(seen, ("task", job.task_id), lambda: _task(job.task_id)) if job.task_id else None
    lines = [_headline(job, task)]
    if found is not None:
        lines.append(f"it is archived ({found.where}): it ended at {job.state_changed_time:%Y-%m-%d %H:%M:%S} and "
                     "was moved out of the live tables by the retention duty; what is shown is read-only")
        lines += _final(job, found.rows["status_log"])
        return {"PandaID": job.panda_id, "status": job.status, "lines": lines, "brokerage": None,
                "archived": found.where}
    if task is not None and task.status in ("paused", "finishing", "aborting"):
        lines.append(f"its task {task.jedi_task_id} is {task.status}: no new jobs or retries are made for it")
    status = JobStatus(job.status)
    if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CLOSED, JobStatus.CANCELLED):
        lines += _final(job)
    elif status in (JobStatus.PENDING, JobStatus.DEFINED, JobStatus.ASSIGNED) and not job.computing_site:
        lines += _unplaced(job)
    elif status in (JobStatus.PENDING, JobStatus.DEFINED, JobStatus.ASSIGNED, JobStatus.ACTIVATED):
        lines += _queued(job, seen)
    else:
        lines += _running(job, now)
    decision = _cached(seen, ("brokerage", job.brokerage_id), lambda: models.Brokerage.get_or_none(
        models.Brokerage.id == job.brokerage_id)) if job.brokerage_id else None
    candidates = json.loads(decision.candidates) if decision else None
    if candidates:
        lines.append(f"brokerage at {decision.time:%Y-%m-%d %H:%M:%S} ({decision.outcome}):")
        for c in candidates:
            verdict = "kept" if c["kept"] else "skipped: " + "; ".join(c["reasons"])
            chosen = " <- this job" if c["queue"] == job.computing_site else ""
            lines.append(f"  {c['queue']}: {verdict} (running {c['running']}, queued {c['queued']}, "
                         f"weight {c['weight']}){chosen}")
    return {"PandaID": job.panda_id, "status": job.status, "lines": lines, "brokerage": candidates}


def _cached(seen, key, fetch):
    """``fetch()``, or what it gave for ``key`` earlier in this ``seen`` (None: no memory)."""
    if seen is None:
        return fetch()
    if key not in seen:
        seen[key] = fetch()
    return seen[key]


def _headline(job, task):
    where = f" on queue {job.computing_site}" if job.computing_site else ", not placed on any queue"
    owner = f" of task {task.jedi_task_id} ({task.task_name}, {task.status})" if task else ""
    scout = " scout" if job.scout else ""
    return (f"job {job.panda_id} (attempt {job.attempt_nr}{scout}{owner}) is {job.status}{where}, priority "
            f"{job.current_priority}")


def _task(task_id):
    """The job's task, live or archived."""
    task = models.Task.get_or_none(models.Task.jedi_task_id == task_id)
    if task is None:
        found = archive.find("task", task_id)
        task = found.first("task") if found else None
    return task


def _final(job, history=None):
    """Errors, the retry verdict and the next attempt of a job that ended; ``history``: its archived state rows."""
    lines = []
    for source, code, diag in (("pilot", job.pilot_error_code, job.pilot_error_diag),
                               ("payload", job.exe_error_code, job.exe_error_diag),
                               ("server", job.sup_error_code, job.sup_error_diag)):
        if code or diag:
            lines.append(f"{source} error {code if code is not None else ''}: {diag or '(no message)'}")
    if job.status == JobStatus.FAILED.value and job.trans_exit_code:
        lines.append(f"the payload exited with code {job.trans_exit_code}")
    if history is None:
        log = (models.StatusLog.select().where(models.StatusLog.panda_id == job.panda_id,
                                               models.StatusLog.old_status == models.StatusLog.new_status)
               .order_by(models.StatusLog.id.desc()).first())
    else:
        log = next((r for r in reversed(history) if r.old_status == r.new_status), None)
    if log is not None:
        lines.append(f"retry module: {log.reason}")
    child = models.Job.select(models.Job.panda_id).where(models.Job.task_id == job.task_id,
                                                         models.Job.attempt_nr == job.attempt_nr + 1,
                                                         models.Job.attributes.contains(f'"parentID": {job.panda_id}'))
    retried = child.first() if job.task_id else None
    if retried is not None:
        lines.append(f"its input is being processed again by job {retried.panda_id}")
    return lines


def _unplaced(job):
    decision = models.Brokerage.get_or_none(models.Brokerage.id == job.brokerage_id) if job.brokerage_id else None
    if decision is None:
        return ["no queue has been chosen for it yet"]
    return [f"it is not running because {decision.outcome}; the generator tries again every cycle"]


def _queued(job, seen=None):
    Job = models.Job
    lines = []
    queue = _cached(seen, ("queue", job.computing_site),
                    lambda: models.Queue.get_or_none(models.Queue.name == job.computing_site))
    if queue is None:
        lines.append(f"queue {job.computing_site} is not known to the server")
    elif queue.status != "online":
        lines.append(f"queue {job.computing_site} is {queue.status}: pilots get no jobs from it")
    # Two ranges of the dispatch index (status, queue, priority desc, id), counted apart: as one OR, SQLite read
    # every activated job of the queue.
    queued = (Job.status == JobStatus.ACTIVATED.value) & (Job.computing_site == job.computing_site)
    ahead = _cached(seen, ("ahead", job.panda_id), lambda: (
        Job.select(fn.COUNT(Job.panda_id)).where(queued, Job.current_priority > job.current_priority).scalar()
        + Job.select(fn.COUNT(Job.panda_id)).where(queued, Job.current_priority == job.current_priority,
                                                  Job.panda_id < job.panda_id).scalar()))
    if ahead:
        lines.append(f"waiting behind {ahead} higher-priority jobs on queue {job.computing_site}")
    else:
        lines.append(f"first in line on queue {job.computing_site}: waiting for a pilot to ask for a job")
    last = _cached(seen, ("last sent", job.computing_site),  # kept by the database: no scan of the jobs
                   lambda: counts.last_entered(job.computing_site, JobStatus.SENT.value))
    lines.append(f"the last job a pilot took from {job.computing_site} was sent at {last:%Y-%m-%d %H:%M:%S}"
                 if last else f"no pilot has taken a job from {job.computing_site} yet")
    lines.append(f"a pilot must offer at least {job.core_count} cores, {job.min_ram_count} MB memory, "
                 f"{job.max_walltime} s walltime and {job.max_disk_count} MB disk, and run "
                 f"{job.prod_source_label} jobs")
    if queue is not None:
        data = json.loads(queue.queuedata or "{}")
        too_large = brokerage.size_reasons(data, job.core_count or 1)
        nodes = brokerage.job_nodes(data, job.core_count or 1)
        if too_large:
            lines.append(f"queue {job.computing_site} can never run it: {too_large[0][1]}")
        elif nodes > 1:
            lines.append(f"it needs {nodes} nodes of {brokerage.node_cores(data)} cores: harvester gives it one "
                         f"worker of {nodes} nodes, whose node list its payload gets")
    return lines


def _running(job, now):
    lines = [f"dispatched at {job.start_time:%Y-%m-%d %H:%M:%S} to {job.node or 'an unnamed node'}"
             + (f" (pilot {job.pilot_id})" if job.pilot_id else "")]
    if job.heartbeat_time:
        age = (now - job.heartbeat_time).total_seconds()
        lines.append(f"last word from its pilot {age:.0f} s ago; the watchdog fails it when the pilot stays silent "
                     "past the queue's lost-heartbeat timeout")
    if job.command_to_pilot == "tobekilled":
        lines.append(f"it was told to stop: {job.sup_error_diag or 'killed'}")
    return lines
