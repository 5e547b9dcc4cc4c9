"""Dispatch: hand activated jobs to a pilot, each job to exactly one pilot.

A request is one claim: a single ``UPDATE job SET status='sent' ... WHERE panda_id IN (best matching activated
jobs) AND status='activated' RETURNING <the job row>`` in one write transaction. SQLite serialises writers, so two
claims can never see the same activated row; PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` to the pick so concurrent
claims take different rows instead of waiting on each other.

The claim statement is the hottest query of the server, so it is written out once per offer shape (which optional
limits the pilot sent, how many labels, which pilot columns are set) and cached, instead of being rebuilt by the
ORM on every request: peewee spent ~1.5 ms per claim rendering the UPDATE, its sub-select (twice) and a second
SELECT of the full job rows, against ~0.1 ms that SQLite needed to run them. RETURNING hands back the claimed rows,
so no second query reads them. The transition itself still follows :mod:`minipanda.states`: the same table check,
time stamps and status_log rows as :func:`states.change_job_status`.
"""
import dataclasses
import functools
import logging
from typing import Optional

import peewee

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
    queue_labels: Optional[tuple] = None  # the queue's prodSourceLabels, when its configuration restricts them


# Optional offer limits, in the order their conditions appear in the claim's pick: (Offer attribute, Job column).
_LIMITS = (("cores", "core_count"), ("memory_mb", "min_ram_count"), ("disk_mb", "max_disk_count"),
           ("walltime_s", "max_walltime"))
_PILOT_COLUMNS = ("node", "pilot_id", "batch_id", "harvester_id", "worker_id")


def _limit_values(offer):
    """[(Job column, value)] of the limits this offer sets; disk 0 means "unknown" (pilot3 without maxwdir)."""
    return [(column, getattr(offer, attr)) for attr, column in _LIMITS
            if getattr(offer, attr) is not None and (attr != "disk_mb" or getattr(offer, attr))]


@functools.lru_cache(maxsize=256)
def _claim_statement(param, postgres, n_labels, limit_columns, set_columns):
    """The claim's SQL for one offer shape. Parameters, in order: the SET values (``set_columns``), then
    status, queue, the labels, the limits (``limit_columns``), the row limit, and the from-status again."""
    Job = models.Job
    table = Job._meta.table_name

    def q(name):
        return '"%s"' % name

    returning = ", ".join(q(field.column_name) for field in Job._meta.sorted_fields)
    conditions = [f"{q('status')} = {param}", f"{q('computing_site')} = {param}",
                  f"{q('prod_source_label')} IN ({', '.join([param] * n_labels)})"]
    conditions += [f"{q(column)} <= {param}" for column in limit_columns]
    pick = (f"SELECT {q('panda_id')} FROM {q(table)} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {q('current_priority')} DESC, {q('panda_id')} LIMIT {param}")
    if postgres:
        pick += " FOR UPDATE SKIP LOCKED"
    assignments = ", ".join(f"{q(column)} = {param}" for column in set_columns)
    # The re-check of the status must not drive the UPDATE: SQLite and PostgreSQL both chose to walk the
    # (status, ...) index, i.e. every activated job of every queue, per claim, filtering it against the picked ids
    # (claims got slower the fuller the queues). As an expression, ``status || ''`` cannot use an index, so the
    # picked ids drive the UPDATE through the primary key and the status is checked on those rows only.
    recheck = f"({q('status')} || '')"
    # PostgreSQL would plan "IN (pick)" as a semi-join and re-run the locking pick per row, claiming more than
    # LIMIT rows; "= ANY(ARRAY(pick))" evaluates the pick exactly once.
    chosen = f"= ANY(ARRAY({pick}))" if postgres else f"IN ({pick})"
    return (f"UPDATE {q(table)} SET {assignments} WHERE {q('panda_id')} {chosen} AND {recheck} = {param} "
            f"RETURNING {returning}")


@functools.lru_cache(maxsize=64)
def _files_statement(param, n_ids):
    JobFile = models.JobFile
    columns = ", ".join('"%s"' % field.column_name for field in JobFile._meta.sorted_fields)
    return (f'SELECT {columns} FROM "{JobFile._meta.table_name}" WHERE "{JobFile.job.column_name}" IN '
            f'({", ".join([param] * n_ids)}) ORDER BY "{JobFile.row_id.column_name}"')


_PLAIN_FIELDS = (peewee.IntegerField, peewee.CharField, peewee.TextField)


def _fetch(model, sql, params):
    """Run ``sql`` and return its rows as ``model`` instances, converted as peewee would convert them.

    peewee's own row wrapper resolves the columns on every query and sets each field through its descriptor; for a
    bulk claim of 100 jobs x 58 columns that was half of the server's time. Here the row dict is filled directly.
    """
    cursor = database.execute_sql(sql, params)
    by_column = model._meta.columns
    fields = [by_column[description[0]] for description in cursor.description]
    names = [field.name for field in fields]
    # Integers and strings arrive from both drivers as Python ints and strs already; only the other field types
    # (times, booleans) need peewee's conversion, and skipping the rest halves the cost of a bulk claim.
    converted = [i for i, field in enumerate(fields) if not isinstance(field, _PLAIN_FIELDS)]
    converters = [(names[i], fields[i].python_value) for i in converted]
    out = []
    for row in cursor.fetchall():
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
    for f in _fetch(models.JobFile, _files_statement(database.param, len(panda_ids)), panda_ids):
        by_job[f.panda_id].append(f)
    return by_job


def claim_jobs(offer, now=None):
    """Atomically move up to ``offer.n_jobs`` best-matching jobs activated -> sent; return their definitions."""
    Job = models.Job
    n_jobs = max(1, min(int(offer.n_jobs), MAX_JOBS_PER_REQUEST))
    now = now or states.utcnow()
    source, target = JobStatus.ACTIVATED, JobStatus.SENT
    states.check_job_transition(source, target)
    # The same column values change_job_status would write: state stamps, then the pilot's own columns.
    values = {field.column_name: field.db_value(value) for field, value in states._time_fields(target, now).items()}
    values[Job.heartbeat_time.column_name] = Job.heartbeat_time.db_value(now)
    for column in _PILOT_COLUMNS:
        value = getattr(offer, column)
        if value is not None:
            values[column] = getattr(Job, column).db_value(value)
    labels = [label for label in LABELS_FOR_PILOT.get(offer.prod_source_label, [offer.prod_source_label])
              if offer.queue_labels is None or label in offer.queue_labels]
    if not labels:
        return []
    limits = _limit_values(offer)
    set_columns = tuple(values)
    sql = _claim_statement(database.param, db.is_postgres(), len(labels), tuple(c for c, _ in limits), set_columns)
    params = ([values[c] for c in set_columns] + [source.value, offer.queue] + list(labels) + [v for _, v in limits]
              + [n_jobs, source.value])
    with database.atomic():
        jobs = _fetch(Job, sql, params)
        if not jobs:
            return []
        ids = [job.panda_id for job in jobs]
        states.log_transitions([(pid, source.value) for pid in ids], target,
                               f"dispatched to {offer.node or 'a pilot'} on {offer.queue}", now)
        files = _load_files(ids)
    jobs.sort(key=lambda j: (-j.current_priority, j.panda_id))
    return [jobspec.job_definition(job, files[job.panda_id]) for job in jobs]
