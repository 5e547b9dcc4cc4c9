"""The adjuster: how many new workers each queue gets this cycle, and why.

Per queue (Harvester's rules, DIRAC's cap in pull mode; the queued-worker, -core and -memory limits are fixed or a
percentage of what runs, see :mod:`harvester.limits`)::

    new = min(queued-worker limit - queued,          # room for more queued workers
              maxWorkers - (queued + running),       # room under the total
              (queued-core limit - queued cores) / cores of a worker, the same for memory (when set),
              maxNewWorkersPerCycle,
              pull: (1 + extraPilotFraction) x activated + extraPilots - waiting pilots
                    (waiting pilots: those of queued workers, and running ones that have not taken a job yet),
                    divided by pilot.per_worker and rounded up
              push: ceil(jobs fetched and not yet bound / jobsPerWorker))
    never below 0; 0 for an offline queue, a paused (invalid) queue or one backing off after failures.

Every limit, its value and the winner are recorded on the queue, so ``harvester explain QUEUE`` prints them.
"""
import dataclasses
import datetime
import json
import logging
import math

import peewee

from harvester import db, limits as queue_limits, models
from harvester.handoff import pilots
from harvester.agents.base import Agent
from harvester.errors import ServerError
from harvester.states import LIVE_VALUES, QUEUED
from queueconfig import allocation

log = logging.getLogger(__name__)
QUEUED_VALUES = {status.value for status in QUEUED}


@dataclasses.dataclass
class Counts:
    """A queue's live workers: queued (submitted, ready) and running (running, idle, and missing: a worker the
    batch system lost for a moment may well run), their cores and memory (MB); running pilots with no job yet, and
    the pilots of the queued workers."""

    queued: int = 0
    running: int = 0
    queued_cores: int = 0
    queued_memory: int = 0
    running_cores: int = 0
    running_memory: int = 0
    jobless: int = 0
    queued_pilots: int = 0


def counts(queue_name):
    """The :class:`Counts` of a queue. Of a running worker of several pilots, the jobless ones are those the
    monitor last saw with neither a job nor ended (their files); before it looked, N pilots minus the jobs the
    worker has seen."""
    found = Counts()
    jobs_seen = (models.JobWorker.select(peewee.fn.COUNT(models.JobWorker.panda_id))
                 .where(models.JobWorker.worker_id == models.Worker.worker_id))
    rows = (models.Worker.select(models.Worker.status, models.Worker.cores, models.Worker.memory_mb,
                                 models.Worker.n_pilots, models.Worker.waiting_pilots, jobs_seen)
            .where(models.Worker.queue == queue_name, models.Worker.status.in_(LIVE_VALUES)).tuples())
    for status, n_cores, mem, n_pilots, waiting, seen in rows:
        if status in QUEUED_VALUES:
            found.queued += 1
            found.queued_cores += n_cores
            found.queued_memory += mem
            found.queued_pilots += n_pilots
        else:
            found.running += 1
            found.running_cores += n_cores
            found.running_memory += mem
            found.jobless += waiting if n_pilots > 1 and waiting is not None else max(0, n_pilots - seen)
    return found


def made_since(queue_name, now, seconds=60):
    """Workers of the queue created in the last ``seconds`` (their first status-log row)."""
    since = now - datetime.timedelta(seconds=seconds)
    return (models.WorkerStatusLog.select()
            .join(models.Worker, on=(models.Worker.worker_id == models.WorkerStatusLog.worker_id))
            .where(models.Worker.queue == queue_name, models.WorkerStatusLog.old_status.is_null(),
                   models.WorkerStatusLog.time > since).count())


def unbound_jobs(queue_name):
    return (models.HeldJob.select().where(models.HeldJob.queue == queue_name, models.HeldJob.worker_id.is_null())
            .count())


