"""Harvester services: heartbeats, workers, worker statistics, queue demand.

Every database write made for harvester happens here, in :mod:`minipanda.workers.commands` (commands for
harvesters) and in :mod:`minipanda.workers.pilot_tokens` (the tokens harvester mints for its pilots);
``minipanda/api/harvester.py`` only parses, authorises and encodes. Input is checked field by field
(:mod:`minipanda.workers.fields`) before anything is written: a refusal raises RequestError naming the field, except
in :func:`update_workers`, where one bad worker gets ``False`` and the others are still stored.

A worker reported in a final state takes its unfinished jobs with it: they fail with pilot error 1008 (pilot3's
GENERALERROR, "consult the batch log") and a diag naming the worker, so the settle duty's retry rules decide on a
new attempt exactly as for any other failed job.
"""
import json
import logging

from minipanda.core import models, queues, states
from minipanda.core import counts as job_counts
from minipanda.core.db import database
from minipanda.core.states import JobStatus
from minipanda.errors import RequestError
from minipanda.workers.fields import INT_MAX, figure, id_list, integer, iso, json_value, text, utc_time
from peewee import fn

log = logging.getLogger(__name__)

WORKER_STATES = ("submitted", "ready", "running", "idle", "missing", "finished", "failed", "cancelled", "missed")
FINAL_WORKER_STATES = frozenset({"finished", "failed", "cancelled", "missed"})
# The jobs a dead worker can still hold: the pilot took them but never sent a final update.
ORPHAN_JOB_STATES = (JobStatus.SENT.value, JobStatus.STARTING.value, JobStatus.RUNNING.value)
DEMAND_STATES = (JobStatus.ACTIVATED.value,) + ORPHAN_JOB_STATES
WORKER_DIED_CODE = 1008
MAX_WORKERS_PER_CALL = 2000


# ---- heartbeat, statistics ---------------------------------------------------------------------------------------

AGENT_FIGURES = ("runs", "errors", "last_duration")


def agent_figures(agents):
    """The agents' cycle figures of a heartbeat as stored: {agent: {runs, errors, last_duration, last_error_time}},
    numbers checked; None when the harvester sent none."""
    agents = json_value(agents, "agents")
    if agents is None:
        return None
    if not isinstance(agents, dict) or len(agents) > 64:
        raise RequestError("agents: expected {agent: {runs, errors, last_duration, ...}} (at most 64 agents)")
    figures = {}
    for name, values in agents.items():
        text(name, "agents name", 32, required=True)
        if not isinstance(values, dict):
            raise RequestError(f"agents.{name}: expected an object")
        row = {key: figure(values.get(key, 0), f"agents.{name}.{key}") for key in AGENT_FIGURES}
        row["last_error_time"] = iso(utc_time(values.get("last_error_time"), f"agents.{name}.last_error_time"))
        figures[name] = row
    return json.dumps(figures, sort_keys=True)


MAX_REPORTED_QUEUES = 1000


def harvester_report(queues, home):
    """The queue states and home disk of a heartbeat as stored (JSON), numbers and texts checked; None when the
    harvester sent neither (an older harvester)."""
    queues, home = json_value(queues, "queues"), json_value(home, "home")
    if queues is None and home is None:
        return None
    if not isinstance(queues or {}, dict) or len(queues or {}) > MAX_REPORTED_QUEUES:
        raise RequestError(f"queues: expected {{queue: {{paused, backoff_s, failures, error}}}} (at most "
                           f"{MAX_REPORTED_QUEUES} queues)")
    report = {"queues": {}, "home": {}}
    for name, state in (queues or {}).items():
        text(name, "queues name", 128, required=True)
        if not isinstance(state, dict):
            raise RequestError(f"queues.{name[:128]}: expected an object")
        report["queues"][name] = {"paused": state.get("paused") is True,
                                  "backoff_s": figure(state.get("backoff_s", 0), f"queues.{name}.backoff_s"),
                                  "failures": figure(state.get("failures", 0), f"queues.{name}.failures"),
                                  "error": text(state.get("error"), f"queues.{name}.error", 512) or ""}
    if home is not None:
        if not isinstance(home, dict):
            raise RequestError("home: expected {size_bytes, avail_bytes}")
        report["home"] = {key: figure(home.get(key, 0), f"home.{key}") for key in ("size_bytes", "avail_bytes")}
    return json.dumps(report, sort_keys=True)


