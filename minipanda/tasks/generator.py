"""The job generator duty: defines tasks (splits their input), makes jobs, and moves tasks through their states.

Per run, for each task that may have work: registered -> defined -> ready (the split is stored as task_input
rows, chunk by chunk); ready -> scouting (the first ``nScouts`` chunks become scout jobs at boosted priority) or
-> running when there is nothing to scout; scouting -> scouted (see :mod:`minipanda.tasks.scouts`) -> running
(avalanche: the rest, sized by what the scouts measured); toretry -> running. Running tasks get jobs for their
ready chunks (new ones, and chunks the retry module or a task retry sent back), a transaction per batch. Jobs are
brokered as they are made; when no queue fits, the first jobs wait as ``defined`` with the reasons recorded, and
when every fitting queue is full, the rest wait until the next run.
"""
import itertools
import json
import logging

from minipanda.core import bulk, models, states
from minipanda.core.db import database
from minipanda.core.states import JobStatus, TaskStatus
from minipanda.errors import TaskChanged
from minipanda.tasks import brokerage, datasets, jobbuild, priority, scouts, splitting

log = logging.getLogger(__name__)
WORK_STATES = (TaskStatus.REGISTERED.value, TaskStatus.READY.value, TaskStatus.SCOUTING.value,
               TaskStatus.SCOUTED.value, TaskStatus.RUNNING.value, TaskStatus.TORETRY.value)
INPUT_COLUMNS = ("task_id", "chunk", "file_id", "lfn", "dataset", "guid", "fsize", "checksum", "location",
                 "first_event", "n_events", "status", "attempt_nr")


GENERATING_STATES = (TaskStatus.SCOUTING.value, TaskStatus.RUNNING.value)
MAX_FAILED_CYCLES = 3
_failed_cycles = {}  # jediTaskID -> consecutive cycles that raised


def run(settings, now=None):
    """One generator cycle over every task with work; returns the number of jobs made."""
    made = 0
    tasks = models.Task.select().where(models.Task.status.in_(WORK_STATES)).order_by(models.Task.jedi_task_id)
    for task in list(tasks):
        try:
            made += step(task, settings, now or states.utcnow())
            _failed_cycles.pop(task.jedi_task_id, None)
        except TaskChanged as exc:
            log.info("generator: jediTaskID=%s: %s; stopped making its jobs", task.jedi_task_id, exc)
        except Exception as exc:  # one broken task must not stop the others; a task failing every cycle is broken
            log.exception("generator: jediTaskID=%s failed this cycle", task.jedi_task_id)
            failures = _failed_cycles[task.jedi_task_id] = _failed_cycles.get(task.jedi_task_id, 0) + 1
            if failures >= MAX_FAILED_CYCLES:
                _failed_cycles.pop(task.jedi_task_id, None)
                _broken(task, f"job generation failed {failures} times: {type(exc).__name__}: {exc}"[:1000],
                        now or states.utcnow())
    return made


def step(task, settings, now):
    """Advance one task as far as it can go in this cycle."""
    spec = json.loads(task.spec)
    if task.status == TaskStatus.REGISTERED.value:
        if not define(task, spec, now):
            return 0
        task = models.Task.get_by_id(task.jedi_task_id)
    if task.status == TaskStatus.SCOUTING.value:
        scouts.evaluate(task, settings, now)
        task = models.Task.get_by_id(task.jedi_task_id)
        if task.status == TaskStatus.SCOUTING.value:  # scouts still to make (throttled before) or to retry
            return rebroker(task, settings, now) + generate(task, spec, settings, now, limit=task.n_scouts,
                                                            scout=True)
    if task.status in (TaskStatus.SCOUTED.value, TaskStatus.TORETRY.value):
        with database.atomic():
            states.change_task_status([task.jedi_task_id], TaskStatus.RUNNING, "generating the remaining jobs",
                                      from_states=[task.status])
        task = models.Task.get_by_id(task.jedi_task_id)
    made = rebroker(task, settings, now)
    if task.status == TaskStatus.READY.value:
        scouting = 0 < task.n_scouts < task.n_chunks
        with database.atomic():
            target = TaskStatus.SCOUTING if scouting else TaskStatus.RUNNING
            fields = {models.Task.start_time: now}
            states.change_task_status([task.jedi_task_id], target, f"{task.n_scouts} scout jobs first" if scouting
                                      else "generating jobs", from_states=[TaskStatus.READY], fields=fields, now=now)
        return made + generate(task, spec, settings, now, limit=task.n_scouts if scouting else None, scout=scouting)
    if task.status == TaskStatus.RUNNING.value:
        made += generate(task, spec, settings, now)
    return made


