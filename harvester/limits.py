"""The queue config's limits on queued workers and prefetched jobs, worked out as Harvester does.

Each limit is a fixed number, or (with a ``...Ratio`` key) a percentage of what runs now with a floor
(``...Min``), whichever is smaller::

    queued workers   min(nQueueLimitWorker, max(running x nQueueLimitWorkerRatio %, nQueueLimitWorkerMin),
                         nQueueLimitWorkerMax)
    queued cores     min(nQueueLimitWorkerCores, max(running cores x nQueueLimitWorkerCoresRatio %, floor))
                     floor: nQueueLimitWorkerCoresMin, and at least 1 core per nQueueLimitWorkerMin worker
    queued memory    the same with nQueueLimitWorkerMemory*, at least 1000 MB per nQueueLimitWorkerMin worker
    held jobs        min(nQueueLimitJob, max(running jobs x nQueueLimitJobRatio %, nQueueLimitJobMin or 1),
                         nQueueLimitJobMax)
    held job cores   min(nQueueLimitJobCores, max(running job cores x nQueueLimitJobCoresRatio %, floor))
                     floor: nQueueLimitJobCoresMin, and at least 1 core per nQueueLimitJobMin job

A part whose key is not set drops out; a limit with no part set is None (no limit). Each value comes with the words
that say where it came from, for ``harvester explain``.
"""
import dataclasses
from typing import Optional

MB_PER_WORKER = 1000  # what nQueueLimitWorkerMin stands for in memory (Harvester's figure)


@dataclasses.dataclass(frozen=True)
class Limit:
    value: Optional[int]  # None: no limit
    words: str


def _combine(fixed, fixed_name, running, ratio, ratio_name, floor, what):
    """min(fixed, max(running x ratio %, floor)), each part only when set."""
    parts = []
    if fixed is not None:
        parts.append((fixed, fixed_name))
    if ratio is not None:
        by_ratio = running * ratio // 100
        words = f"{ratio_name} {ratio}% of {running} running {what}"
        if floor is not None and floor > by_ratio:
            by_ratio, words = floor, f"{words}, raised to the floor {floor}"
        parts.append((by_ratio, words))
    if not parts:
        return Limit(None, "no limit")
    value, words = min(parts, key=lambda part: part[0])
    return Limit(value, words)


def queued_workers(lim, running):
    """Most queued workers (with maxWorkers as nQueueLimitWorker's default, it is never None)."""
    limit = _combine(lim.nQueueLimitWorker, "nQueueLimitWorker", running, lim.nQueueLimitWorkerRatio,
                     "nQueueLimitWorkerRatio", lim.nQueueLimitWorkerMin, "workers")
    if lim.nQueueLimitWorkerMax is not None and (limit.value is None or lim.nQueueLimitWorkerMax < limit.value):
        return Limit(lim.nQueueLimitWorkerMax, "nQueueLimitWorkerMax")
    return limit


def queued_cores(lim, running_cores):
    floor = _floor(lim.nQueueLimitWorkerCoresMin, lim.nQueueLimitWorkerMin, 1)
    return _combine(lim.nQueueLimitWorkerCores, "nQueueLimitWorkerCores", running_cores,
                    lim.nQueueLimitWorkerCoresRatio, "nQueueLimitWorkerCoresRatio", floor, "cores")


def queued_memory(lim, running_memory):
    floor = _floor(lim.nQueueLimitWorkerMemoryMin, lim.nQueueLimitWorkerMin, MB_PER_WORKER)
    return _combine(lim.nQueueLimitWorkerMemory, "nQueueLimitWorkerMemory", running_memory,
                    lim.nQueueLimitWorkerMemoryRatio, "nQueueLimitWorkerMemoryRatio", floor, "MB")


def held_jobs(lim, running_jobs):
    """Most jobs held ahead of workers; None only when nQueueLimitJob is unset (pull mode: no fetching)."""
    if lim.nQueueLimitJob is None:
        return Limit(None, "no nQueueLimitJob")
    floor = lim.nQueueLimitJobMin if lim.nQueueLimitJobMin is not None else min(1, lim.nQueueLimitJob)
    limit = _combine(lim.nQueueLimitJob, "nQueueLimitJob", running_jobs, lim.nQueueLimitJobRatio,
                     "nQueueLimitJobRatio", floor, "jobs")
    if lim.nQueueLimitJobMax is not None and lim.nQueueLimitJobMax < limit.value:
        return Limit(lim.nQueueLimitJobMax, "nQueueLimitJobMax")
    return limit


def held_job_cores(lim, running_cores):
    floor = _floor(lim.nQueueLimitJobCoresMin, lim.nQueueLimitJobMin, 1)
    return _combine(lim.nQueueLimitJobCores, "nQueueLimitJobCores", running_cores, lim.nQueueLimitJobCoresRatio,
                    "nQueueLimitJobCoresRatio", floor, "job cores")


def _floor(own, per_unit_min, per_unit):
    """A ratio's floor: its own ``...Min``, raised to ``per_unit`` for each worker (job) of the count's ``...Min``."""
    if per_unit_min is None:
        return own
    return max(own or 0, per_unit_min * per_unit)
