"""Brokerage: which queue each new job goes to, and why every other queue was not chosen.

The seeds' simplified JEDI job brokerage. A queue is a candidate when it is online and fits the jobs (cores,
memory, walltime, disk, worker-node connectivity, job label, the task's site choices). A job larger than one pilot
of a queue fits only a queue that takes multi-node jobs (queuedata ``maxjobnodes`` above 1, whose harvester gives
each job a worker of ceil(cores / ``corepernode``) nodes), and only up to that many nodes. Among candidates, each job
goes to the queue of highest weight ``(running + 1) / (queued + 10)``, counting the jobs already placed; a queue
whose queued jobs exceed ``max(2 x running, brokerage.bootstrap_queued)`` takes no more (the bootstrap floor lets
an idle queue fill up before it has running jobs). Every decision is stored with every queue's verdict, so
``minipanda why PANDAID`` can say in words why a job is where it is, or nowhere.
"""
import dataclasses
import json
import logging
from typing import List, Optional

from minipanda.core import models, policy
from minipanda.core.states import ACTIVE_JOB_STATES, QUEUED_JOB_STATES
from peewee import fn

log = logging.getLogger(__name__)
CONNECTIVITY_RANK = {"none": 0, "http": 1, "full": 2}


@dataclasses.dataclass
class Requirements:
    """What the jobs of one batch need."""

    cores: int = 1
    ram_mb: int = 0
    walltime_s: int = 0
    disk_mb: int = 0
    connectivity: str = "none"  # none, http, full: what the job needs from the worker node's network
    label: str = "user"
    sites: List[str] = dataclasses.field(default_factory=list)  # empty: any queue
    excluded: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Decision:
    """The outcome for a batch: ``queues[i]`` is job i's queue; fewer entries than asked means the rest must
    wait (every fitting queue is full); none at all with ``fits`` False means no queue fits."""

    brokerage_id: Optional[int]
    queues: List[str]
    fits: bool
    summary: str
    candidates: list


def _int(data, key, default):
    try:
        return int(float(data.get(key, default) or 0))
    except (TypeError, ValueError):
        return default


def queue_counts():
    """{queue: {"running": n, "queued": n}} from the job table (served by the status-first dispatch index)."""
    Job = models.Job
    counts = {}
    groups = ((ACTIVE_JOB_STATES, "running"), (QUEUED_JOB_STATES, "queued"))
    for job_states, key in groups:
        query = (Job.select(Job.computing_site, fn.COUNT(Job.panda_id))
                 .where(Job.status.in_([s.value for s in job_states])).group_by(Job.computing_site).tuples())
        for site, n in query:
            counts.setdefault(site, {"running": 0, "queued": 0})[key] = n
    return counts


def verdict(queue, data, req):
    """[(kind, reason)] why a queue cannot take jobs with ``req``; an empty list means it fits."""
    reasons = []
    if req.sites and queue.name not in req.sites:
        reasons.append(("site", f"not among the task's sites ({', '.join(req.sites)})"))
    if queue.name in req.excluded:
        reasons.append(("site", "excluded by the task (excludedSite)"))
    status = data.get("status", queue.status) if queue.status == "online" else queue.status
    if status != "online":
        reasons.append(("status", f"queue is {status}, not online"))
    labels = data.get("prodsourcelabels") or []
    if not policy.queue_takes(labels, req.label):
        reasons.append(("label", f"runs {'/'.join(labels)} jobs, not {req.label}"))
    reasons += size_reasons(data, req.cores)
    nodes = job_nodes(data, req.cores) if _int(data, "maxjobnodes", 1) > 1 else 1
    for key, need, unit, what in (("maxrss", req.ram_mb, "MB", "memory"), ("maxtime", req.walltime_s, "s", "walltime"),
                                  ("maxwdir", req.disk_mb, "MB", "disk")):
        limit = _int(data, key, 0) * (nodes if key == "maxrss" else 1)  # a multi-node job has maxrss on each node
        if limit and need > limit:
            reasons.append((what, f"job needs {what} {need} {unit}, queue allows {limit} {unit}"))
    offered = str(data.get("wnconnectivity") or "full").split("#")[0].lower()
    if CONNECTIVITY_RANK.get(offered, 2) < CONNECTIVITY_RANK.get(req.connectivity, 0):
        reasons.append(("connectivity", f"worker nodes have {offered} connectivity, the job needs "
                                        f"{req.connectivity}"))
    return reasons


def node_cores(data):
    """Cores of one node of a queue (its queuedata ``corepernode``; else the cores of one pilot)."""
    return _int(data, "corepernode", 0) or _int(data, "corecount", 1) or 1


