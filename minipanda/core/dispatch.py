"""Dispatch: hand activated jobs to a pilot, each job to exactly one pilot.

A request is one claim: a single ``UPDATE job SET status='sent' ... WHERE panda_id IN (best matching activated
jobs) AND status='activated' RETURNING <the job row>`` in one write transaction. SQLite serialises writers, so two
claims can never see the same activated row; PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` to the pick so concurrent
claims take different rows instead of waiting on each other.

The claim statement is the hottest query of the server, so it is written out once per offer shape (which optional
limits the pilot sent, how many labels, which pilot columns are set) and cached, instead of being rebuilt by the
ORM on every request: peewee spent ~1.5 ms per claim rendering the UPDATE, its sub-select (twice) and a second
SELECT of the full job rows, against ~0.1 ms that SQLite needed to run them. RETURNING hands back the claimed rows,
so no second query reads them. Dispatch writes only the pick (which jobs, best first); the UPDATE itself is
:func:`minipanda.core.states.change_picked_jobs`, the bulk twin of ``change_job_status``: the same table check,
time stamps and status_log rows.
"""
import dataclasses
import functools
import logging
from typing import Optional

import peewee
from minipanda.core import db, jobspec, models, policy, states
from minipanda.core.db import database
from minipanda.core.states import JobStatus

log = logging.getLogger(__name__)

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
    # The job labels this pilot may claim on this queue (policy.claimable_labels); None: the pilot label's group.
    labels: Optional[tuple] = None


# Optional offer limits, in the order their conditions appear in the claim's pick: (Offer attribute, Job column).
_LIMITS = (("cores", "core_count"), ("memory_mb", "min_ram_count"), ("disk_mb", "max_disk_count"),
           ("walltime_s", "max_walltime"))
_PILOT_COLUMNS = ("node", "pilot_id", "batch_id", "harvester_id", "worker_id")


def _limit_values(offer):
    """[(Job column, value)] of the limits this offer sets; disk 0 means "unknown" (pilot3 without maxwdir)."""
    return [(column, getattr(offer, attr)) for attr, column in _LIMITS
            if getattr(offer, attr) is not None and (attr != "disk_mb" or getattr(offer, attr))]


@functools.lru_cache(maxsize=256)
def _pick_statement(param, postgres, n_labels, limit_columns):
    """The SELECT of the jobs one offer shape claims, best first. Parameters, in order: status, queue, the labels,
    the limits (``limit_columns``), the row limit."""
    def q(name):
        return '"%s"' % name

    conditions = [f"{q('status')} = {param}", f"{q('computing_site')} = {param}",
                  f"{q('prod_source_label')} IN ({', '.join([param] * n_labels)})"]
    conditions += [f"{q(column)} <= {param}" for column in limit_columns]
    pick = (f"SELECT {q('panda_id')} FROM {q(models.Job._meta.table_name)} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {q('current_priority')} DESC, {q('panda_id')} LIMIT {param}")
    return pick + " FOR UPDATE SKIP LOCKED" if postgres else pick


@functools.lru_cache(maxsize=64)
def _files_statement(param, n_ids):
    JobFile = models.JobFile
    columns = ", ".join('"%s"' % field.column_name for field in JobFile._meta.sorted_fields)
    return (f'SELECT {columns} FROM "{JobFile._meta.table_name}" WHERE "{JobFile.job.column_name}" IN '
            f'({", ".join([param] * n_ids)}) ORDER BY "{JobFile.row_id.column_name}"')


_PLAIN_FIELDS = (peewee.IntegerField, peewee.CharField, peewee.TextField)


def _as_models(model, columns, rows):
    """``rows`` (tuples in ``columns`` order) as ``model`` instances, converted as peewee would convert them.

    peewee's own row wrapper resolves the columns on every query and sets each field through its descriptor; for a
    bulk claim of 100 jobs x 58 columns that was half of the server's time. Here the row dict is filled directly.
    """
    by_column = model._meta.columns
    fields = [by_column[column] for column in columns]
    names = [field.name for field in fields]
    # Integers and strings arrive from both drivers as Python ints and strs already; only the other field types
    # (times, booleans) need peewee's conversion, and skipping the rest halves the cost of a bulk claim.
    converters = [(field.name, field.python_value) for field in fields if not isinstance(field, _PLAIN_FIELDS)]
    out = []
    for row in rows:
        instance = model(__no_default__=1)
        data = dict(zip(names, row))
        for name, convert in converters:
            if data[name] is not None:
                data[name] = convert(data[name])
        instance.__data__ = data
        out.append(instance)
    return out


def _load_files(panda_ids):
    """{panda_id: [JobFile, ...]}, as jobspec.load_files, from a statement cached per id count."""
    by_job = {pid: [] for pid in panda_ids}
    cursor = database.execute_sql(_files_statement(database.param, len(panda_ids)), panda_ids)
    columns = [description[0] for description in cursor.description]
    for f in _as_models(models.JobFile, columns, cursor.fetchall()):
        by_job[f.panda_id].append(f)
    return by_job


def claim_jobs(offer, now=None):
    """Atomically move up to ``offer.n_jobs`` best-matching jobs activated -> sent; return their definitions."""
    Job = models.Job
    n_jobs = max(1, min(int(offer.n_jobs), MAX_JOBS_PER_REQUEST))
    now = now or states.utcnow()
    source, target = JobStatus.ACTIVATED, JobStatus.SENT
    fields = {Job.heartbeat_time: now}
    fields.update({getattr(Job, column): getattr(offer, column) for column in _PILOT_COLUMNS
                   if getattr(offer, column) is not None})
    labels = list(policy.job_labels(offer.prod_source_label) if offer.labels is None else offer.labels)
    if not labels:
        return []
    limits = _limit_values(offer)
    pick = _pick_statement(database.param, db.is_postgres(), len(labels), tuple(c for c, _ in limits))
    pick_params = [source.value, offer.queue] + labels + [v for _, v in limits] + [n_jobs]
    with database.atomic():
        columns, rows = states.change_picked_jobs(pick, pick_params, source, target,
                                                  f"dispatched to {offer.node or 'a pilot'} on {offer.queue}",
                                                  fields=fields, now=now)
        if not rows:
            return []
        jobs = _as_models(Job, columns, rows)
        files = _load_files([job.panda_id for job in jobs])
    jobs.sort(key=lambda j: (-j.current_priority, j.panda_id))
    return [jobspec.job_definition(job, files[job.panda_id]) for job in jobs]
