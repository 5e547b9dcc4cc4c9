"""The settle duty: the task side of a job's end.

For every task job that reached a final state and is not settled yet: a finished job's inputs become finished
and its outputs and log are registered in the task's datasets (size, checksum, location as the pilot reported
them); a failed job goes to the retry module (its inputs become ready again for a new attempt, or failed); a
cancelled job's inputs fail. Then tasks whose work is over complete: running or finishing -> prepared ->
done (every input finished) | finished (some) | failed (none); aborting -> aborted.
"""
import logging
import os

from minipanda.core import bulk, models, states
from minipanda.core.db import database
from minipanda.core.states import ACTIVE_JOB_STATES, FINAL_JOB_STATES, JobStatus, TaskStatus
from minipanda.tasks import retry
from peewee import fn

log = logging.getLogger(__name__)
FINAL = [s.value for s in FINAL_JOB_STATES]
NOT_FINAL = [s.value for s in JobStatus if s not in FINAL_JOB_STATES]
BATCH = 2000
ENDED_COLUMNS = (models.Job.panda_id, models.Job.task_id, models.Job.status, models.Job.command_to_pilot)
OUTPUT_COLUMNS = ("dataset_id", "lfn", "guid", "fsize", "checksum", "location", "status", "panda_id", "creation_time")
RETRYABLE_TASK_STATES = {TaskStatus.READY.value, TaskStatus.SCOUTING.value, TaskStatus.SCOUTED.value,
                         TaskStatus.RUNNING.value, TaskStatus.PAUSED.value, TaskStatus.PENDING.value,
                         TaskStatus.TORETRY.value}


def run(settings, now=None, wake=None):
    """Settle final jobs, mark running inputs, complete tasks; returns {"settled", "retries", "completed"}.

    ``wake(duty name)`` runs another duty early: the generator, when retries or scout results are waiting.
    """
    now = now or states.utcnow()
    out = {"settled": 0, "retries": 0, "completed": 0}
    Job = models.Job
    while True:
        # only what settling reads (every column of a job row cost more to render and read than the settling):
        # the rows of jobs that did not finish are read whole, for the retry rules
        jobs = list(Job.select(*ENDED_COLUMNS).where(Job.settled == False, Job.status.in_(FINAL))  # noqa: E712
                    .order_by(Job.panda_id).limit(BATCH))
        if not jobs:
            break
        with database.atomic():
            retries = settle_jobs(jobs, now)
        out["settled"] += len(jobs)
        out["retries"] += retries
        if len(jobs) < BATCH:
            break
    mark_running()
    out["completed"] = complete_tasks(now)
    if (out["retries"] or out["settled"]) and wake:
        wake("generator")
    return out


def settle_jobs(jobs, now):
    """Apply the outcome of each final job to its task's inputs; returns how many inputs go back for retry."""
    tasks = {t.jedi_task_id: t for t in models.Task.select(models.Task.jedi_task_id, models.Task.status).where(
        models.Task.jedi_task_id.in_(list({j.task_id for j in jobs})))}
    retries = 0
    finished = [job.panda_id for job in jobs if job.status == JobStatus.FINISHED.value]
    others = [job.panda_id for job in jobs if job.status != JobStatus.FINISHED.value]
    if others:  # failed, cancelled, closed: the whole rows, which the retry rules read
        rules = retry.active_rules()
        whole = {job.panda_id: job for job in models.Job.select().where(models.Job.panda_id.in_(others))}
        jobs = [whole.get(job.panda_id, job) for job in jobs]
    if finished:  # the common case, for the whole batch at once: one UPDATE of the inputs, one outputs' insert
        for start in range(0, len(finished), 500):
            models.TaskInput.update(status="finished").where(
                models.TaskInput.panda_id.in_(finished[start:start + 500])).execute()
        register_outputs(finished, now)
    for job in jobs:
        task = tasks.get(job.task_id)
        if job.status == JobStatus.FINISHED.value:
            continue
        elif (job.status == JobStatus.CANCELLED.value or job.command_to_pilot == "tobekilled" or task is None
              or task.status not in RETRYABLE_TASK_STATES):  # a job someone killed is not retried
            _inputs(job, "failed")
        else:
            verdict = retry.decide(job, rules)
            states.note_jobs([(job.panda_id, job.status)], verdict.reason, now)
            if verdict.retry:
                _inputs(job, "ready", ram=verdict.ram, walltime=verdict.walltime)
                retries += 1
            else:
                _inputs(job, "failed")
    models.Job.update(settled=True).where(models.Job.panda_id.in_([j.panda_id for j in jobs])).execute()
    return retries


def _inputs(job, status, ram=None, walltime=None):
    TaskInput = models.TaskInput
    values = {TaskInput.status: status}
    if ram:
        values[TaskInput.ram_count] = ram
    if walltime:
        values[TaskInput.walltime] = walltime
    TaskInput.update(values).where(TaskInput.panda_id == job.panda_id).execute()


