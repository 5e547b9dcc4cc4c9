"""Job priorities of task jobs: PanDA's per-user formula, scout boost, task override, periodic recompute.

Job n (0-based) of a user who already has T active jobs gets ``1000 - floor((T + n) / 5)``: a fresh user with 100
jobs gets 1000 down to 981, and a user with many jobs waits behind users with few. Scouts get
``priority.scout_boost`` on top, so a task learns its needs quickly. A task with ``taskPriority`` gives all its
jobs exactly that priority. The recompute duty (every 20 minutes by default) re-applies the formula to waiting
jobs, with T = the user's running jobs, so waiting jobs rise as the user's earlier jobs end.
"""
import logging

from minipanda.core import bulk, models
from minipanda.core.db import database
from minipanda.core.states import ACTIVE_JOB_STATES, FINAL_JOB_STATES, JobStatus
from peewee import fn

log = logging.getLogger(__name__)
BASE = 1000
WAITING = (JobStatus.DEFINED.value, JobStatus.ACTIVATED.value)


def formula(active, n):
    """PanDA's user priority of job ``n`` (0-based) when the user has ``active`` jobs already."""
    return BASE - (active + n) // 5


def active_jobs(user):
    """The user's jobs that are not final (queued or running)."""
    Job = models.Job
    # IN over the few non-final states walks the status-first dispatch index; NOT IN would scan every job ever run.
    open_states = [s.value for s in JobStatus if s not in FINAL_JOB_STATES]
    return Job.select(fn.COUNT(Job.panda_id)).where(Job.status.in_(open_states), Job.prod_user_name == user).scalar()


def for_new_jobs(task_priority, active, n_jobs, scout, boost):
    """Priorities of ``n_jobs`` new jobs of one task."""
    if task_priority is not None:
        return [task_priority] * n_jobs
    extra = int(boost) if scout else 0
    return [formula(active, n) + extra for n in range(n_jobs)]


def recompute(settings, now=None):
    """Re-apply the formula to every waiting task job without a task priority; returns how many changed."""
    Job, Task = models.Job, models.Task
    boost = int(settings.get("priority.scout_boost"))
    running = dict(Job.select(Job.prod_user_name, fn.COUNT(Job.panda_id))
                   .where(Job.status.in_([s.value for s in ACTIVE_JOB_STATES])).group_by(Job.prod_user_name).tuples())
    fixed = {tid for (tid,) in Task.select(Task.jedi_task_id).where(Task.task_priority.is_null(False)).tuples()}
    waiting = (Job.select(Job.panda_id, Job.prod_user_name, Job.current_priority, Job.scout, Job.task_id)
               .where(Job.status.in_(WAITING), Job.task_id.is_null(False)).order_by(Job.panda_id).tuples())
    position, changes = {}, []
    for panda_id, user, current, scout, task_id in waiting:
        if task_id in fixed:
            continue
        n = position.get(user, 0)
        position[user] = n + 1
        wanted = formula(running.get(user, 0), n) + (boost if scout else 0)
        if wanted != current:
            changes.append((wanted, panda_id))
    with database.atomic():
        for start in range(0, len(changes), 1000):
            bulk.update_rows("job", ("current_priority",), "panda_id", changes[start:start + 1000])
    if changes:
        log.info("priority recompute: %d waiting jobs of %d users changed", len(changes), len(position))
    return len(changes)