def heartbeat(harvester_id, version, start_time, host, now=None, agents=None, queues=None, home=None):
    """Record that a harvester is alive (with its agents' cycle figures, its queues' states and its home's disk
    when sent); returns {"server_time"}."""
    now = now or states.utcnow()
    row = {"host": text(host, "host", 256) or "", "version": text(version, "version", 64) or "",
           "start_time": utc_time(start_time, "start_time"), "last_heartbeat": now}
    figures = agent_figures(agents)
    if figures is not None:
        row["agents"] = figures
    report = harvester_report(queues, home)
    if report is not None:
        row["report"] = report
    HI = models.HarvesterInstance
    with database.atomic():
        HI.insert(harvester_id=harvester_id, **row).on_conflict(
            conflict_target=[HI.harvester_id], update=row).execute()
    return {"server_time": iso(now)}


def report_worker_statistics(harvester_id, queue, statistics, now=None):
    """Keep the latest {jobType: {resourceType: {status: n}}} of one harvester for one queue."""
    queue = text(queue, "panda_queue", 128, required=True)
    statistics = json_value(statistics, "statistics")
    if not isinstance(statistics, dict):
        raise RequestError("statistics: expected {jobType: {resourceType: {status: n}}}")
    for job_type, by_resource in statistics.items():
        if not isinstance(by_resource, dict):
            raise RequestError(f"statistics.{job_type}: expected {{resourceType: {{status: n}}}}")
        for resource, by_status in by_resource.items():
            if not isinstance(by_status, dict):
                raise RequestError(f"statistics.{job_type}.{resource}: expected {{status: n}}")
            for status, count in by_status.items():
                integer(count, f"statistics.{job_type}.{resource}.{status}")
    WS = models.WorkerStatistics
    row = {"statistics": json.dumps(statistics, sort_keys=True), "modification_time": now or states.utcnow()}
    with database.atomic():
        WS.insert(harvester_id=harvester_id, queue=queue, **row).on_conflict(
            conflict_target=[WS.harvester_id, WS.queue], update=row).execute()


# ---- workers -----------------------------------------------------------------------------------------------------

def parse_worker(entry, where):
    """The worker table columns of one reported worker dict; RequestError names the bad field."""
    if not isinstance(entry, dict):
        raise RequestError(f"{where}: expected a worker object")
    status = entry.get("status")
    if status not in WORKER_STATES:
        raise RequestError(f"{where}.status: expected one of {', '.join(WORKER_STATES)}, got {str(status)[:40]!r}")
    pandaids = entry.get("pandaid_list")
    pandaids = [] if pandaids in (None, "") else id_list(pandaids, f"{where}.pandaid_list")
    return {
        "worker_id": integer(entry.get("workerID"), f"{where}.workerID"),
        "status": status,
        "batch_id": text(entry.get("batchID"), f"{where}.batchID", 128),
        "computing_site": text(entry.get("computingSite"), f"{where}.computingSite", 128, required=True),
        "n_core": integer(entry.get("nCore"), f"{where}.nCore", maximum=INT_MAX, required=False),
        "n_memory": integer(entry.get("nMemory"), f"{where}.nMemory", maximum=INT_MAX, required=False),
        "walltime": integer(entry.get("walltime"), f"{where}.walltime", maximum=INT_MAX, required=False),
        "submit_time": utc_time(entry.get("submitTime"), f"{where}.submitTime"),
        "start_time": utc_time(entry.get("startTime"), f"{where}.startTime"),
        "end_time": utc_time(entry.get("endTime"), f"{where}.endTime"),
        "diag": text(entry.get("diagMessage"), f"{where}.diagMessage", models.TEXT_LIMIT),
        "node": text(entry.get("node"), f"{where}.node", 256),
        "access_point": text(entry.get("accessPoint"), f"{where}.accessPoint", 1024),
        "pandaid_list": pandaids,
        **allocation(entry, where),
    }


# what an ended allocation delivered (harvester.handoff.usage): wire name -> column; seconds unless a count
ALLOCATION_FIELDS = {"nNodes": "n_nodes", "elapsedTime": "elapsed_s", "payloadWallTime": "payload_wall_s",
                     "payloadCpuTime": "payload_cpu_s", "pilotWaitTime": "pilot_wait_s",
                     "pilotDrainTime": "pilot_drain_s", "nJobsRun": "jobs_run"}