def register_outputs(panda_ids, now):
    """Add the finished jobs' outputs and logs to their tasks' datasets (a few statements per 500 jobs, not per job:
    this duty runs every few seconds over every job that ended). A file its dataset already holds is left as it is.
    The rows go in as plain parameters: peewee's multi-row insert rendered each value through the model layer, and
    that cost most of the duty's CPU while short jobs flowed (bench/README.md, round 8)."""
    JobFile, Dataset = models.JobFile, models.Dataset
    created = bulk.time_param(models.DatasetFile.creation_time.db_value(now))
    for start in range(0, len(panda_ids), 500):
        files = list(JobFile.select(JobFile.job, JobFile.dataset, JobFile.lfn, JobFile.guid, JobFile.fsize,
                                    JobFile.checksum, JobFile.surl)
                     .where(JobFile.job.in_(panda_ids[start:start + 500]), JobFile.type.in_(["output", "log"]))
                     .tuples())
        names = {f[1] for f in files if f[1]}
        ids = {d.name: d.id for d in Dataset.select(Dataset.id, Dataset.name).where(Dataset.name.in_(list(names)))} \
            if names else {}
        rows = [(ids[dataset], lfn, guid or "", fsize or 0, checksum or "", os.path.dirname(surl) if surl else "",
                 "ready" if surl else "unknown", panda_id, created)
                for panda_id, dataset, lfn, guid, fsize, checksum, surl in files if dataset in ids]
        bulk.insert_rows(models.DatasetFile._meta.table_name, OUTPUT_COLUMNS, rows, skip_existing=True)


def mark_running():
    """Inputs whose job is running say so (PanDA's ``running`` input state)."""
    Job, TaskInput = models.Job, models.TaskInput
    running = Job.select(Job.panda_id).where(Job.settled == False,  # noqa: E712
                                             Job.status.in_([s.value for s in ACTIVE_JOB_STATES]))
    if not TaskInput.select().where(TaskInput.status == "picked", TaskInput.panda_id.in_(running)).exists():
        return  # most cycles: nothing to mark, and no write transaction taken for it
    with database.atomic():
        TaskInput.update(status="running").where(TaskInput.status == "picked",
                                                 TaskInput.panda_id.in_(running)).execute()


def complete_tasks(now):
    """Finish tasks whose work is over; returns how many changed."""
    Task = models.Task
    candidates = Task.select(Task.jedi_task_id, Task.status).where(
        Task.status.in_([TaskStatus.RUNNING.value, TaskStatus.FINISHING.value, TaskStatus.ABORTING.value]))
    changed = 0
    for task in list(candidates):
        with database.atomic():
            changed += _complete(task, now)
    return changed


def _open_jobs(task_id):
    """Whether a job of the task is still active or not settled yet. Each look goes through an index that holds
    few entries (the task's active jobs; the jobs ended and not settled, all tasks together: what ended since this
    cycle settled the rest), never through the task's ended jobs: one condition with an OR read every one of them,
    each cycle, once the task's last jobs ran."""
    Job = models.Job
    if Job.select().where(Job.task_id == task_id, Job.status.in_(NOT_FINAL)).exists():
        return True
    # asked after the look above: a job that ended in between is among these
    unsettled = Job.select(Job.task_id).where(Job.settled == False, Job.status.in_(FINAL))  # noqa: E712
    return any(owner == task_id for (owner,) in unsettled.tuples())


def _complete(task, now):
    if _open_jobs(task.jedi_task_id):
        return 0
    TaskInput = models.TaskInput
    counts = dict(TaskInput.select(TaskInput.status, fn.COUNT(TaskInput.row_id))
                  .where(TaskInput.task_id == task.jedi_task_id).group_by(TaskInput.status).tuples())
    if task.status == TaskStatus.ABORTING.value:
        return len(states.change_task_status([task.jedi_task_id], TaskStatus.ABORTED, "all jobs ended after the kill",
                                             from_states=[TaskStatus.ABORTING], now=now))
    if task.status == TaskStatus.RUNNING.value and any(counts.get(s) for s in ("ready", "picked", "running")):
        return 0  # inputs still to process (or waiting for the generator)
    done, total = counts.get("finished", 0), sum(counts.values())
    final = TaskStatus.DONE if done == total else TaskStatus.FINISHED if done else TaskStatus.FAILED
    words = f"{done} of {total} inputs finished"
    states.change_task_status([task.jedi_task_id], TaskStatus.PREPARED, words, from_states=[task.status], now=now)
    fields = {models.Task.error_dialog: words} if final == TaskStatus.FAILED else {}
    states.change_task_status([task.jedi_task_id], final, words, from_states=[TaskStatus.PREPARED], fields=fields,
                              now=now)
    log.info("jediTaskID=%s %s: %s", task.jedi_task_id, final.value, words)
    return 1