def decide(queue, queued, running, queued_cores=0, queued_memory=0, activated=None, unbound=0, override=None,
           blocked=None, jobless=0, recent=0, queued_pilots=None, running_cores=0, running_memory=0):
    """The number of new workers and the record of why: a pure function of the situation (tested on tables).

    Args:
        queue: a queueconfig Queue.
        queued, running: its workers now (queued = submitted + ready; running = running + idle + missing).
        activated: pull mode: jobs waiting for this queue on the server (None: unknown, then no pilots).
        jobless: pull mode: running pilots that have not taken a job yet (they will take waiting jobs too).
        recent: workers made in the last 60 s (for maxNewWorkersPerMinute).
        queued_pilots: pilots of the queued workers (default: queued x pilot.per_worker).
        running_cores, running_memory: of the running workers (the ...Ratio limits are percentages of them).
        unbound: push mode: jobs fetched and not yet given to a worker.
        override: SET_N_WORKERS from the server: replaces maxWorkers.
        blocked: a reason that forces 0 (offline, paused, backing off, server unreachable), or None.

    Returns:
        dict with ``n``, ``limits`` ([(name, value)]), ``winner`` and the inputs.
    """
    lim = queue.limits
    max_workers = lim.maxWorkers if override is None else override
    limits = []
    if blocked:
        limits.append((blocked, 0))
    queue_limit = queue_limits.queued_workers(lim, running)
    limits.append((f"{queue_limit.words} - queued", queue_limit.value - queued))
    limits.append(("maxWorkers - (queued + running)" + (" [SET_N_WORKERS]" if override is not None else ""),
                   max_workers - (queued + running)))
    limits.append(("maxNewWorkersPerCycle", lim.maxNewWorkersPerCycle))
    if lim.maxNewWorkersPerMinute is not None:
        limits.append(("maxNewWorkersPerMinute - workers made in the last minute",
                       lim.maxNewWorkersPerMinute - recent))
    n_pilots, nodes = pilots.per_worker(queue), allocation.nodes_per_worker(queue)
    slots = "pilot.per_worker" if nodes == 1 else \
        f"pilots per worker ({nodes} nodes x {allocation.pilots_per_node(queue)} per node)"
    per_worker = "" if n_pilots == 1 else f" x {slots}"
    per_core, per_mem = max(1, queue.resources.corecount) * n_pilots, max(1, queue.resources.maxrss) * n_pilots
    core_limit = queue_limits.queued_cores(lim, running_cores)
    if core_limit.value is not None:
        limits.append((f"({core_limit.words} - queued cores) / (corecount{per_worker})",
                       (core_limit.value - queued_cores) // per_core))
    memory_limit = queue_limits.queued_memory(lim, running_memory)
    if memory_limit.value is not None:
        limits.append((f"({memory_limit.words} - queued memory) / (maxrss{per_worker})",
                       (memory_limit.value - queued_memory) // per_mem))
    if queue.mapType == "NoJob":
        if activated is None:
            limits.append(("activated jobs unknown (server unreachable)", 0))
        else:
            waiting = (queued * n_pilots if queued_pilots is None else queued_pilots) + jobless
            cap = math.floor((1 + lim.extraPilotFraction) * activated) + lim.extraPilots - waiting
            if n_pilots == 1:
                limits.append(("(1 + extraPilotFraction) x activated + extraPilots - waiting pilots", cap))
            else:  # whole workers: a worker is started for the last few pilots wanted, too
                limits.append(("ceil(((1 + extraPilotFraction) x activated + extraPilots - waiting pilots) / "
                               f"{slots})", -(-cap // n_pilots)))
    else:
        limits.append(("ceil(fetched jobs not yet in a worker / jobsPerWorker)",
                       math.ceil(unbound / (queue.jobsPerWorker if queue.mapType == "ManyToOne" else 1))))
    winner, value = min(limits, key=lambda item: item[1])
    return {"n": max(0, value), "winner": winner, "limits": limits,
            "inputs": {"queued": queued, "running": running, "queued_cores": queued_cores,
                       "queued_memory": queued_memory, "running_cores": running_cores,
                       "running_memory": running_memory, "jobless_pilots": jobless, "made_last_minute": recent,
                       "activated": activated, "unbound_jobs": unbound, "pilots_per_worker": n_pilots,
                       "nodes_per_worker": nodes,
                       "maxWorkers": max_workers, "mapType": queue.mapType, "status": queue.status}}


class Adjuster(Agent):
    name = "adjuster"

    def run_once(self, now):
        queues = self.ctx.live_queues()
        pull = [name for name, q in queues.items() if q.mapType == "NoJob" and q.status != "offline"]
        demand, demand_error = {}, None
        if pull:
            try:
                demand = self.ctx.server.queue_demand(pull)
            except ServerError as exc:
                demand_error = str(exc)
                log.warning("adjuster: no demand from the server this cycle: %s", exc)
        decided = 0
        for name in sorted(set(queues) | set(self.ctx.queue_errors)):
            # the count and the number it decides in one write transaction: the submitter turns to_submit into
            # workers in one too, so a decision sees either those workers or its own number replacing the one not
            # yet taken. Counted outside it, a second cycle (a wake-up right after the first) read "queued 0",
            # the submitter made the first cycle's workers meanwhile, and its number then made as many again
            # (a testbed run of 6 pilots started 12)
            with models.database.atomic():
                decision, now_live = self.decide_queue(name, queues.get(name), demand, demand_error, now)
            if decision["n"]:
                decided += decision["n"]
                log.info("queue %s: %d new workers (limit %s; queued %d, running %d)", name, decision["n"],
                         decision["winner"], now_live.queued, now_live.running)
        if decided:
            self.ctx.wake("submitter")
        return decided

    def decide_queue(self, name, queue, demand, demand_error, now):
        """Count ``name``'s workers, decide and record its new workers (the caller's transaction); return the
        decision and the counts (None for a paused queue)."""
        state = db.queue_state(name)
        if queue is None:  # paused: its configuration is invalid
            errors = self.ctx.queue_errors.get(name, [])
            decision = {"n": 0, "winner": "queue paused: configuration invalid",
                        "limits": [["queue paused: configuration invalid", 0]], "inputs": {"errors": errors}}
            models.QueueState.update(to_submit=0, decision=json.dumps(decision), decision_time=now) \
                .where(models.QueueState.queue == name).execute()
            return decision, None
        now_live = counts(name)
        blocked = None
        if queue.status == "offline":
            blocked = "queue offline"
        elif state.backoff_until is not None and state.backoff_until > now:
            blocked = f"backing off after failures until {state.backoff_until:%H:%M:%S} UTC ({state.last_error})"
        activated = None
        if queue.mapType == "NoJob" and name in demand:
            activated = int((demand.get(name) or {}).get("activated", 0))
        elif queue.mapType == "NoJob" and demand_error:
            blocked = blocked or "server unreachable: demand unknown"
        decision = decide(queue, now_live.queued, now_live.running, now_live.queued_cores,
                          now_live.queued_memory, activated, unbound_jobs(name), state.n_workers_override, blocked,
                          now_live.jobless, made_since(name, now), now_live.queued_pilots, now_live.running_cores,
                          now_live.running_memory)
        models.QueueState.update(to_submit=decision["n"], decision=json.dumps(decision),
                                 decision_time=now).where(models.QueueState.queue == name).execute()
        return decision, now_live