COUNTS = ("nNodes", "nJobsRun")
MAX_SECONDS = 1e12  # far above any allocation (30,000 years of node time): a figure beyond it is garbage


def allocation(entry, where):
    """The allocation figures a worker report may carry (all optional; a report without them changes none)."""
    row = {}
    for name, column in ALLOCATION_FIELDS.items():
        value = entry.get(name)
        if value is None:
            continue
        if name in COUNTS:
            row[column] = integer(value, f"{where}.{name}", maximum=INT_MAX)
        elif figure(value, f"{where}.{name}") > MAX_SECONDS:
            raise RequestError(f"{where}.{name}: at most {MAX_SECONDS:.0f} s, got {value}")
        else:
            row[column] = float(value)
    source = text(entry.get("chargeSource"), f"{where}.chargeSource", 64)
    if source is not None:
        row["charge_source"] = source
    return row


def update_workers(harvester_id, workers, now=None, wake=None):
    """Upsert each worker by (harvester_id, workerID); one bool per worker, a bad one does not stop the others.
    ``wake(duty name)`` runs the settle duty early when a final worker failed its orphaned jobs."""
    workers = json_value(workers, "workers")
    if not isinstance(workers, list):
        raise RequestError("workers: expected a list of worker objects")
    if len(workers) > MAX_WORKERS_PER_CALL:
        raise RequestError(f"workers: at most {MAX_WORKERS_PER_CALL} per call, got {len(workers)}")
    now = now or states.utcnow()
    results, orphans = [], 0
    for index, entry in enumerate(workers):
        try:
            row = parse_worker(entry, f"workers[{index}]")
        except RequestError as exc:
            log.warning("harvester %s: worker refused: %s", harvester_id, exc)
            results.append(False)
            continue
        with database.atomic():
            status, pandaids = _store_worker(harvester_id, row, now)
            if status in FINAL_WORKER_STATES:
                orphans += len(_fail_orphaned_jobs(harvester_id, dict(row, pandaid_list=pandaids), status, now))
        results.append(True)
    if orphans and wake:
        wake("settle")
    return results


def _store_worker(harvester_id, row, now):
    """Write the worker; returns (the status it has now, all PandaIDs it ever reported). A worker already final
    stays final (reports may arrive out of order: a late 'running' must not bring a finished worker back); its job
    list only grows (a multi-job pilot's worker reports each job, and a report may leave the list out)."""
    Worker = models.Worker
    current = Worker.get_or_none(Worker.harvester_id == harvester_id, Worker.worker_id == row["worker_id"])
    known = json.loads(current.pandaid_list or "[]") if current is not None else []
    pandaids = sorted(set(known) | set(row["pandaid_list"]))
    values = {k: v for k, v in row.items() if k != "worker_id"}
    values.update(modification_time=now, pandaid_list=json.dumps(pandaids))
    if current is not None and current.status in FINAL_WORKER_STATES and row["status"] != current.status:
        log.info("harvester %s: worker %s is already %s; %s report ignored", harvester_id, row["worker_id"],
                 current.status, row["status"])
        return current.status, pandaids
    bind_jobs(harvester_id, row["worker_id"], row["pandaid_list"])
    if current is None:
        Worker.insert(harvester_id=harvester_id, worker_id=row["worker_id"], **values).on_conflict(
            conflict_target=[Worker.harvester_id, Worker.worker_id], update=values).execute()
    else:
        # Fields harvester did not send keep what the pilot (updateWorkerPilotStatus) or an earlier report wrote.
        Worker.update({k: v for k, v in values.items() if v is not None}).where(Worker.id == current.id).execute()
    return row["status"], pandaids


def bind_jobs(harvester_id, worker_id, panda_ids):
    """Record on the server that these jobs, which this harvester acquired (push mode) and no worker holds yet,
    are in worker ``worker_id``: from now on only that worker's pilot token may update them."""
    if panda_ids:
        Job = models.Job
        Job.update(worker_id=worker_id).where(Job.panda_id.in_(panda_ids), Job.harvester_id == harvester_id,
                                              Job.worker_id.is_null()).execute()


