"""Dispatch: hand activated jobs to a pilot, each job to exactly one pilot.

A request is one claim: ``UPDATE job SET status='sent' ... WHERE panda_id IN (best matching activated jobs) AND
status='activated' RETURNING <the job row>`` in a write transaction (on SQLite, the picked rows read as one JSON
row, then the UPDATE by id: :func:`minipanda.core.states.change_picked_jobs`); concurrent single-job claims of
one process share that transaction, one UPDATE each after the other (:class:`GroupCommit`). SQLite serialises writers, so two
claims can never see the same activated row; PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` to the pick so concurrent
claims take different rows instead of waiting on each other.

The claim statement is the hottest query of the server, so it is written out once per offer shape (which optional
limits the pilot sent, how many labels, which pilot columns are set) and cached, instead of being rebuilt by the
ORM on every request: peewee spent ~1.5 ms per claim rendering the UPDATE, its sub-select (twice) and a second
SELECT of the full job rows, against ~0.1 ms that SQLite needed to run them. The claimed rows come back with the
claim, so no second query reads them. Dispatch writes only the pick (which jobs, best first); the UPDATE itself is
:func:`minipanda.core.states.change_picked_jobs`, the bulk twin of ``change_job_status``: the same table check,
time stamps and status_log rows.
"""
import collections
import dataclasses
import functools
import logging
import operator
import threading
from typing import Optional

import orjson
import peewee
from minipanda.core import db, fairshare, jobspec, models, policy, states
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
    """The SELECT of the activated jobs one offer shape claims, best first. Parameters, in order: queue, the
    labels, the limits (``limit_columns``), the row limit. The state is written out, not a parameter: the dispatch
    index covers activated jobs only (minipanda.core.schema.JOB_INDEXES), and a planner uses a partial index only
    for a condition it can see implies the index's own."""
    def q(name):
        return '"%s"' % name

    conditions = [f"{q('status')} = '{JobStatus.ACTIVATED.value}'", f"{q('computing_site')} = {param}",
                  f"{q('prod_source_label')} IN ({', '.join([param] * n_labels)})"]
    conditions += [f"{q(column)} <= {param}" for column in limit_columns]
    pick = (f"SELECT {q('panda_id')} FROM {q(models.Job._meta.table_name)} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {q('current_priority')} DESC, {q('panda_id')} LIMIT {param}")
    return pick + " FOR UPDATE SKIP LOCKED" if postgres else pick


@functools.lru_cache(maxsize=64)
def _files_statement(param, n_ids, as_json=False):
    columns = ", ".join('"%s"' % column for column in jobspec.DEFINITION_FILE_COLUMNS)
    where = f'FROM "{models.JobFile._meta.table_name}" WHERE "panda_id" IN ({", ".join([param] * n_ids)})'
    if as_json:
        return f"SELECT json_group_array(json_array({columns})) {where}"
    return f'SELECT {columns} {where} ORDER BY "row_id"'


# A claimed job and its files as job_definition reads them: plain rows with the columns as attributes. peewee's
# model instances (and their per-field conversions) cost more than the claim's SQL for a bulk claim of 100 jobs.
JobRow = collections.namedtuple("JobRow", jobspec.DEFINITION_COLUMNS)
FileRow = collections.namedtuple("FileRow", jobspec.DEFINITION_FILE_COLUMNS)


def _load_files(panda_ids):
    """{panda_id: [FileRow, ...]} of the given jobs, in row order, from a statement cached per id count."""
    by_job = {pid: [] for pid in panda_ids}
    for row in _file_rows(panda_ids):
        f = FileRow._make(row)
        by_job[f.panda_id].append(f)
    return by_job


def _file_rows(panda_ids):
    """The jobs' file rows (DEFINITION_FILE_COLUMNS), in row order. On SQLite as ONE row of JSON, as a claim reads
    its jobs (states._change_picked_sqlite): each row of a result is a step that lets go of the GIL and must win
    it back, ~100 of them per bulk claim, each a wait for the GIL while the other request threads hold it."""
    if not db.is_postgres():
        try:
            text = database.execute_sql(_files_statement(database.param, len(panda_ids), True),
                                        panda_ids).fetchone()[0]
        except peewee.DataError:
            pass  # the files' JSON is over SQLite's string limit: their rows come one by one
        else:
            return sorted(orjson.loads(text), key=operator.itemgetter(0))  # row_id first: the order they were given
    return database.execute_sql(_files_statement(database.param, len(panda_ids)), panda_ids).fetchall()


