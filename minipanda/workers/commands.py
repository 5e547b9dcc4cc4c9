"""Commands for harvesters (kill workers, cap a queue's workers, ask for worker statistics): queued by an operator,
each handed to one harvester only, then acknowledged by it."""
import json

from minipanda.core import models, states
from minipanda.core.db import database
from minipanda.errors import RequestError
from minipanda.workers.fields import INT_MAX, id_list, integer, iso, json_value, text

COMMANDS = ("KILL_WORKERS", "SET_N_WORKERS", "REPORT_WORKER_STATS")


def add_command(command, params, harvester_id=None, now=None):
    """Queue a command for one harvester (or any, when ``harvester_id`` is None); returns its id."""
    if command not in COMMANDS:
        raise RequestError(f"command: expected one of {', '.join(COMMANDS)}, got {str(command)[:40]!r}")
    params = json_value(params if params is not None else {}, "params")
    if not isinstance(params, dict):
        raise RequestError("params: expected an object")
    queue = text(params.get("queue"), "params.queue", 128)
    clean = {"queue": queue} if queue else {}
    if command == "KILL_WORKERS":
        if params.get("worker_ids") not in (None, []):
            clean["worker_ids"] = id_list(params["worker_ids"], "params.worker_ids")
        if not clean:
            raise RequestError("params: KILL_WORKERS needs queue and/or worker_ids")
    elif command == "SET_N_WORKERS":
        if not queue:
            raise RequestError("params.queue: required for SET_N_WORKERS")
        if "n_workers" not in params:
            raise RequestError("params.n_workers: required (a number, or null to lift the cap)")
        clean["n_workers"] = integer(params["n_workers"], "params.n_workers", maximum=INT_MAX, required=False)
    now = now or states.utcnow()
    with database.atomic():
        row = models.HarvesterCommand.create(harvester_id=harvester_id, command=command, params=json.dumps(clean),
                                             status="queued", creation_time=now, status_time=now)
    return row.id


def acquire_commands(harvester_id, n_commands, now=None):
    """Hand queued commands for this harvester (or for any) to it, each command to one harvester only."""
    HarvesterCommand = models.HarvesterCommand
    now = now or states.utcnow()
    taken = []
    with database.atomic():
        addressed = HarvesterCommand.harvester_id.is_null() | (HarvesterCommand.harvester_id == harvester_id)
        candidates = list(HarvesterCommand.select().where(HarvesterCommand.status == "queued", addressed)
                          .order_by(HarvesterCommand.id).limit(n_commands))
        for command in candidates:
            # Conditional on still being queued: another harvester's concurrent acquire takes it or we do, not both.
            won = HarvesterCommand.update(status="sent", acquired_by=harvester_id, status_time=now).where(
                HarvesterCommand.id == command.id, HarvesterCommand.status == "queued").execute()
            if won:
                taken.append({"command_id": command.id, "command": command.command,
                              "params": json.loads(command.params), "ack_requested": command.ack_requested})
    return taken


def acknowledge_commands(harvester_id, command_ids, now=None):
    """Mark the commands this harvester acquired as acknowledged; returns how many changed."""
    HarvesterCommand = models.HarvesterCommand
    if not command_ids:
        return 0
    with database.atomic():
        return HarvesterCommand.update(status="acknowledged", status_time=now or states.utcnow()).where(
            HarvesterCommand.id.in_(command_ids), HarvesterCommand.acquired_by == harvester_id,
            HarvesterCommand.status == "sent").execute()


def list_commands(limit=100):
    HarvesterCommand = models.HarvesterCommand
    return [{"command_id": c.id, "harvester_id": c.harvester_id, "command": c.command, "params": json.loads(c.params),
             "status": c.status, "acquired_by": c.acquired_by, "creation_time": iso(c.creation_time),
             "status_time": iso(c.status_time)}
            for c in HarvesterCommand.select().order_by(HarvesterCommand.id.desc()).limit(limit)]