def define(task, spec, now):
    """Split the task's input into task_input rows; registered -> defined -> ready (or broken)."""
    files = []
    if spec.get("inDS"):
        found = datasets.input_files(spec["inDS"])
        files = splitting.select_files(found or [], spec.get("inputFilter") or {})
        if spec.get("nFiles"):
            files = files[:spec["nFiles"]]
        if not files:
            return _broken(task, f"inDS: no input files in {spec['inDS']} (after the task's include/exclude)", now)
    split = spec["split"]
    plan = splitting.plan(split["rule"], split["value"], [(f.fsize, f.n_events) for f in files],
                          split.get("nEvents"), spec.get("nMaxFilesPerJob"))
    rows = []
    for index, chunk in enumerate(plan):
        for file_index, first, n_events in chunk:
            f = files[file_index] if file_index is not None else None
            rows.append((task.jedi_task_id, index, f.file_id if f else None, f.lfn if f else None,
                         spec["inDS"] if f else None, f.guid if f else None, f.fsize if f else 0,
                         f.checksum if f else None, f.location if f else None, first, n_events, "ready", 0))
    with database.atomic():
        for start in range(0, len(rows), 5000):
            bulk.insert_rows(models.TaskInput._meta.table_name, INPUT_COLUMNS, rows[start:start + 5000])
        models.Task.update(n_chunks=len(plan)).where(models.Task.jedi_task_id == task.jedi_task_id).execute()
        states.change_task_status([task.jedi_task_id], TaskStatus.DEFINED, f"input split into {len(plan)} jobs "
                                  f"({split['rule']}: {split['value']})", now=now)
        states.change_task_status([task.jedi_task_id], TaskStatus.READY, "ready for job generation", now=now)
    return True


def _broken(task, reason, now):
    with database.atomic():
        states.change_task_status([task.jedi_task_id], TaskStatus.BROKEN, reason,
                                  fields={models.Task.error_dialog: reason},
                                  now=now)
    log.warning("jediTaskID=%s broken: %s", task.jedi_task_id, reason)
    return False


def ready_chunks(task_id, limit, below=None):
    """Up to ``limit`` chunks whose inputs are ready (with index < ``below`` if given), in chunk order, as
    jobbuild.Chunk objects."""
    TaskInput = models.TaskInput
    query = TaskInput.select().where(TaskInput.task_id == task_id,
                                     TaskInput.status == "ready").order_by(TaskInput.chunk, TaskInput.row_id)
    if below is not None:
        query = query.where(TaskInput.chunk < below)
    chunks = []
    for index, rows in itertools.groupby(query.limit(limit * 50 + 1000), key=lambda r: r.chunk):
        chunks.append(jobbuild.Chunk(index, list(rows)))
        if len(chunks) > limit:
            break
    return chunks[:limit]


def requirements(task, spec, chunks):
    """The brokerage needs of a group of chunks (the largest disk among them)."""
    return brokerage.Requirements(
        cores=task.core_count, ram_mb=chunks[0].ram or task.ram_count, walltime_s=chunks[0].walltime or task.walltime,
        disk_mb=max(c.disk_mb for c in chunks), connectivity=spec.get("ipConnectivity", "none"),
        label=task.prod_source_label, sites=[s for s in task.site.split(",") if s],
        excluded=[s for s in task.excluded_site.split(",") if s])


def generate(task, spec, settings, now, limit=None, scout=False):
    """Make jobs for the task's ready chunks, batch by batch, until done, throttled, or ``limit`` reached."""
    batch = max(1, settings.get_int("generator.batch"))
    budget = settings.get_int("generator.max_jobs_per_cycle") if limit is None else limit
    bootstrap = settings.get_int("brokerage.bootstrap_queued")
    made = 0
    while budget > 0:
        chunks = ready_chunks(task.jedi_task_id, min(batch, budget), task.n_scouts if scout else None)
        if not chunks or _waiting_unbrokered(task.jedi_task_id):
            break  # nothing to do, or the first jobs fit no queue: making more would only add to the pile
        n, waiting = _make_batch(task, spec, chunks, bootstrap, settings, now, scout)
        made += n
        budget -= n
        if waiting:
            models.Task.update(error_dialog=f"waiting: {waiting}"[:4000]).where(
                models.Task.jedi_task_id == task.jedi_task_id).execute()
            break
    return made


def _waiting_unbrokered(task_id):
    Job = models.Job
    return Job.select().where(Job.task_id == task_id, Job.status == JobStatus.DEFINED.value).exists()