def _claim_rows(offer, n_jobs, now):
    """Inside the caller's write transaction: move up to ``n_jobs`` jobs of ``offer`` activated -> sent; return
    their rows as RETURNING gave them (tuples of DEFINITION_COLUMNS, not yet sorted): the caller makes JobRows of
    them after its COMMIT, outside the writer's lock."""
    Job = models.Job
    source, target = JobStatus.ACTIVATED, JobStatus.SENT
    fields = {Job.heartbeat_time: now}
    fields.update({getattr(Job, column): getattr(offer, column) for column in _PILOT_COLUMNS
                   if getattr(offer, column) is not None})
    labels = _labels(offer)
    limits = _limit_values(offer)
    pick = _pick_statement(database.param, db.is_postgres(), len(labels), tuple(c for c, _ in limits))
    pick_params = [offer.queue] + labels + [v for _, v in limits] + [n_jobs]
    return states.change_picked_jobs(pick, pick_params, source, target,
                                     f"dispatched to {offer.node or 'a pilot'} on {offer.queue}",
                                     fields=fields, now=now, returning=jobspec.DEFINITION_COLUMNS, at_most=n_jobs)


def _labels(offer):
    return list(policy.job_labels(offer.prod_source_label) if offer.labels is None else offer.labels)


def _definitions(rows):
    """The definitions of claimed jobs (their RETURNING rows), best first, with their files. Run after the claim's
    COMMIT: the writer's lock (on SQLite, the one writer of every process) is not held while the files are read
    and the definitions built. A claimed job's files are those its submission wrote in the same transaction as the
    job; nothing changes them until its pilot, which has not yet been answered, reports its outputs."""
    jobs = [JobRow._make(row) for row in rows]
    jobs.sort(key=lambda j: (-j.current_priority, j.panda_id))
    files = _load_files([job.panda_id for job in jobs])
    return [jobspec.job_definition(job, files[job.panda_id]) for job in jobs]


def _claim_alone(offer, n_jobs, now):
    with database.atomic():
        rows = _claim_rows(offer, n_jobs, now)
    return _definitions(rows) if rows else []


class _Claim:
    """One pilot's single-job claim waiting in the group commit."""

    __slots__ = ("offer", "now", "done", "lead", "rows", "failed")

    def __init__(self, offer, now):
        self.offer, self.now = offer, now
        self.done = threading.Event()
        self.lead = False
        self.rows, self.failed = [], False


