"""Backfill-shaped workers (``batch.shape: backfill``): ask the scheduler when each of a few worker shapes would
start, and make the new workers in the one that starts soonest and still fits the waiting work.

A shape is nodes x walltime. The candidates are the queue's ``resources.nodes_per_worker`` halved down to one node,
each with ``batch.walltime`` and, when set, ``batch.min_walltime``. A shape fits the waiting work when its pilots
(nodes x pilots per node) are no more than the work needs, in whole nodes (the smallest shape always fits). Among
those the soonest start wins; of shapes starting within a minute of it (the estimates are asked one after another,
on a clock that ticks meanwhile) the larger (more nodes, then the longer walltime) wins: it does more for that wait. The pilots know the walltime their worker got and take only jobs that fit it.

The scheduler's answer comes from :meth:`harvester.batch.base.BatchSystem.start_estimate` (Slurm: ``sbatch
--test-only``); a shape it cannot estimate is left out and says why. When none can be estimated the queue's fixed
shape is used. Every decision, with its candidates, is kept for ``harvester explain QUEUE``.
"""
import dataclasses
import datetime
import math

from harvester.batch.base import BatchError
from queueconfig import allocation

SAME_START = datetime.timedelta(seconds=60)  # starts this close count as one: the scheduler's clock ticks between asks


@dataclasses.dataclass
class Candidate:
    nodes: int
    walltime_s: int
    start: datetime.datetime = None  # when the scheduler would start it (its own clock), None when unknown
    fits: bool = True  # no larger than the waiting work
    note: str = ""

    def label(self):
        return f"{self.nodes} node{'s' if self.nodes != 1 else ''} x {self.walltime_s} s"


def candidates(queue, walltime_s):
    """The shapes to ask about: nodes_per_worker, halved down to 1; x the walltime and batch.min_walltime."""
    nodes, sizes = allocation.nodes_per_worker(queue), []
    while nodes not in sizes:
        sizes.append(nodes)
        nodes = max(1, nodes // 2)
    walltimes = [walltime_s]
    shortest = queue.batch.min_walltime
    if shortest and shortest < walltime_s:
        walltimes.append(shortest)
    return [Candidate(n, w) for n in sizes for w in walltimes]


def needed_nodes(queue, pilots_wanted):
    """Whole nodes of pilots the waiting work needs (at least 1, at most nodes_per_worker)."""
    per_node = allocation.pilots_per_node(queue)
    return max(1, min(allocation.nodes_per_worker(queue), math.ceil(max(1, pilots_wanted) / per_node)))


def choose(queue, estimate, walltime_s, pilots_wanted):
    """The shape of the next workers of ``queue``.

    Args:
        estimate: ``estimate(nodes, walltime_s)`` -> the start the scheduler expects (a datetime), or raises
            :class:`BatchError` (that shape is left out).
        walltime_s: the queue's fixed walltime (pilots.worker_walltime).
        pilots_wanted: pilots the waiting work needs.

    Returns:
        ``(chosen Candidate or None, decision dict for explain)``; None: no shape could be estimated, keep the
        queue's fixed shape.
    """
    need = needed_nodes(queue, pilots_wanted)
    shapes = candidates(queue, walltime_s)
    for shape in shapes:
        shape.fits = shape.nodes <= need
        if not shape.fits:
            shape.note = f"larger than the waiting work ({need} node{'s' if need != 1 else ''})"
            continue
        try:
            shape.start = estimate(shape.nodes, shape.walltime_s)
        except BatchError as exc:
            shape.note = f"no estimate: {exc}"
    known = [s for s in shapes if s.fits and s.start is not None]
    chosen, reason = None, "no shape could be estimated: the fixed shape is used"
    if known:
        first = min(s.start for s in known)
        soonest = [s for s in known if s.start - first <= SAME_START]
        chosen = max(soonest, key=lambda s: (s.nodes, s.walltime_s))
        reason = "the soonest start among the shapes that fit the waiting work" + (
            f", the largest of those starting within {SAME_START.seconds} s of it" if len(soonest) > 1 else "")
    return chosen, {"need_nodes": need, "pilots_wanted": pilots_wanted, "reason": reason,
                    "chosen": chosen.label() if chosen else None,
                    "candidates": [{"nodes": s.nodes, "walltime_s": s.walltime_s, "fits": s.fits,
                                    "start": s.start.isoformat(timespec="seconds") if s.start else None,
                                    "note": s.note, "chosen": s is chosen} for s in shapes]}


def one_line(decision):
    """The decision and every candidate's start on one line, for the log (explain keeps only the last decision)."""
    candidates = "; ".join(f"{Candidate(c['nodes'], c['walltime_s']).label()} "
                           f"{'starts ' + c['start'] if c['start'] else c['note'] or '-'}" for c in decision["candidates"])
    return (f"{decision['chosen'] or 'fixed'} ({decision['reason']}; the waiting work needs {decision['need_nodes']} "
            f"node(s)): {candidates}")


def describe(decision):
    """Lines for ``harvester explain QUEUE``."""
    lines = [f"    chosen: {decision['chosen'] or 'the fixed shape'}: {decision['reason']}; the waiting work needs "
             f"{decision['need_nodes']} node(s) ({decision['pilots_wanted']} pilots)"]
    for c in decision["candidates"]:
        label = Candidate(c["nodes"], c["walltime_s"]).label()
        start = f"starts {c['start']}" if c["start"] else "-"
        mark = "  <- chosen" if c["chosen"] else ""
        lines.append(f"    {label:20} {start:30} {c['note']}{mark}".rstrip())
    return lines
