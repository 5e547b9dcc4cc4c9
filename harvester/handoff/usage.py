"""What an allocation delivered: the usage records its pilots left (pilot.usage), checked and summed per worker.

A worker's pilot slots are its pilots (``n_pilots``: nodes x pilot.per_node) times the time the scheduler charged
(``elapsed_s``, the same on every node). Each slot's time is one of:

    payload wall    the pilot's payloads ran (its record's ``payload_wall_s``)
    pilot wait      the pilot was up without a payload: asking for a job, staging, reporting (``wait_s``)
    drain           no pilot covered it: before the pilot started, after it ended before the allocation did, or
                    a pilot that left no (readable) record

so ``payload_wall + wait + drain == n_pilots x elapsed``. Payload CPU is beside it (several cores per payload can
make it larger than the wall time).

A record is a pilot's word, hostile like every file it writes: the snapshot refuses symlinks, files that are not
regular and files over ``pilot.handoff_max_bytes``; here a record that is not the expected JSON (a field missing,
not a finite number, negative, above 10^9 s, a payload wall time above the pilot's own) is refused with a log line
naming the file and the field, and that pilot's slot counts as drained. A pilot never covers more than the
allocation's elapsed time: larger figures are cut to it.
"""
import dataclasses
import json
import logging
import math

from harvester.errors import HandoffRefused, MessengerError
from pilot.usage import USAGE_FILE, VERSION

log = logging.getLogger(__name__)
NUMBERS = ("up_s", "payload_wall_s", "payload_cpu_s", "wait_s")
SLACK_S = 1.0  # rounding in the pilot's record: payload wall may pass up_s by this much
MAX_S = 1e9  # 31 years: no pilot's figure comes near; the server refuses a worker whose sums pass 1e12 s


class UsageRefused(ValueError):
    """A usage record that cannot be taken: the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class PilotUsage:
    up_s: float
    payload_wall_s: float
    payload_cpu_s: float
    jobs_run: int


@dataclasses.dataclass(frozen=True)
class Delivered:
    """The pilots' figures for one worker (the columns of the same names)."""

    payload_wall_s: float
    payload_cpu_s: float
    pilot_wait_s: float
    pilot_drain_s: float
    jobs_run: int
    records: int  # pilots whose record was taken

    def columns(self):
        return {name: getattr(self, name) for name in
                ("payload_wall_s", "payload_cpu_s", "pilot_wait_s", "pilot_drain_s", "jobs_run")}


def parse(data, path):
    """One pilot's record from the bytes of its ``worker_usage.json``.

    Raises:
        UsageRefused: not a JSON object of this version, or a field missing, not a finite non-negative number, or
            a payload wall time above the pilot's own time up.
    """
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageRefused(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise UsageRefused(f"{path} holds a JSON {type(record).__name__}, expected an object")
    if record.get("version") != VERSION:
        raise UsageRefused(f"{path}: version {repr(record.get('version'))[:20]}, expected {VERSION}")
    values = {}
    for name in NUMBERS:
        value = record.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UsageRefused(f"{path}: {name} is {repr(value)[:40]}, not a finite number >= 0")
        if value > MAX_S:
            raise UsageRefused(f"{path}: {name} is {value:.3g} s, above {MAX_S:.0e} s")
        values[name] = float(value)
    jobs = record.get("jobs_run")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise UsageRefused(f"{path}: jobs_run is {repr(jobs)[:40]}, not a count")
    if values["payload_wall_s"] > values["up_s"] + SLACK_S:
        raise UsageRefused(f"{path}: payload_wall_s {values['payload_wall_s']:.0f} is above the pilot's up_s "
                           f"{values['up_s']:.0f}")
    return PilotUsage(values["up_s"], values["payload_wall_s"], values["payload_cpu_s"], jobs)


def read(messenger):
    """The record of the messenger's pilot: a :class:`PilotUsage`, or None when there is none or it is refused
    (logged with the reason)."""
    path = f"{messenger.directory}/{USAGE_FILE}"
    try:
        data = messenger.content(path)
        return None if data is None else parse(data, path)
    except (HandoffRefused, MessengerError, UsageRefused) as exc:
        log.error("pilot usage record refused, its slot counts as drained: %s", exc)
        return None


def summed(records, n_pilots, elapsed_s):
    """The worker's figures from its pilots' records (None for a pilot without one), or None when no pilot left
    a record. ``elapsed_s`` is the scheduler's charge per node (None when unknown: no drain then)."""
    taken = [r for r in records if r is not None]
    if not taken:
        return None
    cap = float("inf") if elapsed_s is None else max(0.0, float(elapsed_s))
    wall = wait = cpu = 0.0
    for record in taken:
        up = min(record.up_s, cap)
        run = min(record.payload_wall_s, up)
        wall, wait, cpu = wall + run, wait + (up - run), cpu + record.payload_cpu_s
    drain = None if elapsed_s is None else max(0.0, max(n_pilots, len(records)) * cap - wall - wait)
    return Delivered(round(wall, 3), round(cpu, 3), round(wait, 3), None if drain is None else round(drain, 3),
                     sum(r.jobs_run for r in taken), len(taken))


def useful_percent(payload_wall_s, n_pilots, elapsed_s):
    """Payload wall time as a percentage of the pilot-slot time charged, or None when either is unknown."""
    if payload_wall_s is None or not elapsed_s or not n_pilots:
        return None
    return 100.0 * payload_wall_s / (n_pilots * elapsed_s)