def job_nodes(data, cores):
    """Nodes a job of ``cores`` cores needs on a queue."""
    return max(1, -(-max(1, cores) // node_cores(data)))


def size_reasons(data, cores):
    """[(kind, reason)] when a job of ``cores`` cores is too large for a queue: a queue of single-node jobs takes up
    to its ``corecount``; one whose ``maxjobnodes`` is above 1 (harvester gives each job a worker of its size) up to
    that many nodes of ``corepernode`` cores."""
    per_pilot, per_node, most = _int(data, "corecount", 1) or 1, node_cores(data), _int(data, "maxjobnodes", 1) or 1
    nodes = job_nodes(data, cores)
    if most > 1:
        if nodes > most:
            return [("nodes", f"job needs {nodes} nodes of {per_node} cores ({cores} cores), queue allows {most} "
                              "nodes per job")]
        return []
    if cores <= per_pilot:
        return []
    if nodes > 1 and _int(data, "corepernode", 0):  # a queue that says its node size (queueconfig does)
        return [("nodes", f"job needs {cores} cores, {nodes} nodes of {per_node}; queue takes single-node jobs of "
                          f"at most {per_pilot} cores (no resources.max_job_nodes)")]
    return [("cores", f"job needs {cores} cores, queue has {per_pilot}")]


def limit_of(running, bootstrap):
    """The most queued jobs a queue with ``running`` jobs takes before it counts as full."""
    return max(2 * running, bootstrap)


def evaluate(req, bootstrap, counts=None):
    """Every queue's verdict for ``req``: [{queue, kept, reasons, running, queued, weight}], sorted by name."""
    counts = queue_counts() if counts is None else counts
    out = []
    for queue in models.Queue.select().order_by(models.Queue.name):
        try:
            data = json.loads(queue.queuedata or "{}")
        except ValueError:
            data = {}
        found = verdict(queue, data, req)
        running, queued = counts.get(queue.name, {}).get("running", 0), counts.get(queue.name, {}).get("queued", 0)
        if not found and queued >= limit_of(running, bootstrap):
            found.append(("full", f"full: {queued} queued jobs, at the limit max(2 x {running} running, "
                                  f"{bootstrap})"))
        out.append({"queue": queue.name, "kept": not found, "kinds": [k for k, _ in found],
                    "reasons": [r for _, r in found], "running": running, "queued": queued,
                    "weight": round((running + 1) / (queued + 10), 4)})
    return out


def assign(candidates, n_jobs, bootstrap):
    """Place up to ``n_jobs`` jobs on kept candidates by weight, updating queued counts as they go."""
    live = {c["queue"]: [c["running"], c["queued"]] for c in candidates if c["kept"]}
    placed = []
    for _ in range(n_jobs):
        open_queues = sorted(q for q, (r, n) in live.items() if n < limit_of(r, bootstrap))
        if not open_queues:
            break
        best = max(open_queues, key=lambda q: (live[q][0] + 1) / (live[q][1] + 10))  # ties: first name
        live[best][1] += 1
        placed.append(best)
    return placed


def decide(req, n_jobs, bootstrap):
    """Broker a batch of ``n_jobs`` jobs with the same needs (nothing is stored: see :func:`record`)."""
    candidates = evaluate(req, bootstrap)
    fitting = [c for c in candidates if c["kinds"] in ([], ["full"])]
    queues = assign(candidates, n_jobs, bootstrap)
    if queues:
        per_queue = {q: queues.count(q) for q in dict.fromkeys(queues)}
        summary = "assigned " + ", ".join(f"{n} to {q}" for q, n in per_queue.items())
        if len(queues) < n_jobs:
            summary += f"; {n_jobs - len(queues)} wait: every fitting queue is full"
    elif fitting:
        summary = "every fitting queue is full: " + "; ".join(f"{c['queue']}: {c['reasons'][0]}" for c in fitting)
    else:
        summary = no_fit_summary(candidates, req)
    return Decision(None, queues, bool(fitting), summary, candidates)


def record(decision, req, task_id, now):
    """Store a decision with every queue's verdict; sets and returns its id."""
    decision.brokerage_id = models.Brokerage.insert(
        task_id=task_id, time=now, requirements=json.dumps(dataclasses.asdict(req)),
        candidates=json.dumps(decision.candidates), outcome=decision.summary).execute()
    return decision.brokerage_id


NEEDS = {"memory": "memory {ram_mb} MB", "cores": "{cores} cores", "nodes": "{cores} cores on several nodes", "walltime": "walltime {walltime_s} s",
         "disk": "disk {disk_mb} MB", "connectivity": "{connectivity} connectivity", "label": "{label} jobs",
         "status": "an online status", "site": "the task's site choices"}


def no_fit_summary(candidates, req):
    """One sentence for "nothing fits": the needs no queue meets, else each queue's reasons."""
    if not candidates:
        return "no queue fits: no queue is registered"
    common = set(candidates[0]["kinds"])
    for c in candidates[1:]:
        common &= set(c["kinds"])
    values = dataclasses.asdict(req)
    if common:
        return "no queue fits " + " and ".join(NEEDS[k].format(**values) for k in NEEDS if k in common)
    return "no queue fits: " + "; ".join(f"{c['queue']}: {', '.join(c['reasons'])}" for c in candidates)
