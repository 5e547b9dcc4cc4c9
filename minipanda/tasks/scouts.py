"""Scouts: the first jobs of a task measure what the rest will need.

When every scout chunk (the first ``nScouts`` chunks) is final: if some scouts finished, the task's memory becomes
the 75th percentile of their peak memory (PSS, else RSS) plus 10 %, and its walltime the longest scout walltime
plus 50 % (at least + 60 s); the task goes ``scouted`` and the generator makes the rest with those requirements
(avalanche). If all scouts failed, the task goes ``broken`` with the first scout's error: the rest would fail the
same way.
"""
import logging
import math

from minipanda.core import models, states
from minipanda.core.db import database
from minipanda.core.states import JobStatus, TaskStatus

log = logging.getLogger(__name__)
FINAL_INPUT = ("finished", "failed")


def percentile(values, pct):
    """The ``pct`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def measurements(task_id):
    """[(peak memory MB or None, walltime s or None)] of the task's finished scout jobs."""
    Job = models.Job
    out = []
    for job in Job.select().where(Job.task_id == task_id, Job.scout == True,  # noqa: E712 (SQL comparison)
                                  Job.status == JobStatus.FINISHED.value):
        peak = job.max_pss or job.max_rss
        wall = (job.end_time - job.start_time).total_seconds() if job.start_time and job.end_time else None
        out.append((peak / 1024 if peak else None, wall))
    return out


def first_error(task_id):
    """The error of the task's first failed scout, in words."""
    Job = models.Job
    job = (Job.select().where(Job.task_id == task_id, Job.scout == True,  # noqa: E712
                              Job.status.in_([JobStatus.FAILED.value, JobStatus.CLOSED.value,
                                              JobStatus.CANCELLED.value]))
           .order_by(Job.panda_id).first())
    if job is None:
        return "no scout job ran"
    for source, code, diag in (("pilot", job.pilot_error_code, job.pilot_error_diag),
                               ("exe", job.exe_error_code, job.exe_error_diag),
                               ("sup", job.sup_error_code, job.sup_error_diag)):
        if code or diag:
            return f"PandaID {job.panda_id}: {source} error {code or ''} {diag or ''}".strip()
    return f"PandaID {job.panda_id} ended {job.status}"


def evaluate(task, settings, now):
    """scouting -> scouted (with measured needs) or broken, once every scout chunk is final."""
    TaskInput = models.TaskInput
    pending = TaskInput.select().where(TaskInput.task_id == task.jedi_task_id, TaskInput.chunk < task.n_scouts,
                                       TaskInput.status.not_in(FINAL_INPUT)).exists()
    if pending:
        return
    finished = TaskInput.select().where(TaskInput.task_id == task.jedi_task_id, TaskInput.chunk < task.n_scouts,
                                        TaskInput.status == "finished").exists()
    with database.atomic():
        if not finished:
            reason = f"all {task.n_scouts} scout jobs failed: {first_error(task.jedi_task_id)}"
            states.change_task_status([task.jedi_task_id], TaskStatus.BROKEN, reason, from_states=[TaskStatus.SCOUTING],
                                      fields={models.Task.error_dialog: reason[:4000]}, now=now)
            log.warning("jediTaskID=%s: %s", task.jedi_task_id, reason)
            return
        fields, notes = needs(task, measurements(task.jedi_task_id), settings)
        states.change_task_status([task.jedi_task_id], TaskStatus.SCOUTED, "scouts done: " + notes,
                                  from_states=[TaskStatus.SCOUTING], fields=fields, now=now)
    log.info("jediTaskID=%s scouted: %s", task.jedi_task_id, notes)


def needs(task, measured, settings):
    """({Task field: value}, words) of the avalanche requirements from scout measurements."""
    fields, notes = {}, []
    memory = [m for m, _ in measured if m]
    if memory:
        pct = settings.get("scout.ram_percentile")
        ram = math.ceil(percentile(memory, pct) * (1 + settings.get("scout.ram_margin")))
        fields[models.Task.ram_count] = ram
        notes.append(f"memory {ram} MB ({pct:g}th percentile of {len(memory)} scouts + "
                     f"{settings.get('scout.ram_margin') * 100:g} %, was {task.ram_count} MB)")
    walls = [w for _, w in measured if w]
    if walls:
        # At least a minute more than the longest scout: a job a little slower than the scouts must not be killed.
        longest = max(walls)
        wall = math.ceil(max(longest * (1 + settings.get("scout.walltime_margin")), longest + 60))
        fields[models.Task.walltime] = wall
        notes.append(f"walltime {wall} s (longest scout {longest:.0f} s + "
                     f"{settings.get('scout.walltime_margin') * 100:g} %, at least + 60 s; was {task.walltime} s)")
    return fields, "; ".join(notes) or "no measurements reported, requirements unchanged"
