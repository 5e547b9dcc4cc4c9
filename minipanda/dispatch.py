"""Dispatch: hand activated jobs to a pilot, each job to exactly one pilot.

A request is one claim: a single ``UPDATE job SET status='sent' ... WHERE panda_id IN (best matching activated
jobs) AND status='activated' RETURNING panda_id`` in one write transaction. SQLite serialises writers, so two
claims can never see the same activated row; PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` to the pick so concurrent
claims take different rows instead of waiting on each other.
"""
import dataclasses
import logging
from typing import Optional

from minipanda import db, jobspec, models, states
from minipanda.db import database
from minipanda.states import JobStatus

log = logging.getLogger(__name__)

# Which job labels a pilot of a given prodSourceLabel may run (PanDA's grouping, simplified).
LABELS_FOR_PILOT = {
    "managed": ["managed"],
    "user": ["user", "panda"],
    "panda": ["user", "panda"],
    "test": ["test", "prod_test", "ptest"],
    "ptest": ["test", "prod_test", "ptest"],
    "prod_test": ["test", "prod_test", "ptest"],
    "rc_test": ["test", "prod_test", "ptest", "rc_test"],
    "unified": ["managed", "user", "panda"],
}
MAX_JOBS_PER_REQUEST = 1000


@dataclasses.dataclass
class Offer:
    """What a pilot offers: where it runs and what room it has. None means "not told"."""

    queue: str
    prod_source_label: str = "managed"
    cores: Optional[int] = None
    memory_mb: Optional[int] = None
    disk_mb: Optional[int] = None
    walltime_s: Optional[int] = None
    n_jobs: int = 1
    node: Optional[str] = None
    pilot_id: Optional[str] = None
    batch_id: Optional[str] = None
    harvester_id: Optional[str] = None
    worker_id: Optional[int] = None


def matching_jobs(offer):
    """The ordered, limited sub-select of activated job ids this offer may take."""
    Job = models.Job
    labels = LABELS_FOR_PILOT.get(offer.prod_source_label, [offer.prod_source_label])
    conditions = [
        Job.status == JobStatus.ACTIVATED.value,
        Job.computing_site == offer.queue,
        Job.prod_source_label.in_(labels),
    ]
    if offer.cores is not None:
        conditions.append(Job.core_count <= offer.cores)
    if offer.memory_mb is not None:
        conditions.append(Job.min_ram_count <= offer.memory_mb)
    if offer.disk_mb:  # pilot3 sends 0 when the queue has no maxwdir: that means "unknown", not "full"
        conditions.append(Job.max_disk_count <= offer.disk_mb)
    if offer.walltime_s is not None:
        conditions.append(Job.max_walltime <= offer.walltime_s)
    query = (Job.select(Job.panda_id).where(*conditions)
             .order_by(Job.current_priority.desc(), Job.panda_id).limit(offer.n_jobs))
    if db.is_postgres():
        query = query.for_update("FOR UPDATE SKIP LOCKED")
    return query


def claim_jobs(offer, now=None):
    """Atomically move up to ``offer.n_jobs`` best-matching jobs activated -> sent; return their definitions."""
    n_jobs = max(1, min(int(offer.n_jobs), MAX_JOBS_PER_REQUEST))
    offer = dataclasses.replace(offer, n_jobs=n_jobs)
    fields = {models.Job.heartbeat_time: now or states.utcnow()}
    for column, value in (("node", offer.node), ("pilot_id", offer.pilot_id), ("batch_id", offer.batch_id),
                          ("harvester_id", offer.harvester_id), ("worker_id", offer.worker_id)):
        if value is not None:
            fields[getattr(models.Job, column)] = value
    with database.atomic():
        changed = states.change_job_status(
            matching_jobs(offer), JobStatus.SENT, f"dispatched to {offer.node or 'a pilot'} on {offer.queue}",
            from_states=[JobStatus.ACTIVATED], fields=fields, now=now)
        ids = [pid for pid, _ in changed]
        if not ids:
            return []
        jobs = {j.panda_id: j for j in models.Job.select().where(models.Job.panda_id.in_(ids))}
        files = jobspec.load_files(ids)
    ordered = sorted(jobs.values(), key=lambda j: (-j.current_priority, j.panda_id))
    return [jobspec.job_definition(job, files[job.panda_id]) for job in ordered]