def _make_batch(task, spec, chunks, bootstrap, settings, now, scout):
    """Broker and insert jobs for ``chunks`` (grouped by their resource needs).

    Returns:
        (jobs made, why the rest waits or None). A decision is stored only when jobs are made, so a task waiting
        for room does not add a brokerage row every cycle.
    """
    made = 0
    groups = itertools.groupby(sorted(chunks, key=lambda c: (c.ram or 0, c.walltime or 0, c.index)),
                               key=lambda c: (c.ram or 0, c.walltime or 0))
    for _, group in groups:
        group = list(group)
        req = requirements(task, spec, group)
        decision = brokerage.decide(req, len(group), bootstrap)
        if decision.queues:
            placed, status = list(zip(group, decision.queues)), JobStatus.ACTIVATED
        elif decision.fits:
            return made, decision.summary
        else:
            placed, status = [(c, "") for c in group[:max(1, task.n_scouts)]], JobStatus.DEFINED
        with database.atomic():
            brokerage.record(decision, req, task.jedi_task_id, now)
            made += _insert(task, spec, placed, status, decision, settings, now, scout)
        if len(placed) < len(group):
            return made, None if status == JobStatus.DEFINED else decision.summary
    return made, None


def _insert(task, spec, placed, status, decision, settings, now, scout):
    # Guard in the same transaction as the insert: a kill, pause or finish that committed first stops us here; one
    # that comes after sees (and cancels) these jobs, because task commands change the task row before its jobs.
    guard = models.Task.update(modification_time=now).where(
        models.Task.jedi_task_id == task.jedi_task_id, models.Task.status.in_(GENERATING_STATES)).execute()
    if not guard:
        raise TaskChanged("the task is no longer scouting or running")
    active = priority.active_jobs(task.user_name)
    prios = priority.for_new_jobs(task.task_priority, active, len(placed), scout,
                                  settings.get("priority.scout_boost"))
    ids = bulk.new_panda_ids(len(placed))
    first_serial = models.Task.get_by_id(task.jedi_task_id).serial + 1
    jobs, files, picks = [], [], []
    for n, ((chunk, site), panda_id) in enumerate(zip(placed, ids)):
        common = {"status": status.value, "site": site, "priority": prios[n], "brokerage_id": decision.brokerage_id,
                  "scout": scout}
        job, job_files = jobbuild.job_rows(task, spec, chunk, first_serial + n, panda_id, now, common)
        jobs.append(job)
        files += job_files
        picks += [("picked", panda_id, chunk.attempt, row.row_id) for row in chunk.slices]
    jobbuild.insert_jobs(jobs, files)
    states.log_transitions([(pid, None) for pid in ids], status, f"generated for jediTaskID={task.jedi_task_id}: "
                           f"{decision.summary}"[:500], now)
    bulk.update_rows("task_input", ("status", "panda_id", "attempt_nr"), "row_id", picks)
    models.Task.update(serial=first_serial + len(placed) - 1, modification_time=now,
                       error_dialog="" if status == JobStatus.ACTIVATED else decision.summary).where(
        models.Task.jedi_task_id == task.jedi_task_id).execute()
    log.info("jediTaskID=%s: %d %s jobs %s..%s (%s)", task.jedi_task_id, len(ids), status.value, ids[0], ids[-1],
             decision.summary)
    return len(ids)


def rebroker(task, settings, now):
    """Place the task's ``defined`` jobs (no queue fitted them) once a queue fits; returns how many moved."""
    Job = models.Job
    waiting = list(Job.select().where(Job.task_id == task.jedi_task_id, Job.status == JobStatus.DEFINED.value))
    if not waiting:
        return 0
    spec = json.loads(task.spec)
    req = brokerage.Requirements(
        cores=max(j.core_count for j in waiting), ram_mb=max(j.min_ram_count for j in waiting),
        walltime_s=max(j.max_walltime for j in waiting), disk_mb=max(j.max_disk_count for j in waiting),
        connectivity=spec.get("ipConnectivity", "none"), label=task.prod_source_label,
        sites=[s for s in task.site.split(",") if s], excluded=[s for s in task.excluded_site.split(",") if s])
    decision = brokerage.decide(req, len(waiting), settings.get_int("brokerage.bootstrap_queued"))
    if not decision.queues:
        return 0
    moved = 0
    with database.atomic():
        brokerage.record(decision, req, task.jedi_task_id, now)
        for job, queue in zip(waiting, decision.queues):
            moved += len(states.change_job_status(
                [job.panda_id], JobStatus.ACTIVATED, f"brokered: {decision.summary}"[:500],
                from_states=[JobStatus.DEFINED], fields={Job.computing_site: queue,
                                                         Job.brokerage_id: decision.brokerage_id}, now=now))
        models.Task.update(error_dialog="").where(models.Task.jedi_task_id == task.jedi_task_id).execute()
    return moved