class GroupCommit:
    """Concurrent single-job claims of this process, combined into one write transaction.

    Every claim still runs its own pick and conditional UPDATE (``_claim_rows``), one after the other inside the
    transaction, so each sees the jobs the claims before it took as ``sent`` already and picks others: each pilot
    gets its own job, never another's. What is shared is the BEGIN and the COMMIT (on SQLite the write lock, on
    both the commit's fsync); each claim reads its job's files after the COMMIT, in its own thread.

    No claim waits for company: the first one to arrive leads at once with whatever is queued (often only itself).
    Claims arriving while a transaction runs queue up; when it commits, the leader wakes them with their jobs and
    hands the lead to the oldest claim still queued, which takes everything queued by then. Under load the batches
    grow by themselves; alone, a claim costs what it did before. If a batch's transaction fails, each claim of it
    is retried alone, so one bad claim fails only its own pilot.
    """

    MAX_BATCH = 64

    def __init__(self):
        self.lock = threading.Lock()
        self.queue = []
        self.leading = False
        self.transactions = self.claims = self.largest = 0  # what the batches were (tests, debugging)

    def claim(self, offer, now):
        me = _Claim(offer, now)
        with self.lock:
            self.queue.append(me)
            if not self.leading:
                self.leading = me.lead = True
        if not me.lead:
            me.done.wait()
        if me.lead:
            self._lead()
        if me.failed:
            return _claim_alone(offer, 1, now)
        return _definitions(me.rows) if me.rows else []

    def _lead(self):
        with self.lock:
            batch, self.queue = self.queue[:self.MAX_BATCH], self.queue[self.MAX_BATCH:]
            self.transactions += 1
            self.claims += len(batch)
            self.largest = max(self.largest, len(batch))
        try:
            with database.atomic():
                for claim in batch:
                    claim.rows = _claim_rows(claim.offer, 1, claim.now)
        except Exception:  # noqa: BLE001 - each claim retries alone and meets its own error, if any
            log.warning("a group commit of %d claims failed; each is retried alone", len(batch), exc_info=True)
            for claim in batch:
                claim.rows, claim.failed = [], True
        finally:
            with self.lock:
                if self.queue:
                    successor = self.queue[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self.leading = False
            for claim in batch:
                claim.lead = False
                claim.done.set()


group_commit = GroupCommit()


def claim_jobs(offer, now=None):
    """Atomically move up to ``offer.n_jobs`` best-matching jobs activated -> sent; return their definitions.

    Single-job claims of concurrent pilots share one write transaction (:class:`GroupCommit`). A bulk claim takes
    no more than its fair share of the matching jobs left when other pilots asked the queue recently
    (minipanda.core.fairshare)."""
    n_jobs = max(1, min(int(offer.n_jobs), MAX_JOBS_PER_REQUEST))
    now = now or states.utcnow()
    if not _labels(offer):
        return []
    n_askers = fairshare.askers.asked(offer.queue, fairshare.pilot_key(offer))
    if n_jobs == 1:
        definitions = group_commit.claim(offer, now)
    else:
        if n_askers > 1:
            n_jobs = fairshare.share(n_jobs, n_askers, _waiting(offer, n_jobs * n_askers))
        definitions = _claim_alone(offer, n_jobs, now)
    fairshare.waiting.took(offer.queue, len(definitions))
    return definitions


def _waiting(offer, needed):
    """How many activated jobs ``offer`` matches, or a lower bound of it that is ``needed`` or more
    (fairshare.Waiting: while the queue is deep, no read at all). A count is a read outside the claim's write
    transaction, up to fairshare.DEPTH x ``needed``: the share is an estimate, and the claim itself stays exact."""
    labels, limits = _labels(offer), _limit_values(offer)
    shape = (tuple(labels), tuple(limits))
    known = fairshare.waiting.at_least(offer.queue, shape)
    if known is not None and known >= needed:
        return known
    statement = _waiting_statement(database.param, len(labels), tuple(c for c, _ in limits))
    params = [offer.queue] + labels + [v for _, v in limits] + [needed * fairshare.DEPTH]
    return fairshare.waiting.count(offer.queue, shape, lambda: database.execute_sql(statement, params).fetchone()[0])


@functools.lru_cache(maxsize=64)
def _waiting_statement(param, n_labels, limit_columns):
    return f"SELECT COUNT(*) FROM ({_pick_statement(param, False, n_labels, limit_columns)}) AS waiting"


SENT_PAGE = 1000


def sent_to_harvester(harvester_id, queue, after=0, limit=SENT_PAGE):
    """Definitions of the jobs harvester ``harvester_id`` acquired for ``queue`` itself (push mode: no worker id)
    that are still ``sent`` and not being killed: what that harvester must hold. A harvester that stopped between
    the server's reply to ``acquire_jobs`` and its own record of the jobs adopts them from this list when it starts
    again. In PandaID order, ``limit`` from the first PandaID above ``after`` (a page; the caller asks again after
    the last id until a page comes back short)."""
    Job = models.Job
    jobs = list(Job.select().where(Job.status == JobStatus.SENT.value, Job.harvester_id == harvester_id,
                                   Job.computing_site == queue, Job.worker_id.is_null(), Job.panda_id > after,
                                   Job.command_to_pilot.is_null() | (Job.command_to_pilot != "tobekilled"))
                .order_by(Job.panda_id).limit(limit))
    if not jobs:
        return []
    files = _load_files([job.panda_id for job in jobs])
    return [jobspec.job_definition(job, files[job.panda_id]) for job in jobs]