def _fail_orphaned_jobs(harvester_id, worker, status, now):
    """Fail the jobs of a final worker that never got their final update, so they can be retried."""
    Job = models.Job
    worker_id = worker["worker_id"]
    listed = worker["pandaid_list"]
    mine = (Job.harvester_id == harvester_id) & (Job.worker_id == worker_id)
    # A listed job is this worker's only when this harvester acquired it and no other worker holds it: a job
    # dispatched to a plain pilot, another harvester or another worker is not this worker's to fail.
    listed_free = Job.panda_id.in_(listed) & (Job.harvester_id == harvester_id) & Job.worker_id.is_null()
    query = Job.select(Job.panda_id).where(Job.status.in_(ORPHAN_JOB_STATES), mine | listed_free if listed else mine)
    ids = [row.panda_id for row in query]
    if not ids:
        return []
    diag = (f"worker {worker_id} of harvester {harvester_id} on {worker['computing_site']} is {status} "
            f"without the pilot's final update: {worker['diag'] or 'no diag'}")[:models.TEXT_LIMIT]
    changed = states.change_job_status(ids, JobStatus.FAILED, diag[:500], from_states=ORPHAN_JOB_STATES, now=now,
                                       fields={Job.pilot_error_code: WORKER_DIED_CODE, Job.pilot_error_diag: diag})
    if changed:
        log.warning("harvester %s: worker %s %s: failed jobs %s", harvester_id, worker_id, status,
                    [pid for pid, _ in changed])
    return changed


def list_workers(queue=None, status=None, harvester_id=None, limit=100):
    """Workers, most recently changed first, as ``minipanda worker list`` shows them."""
    Worker = models.Worker
    query = Worker.select().order_by(Worker.modification_time.desc(), Worker.id.desc()).limit(limit)
    for value, column in ((queue, Worker.computing_site), (status, Worker.status), (harvester_id, Worker.harvester_id)):
        if value:
            query = query.where(column == value)
    return [{"workerID": w.worker_id, "harvester": w.harvester_id, "batchID": w.batch_id, "queue": w.computing_site,
             "status": w.status, "pilotStatus": w.pilot_status, "diag": w.diag, "nCore": w.n_core,
             "nMemory": w.n_memory, "walltime": w.walltime, "submitTime": iso(w.submit_time),
             "startTime": iso(w.start_time), "endTime": iso(w.end_time), "node": w.node, "accessPoint": w.access_point,
             "pandaid_list": json.loads(w.pandaid_list or "[]"), "modificationTime": iso(w.modification_time)}
            for w in query]


def list_instances():
    HI = models.HarvesterInstance
    return [{"harvester_id": h.harvester_id, "host": h.host, "version": h.version, "start_time": iso(h.start_time),
             "last_heartbeat": iso(h.last_heartbeat)} for h in HI.select().order_by(HI.harvester_id)]


# ---- queue demand ------------------------------------------------------------------------------------------------

def queue_demand(queue_names):
    """{queue: {activated, sent, starting, running}}: jobs of the queue that its pilots may get (dispatch's label
    rules); an offline queue dispatches nothing, so its activated jobs are no demand."""
    names = [text(name, f"queues[{i}]", 128, required=True) for i, name in enumerate(queue_names)]
    Job = models.Job
    counts = {name: dict.fromkeys(DEMAND_STATES, 0) for name in names}
    if not names:
        return counts
    rules = {name: queues.served_labels(name) for name in counts}
    # A queue that takes any label reads the live counts (kept per queue and state: a few rows, whatever the number
    # of jobs; harvester asks every adjuster cycle); one with label rules counts its jobs by label.
    any_label = {name for name, (_, labels) in rules.items() if labels is None}
    if any_label:
        for site, by_state in job_counts.jobs_by_queue(statuses=DEMAND_STATES).items():
            if site in any_label:
                for status, n in by_state.items():
                    if rules[site][0] != "offline" or status != JobStatus.ACTIVATED.value:
                        counts[site][status] += n
    labelled = [name for name in counts if name not in any_label]
    rows = () if not labelled else (
        Job.select(Job.computing_site, Job.status, Job.prod_source_label, fn.COUNT(Job.panda_id))
        .where(Job.computing_site.in_(labelled), Job.status.in_(DEMAND_STATES))
        .group_by(Job.computing_site, Job.status, Job.prod_source_label).tuples())
    for site, status, label, n in rows:
        queue_status, labels = rules[site]
        if labels is not None and label not in labels:
            continue
        if queue_status == "offline" and status == JobStatus.ACTIVATED.value:
            continue
        counts[site][status] += n
    return counts
