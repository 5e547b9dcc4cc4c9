"""The command agent: heartbeat to the server, then take its commands, execute them, acknowledge them.

KILL_WORKERS ``{"queue": Q}`` and/or ``{"worker_ids": [...]}`` marks live workers for the sweeper;
SET_N_WORKERS ``{"queue": Q, "n_workers": N or null}`` replaces the queue's maxWorkers (null clears it);
REPORT_WORKER_STATS ``{"queue": Q}`` (or none: all) makes the propagator report now. A command is stored before
it is executed and acknowledged only once executed, so a crash in between executes it again (each is idempotent)
rather than losing it.
"""
import json
import logging
import os

from harvester import db, models
from harvester.agents.base import Agent
from harvester.steps import iso, kill_workers

log = logging.getLogger(__name__)


class Commands(Agent):
    name = "commands"

    def __init__(self, context):
        super().__init__(context)
        self.started = None
        self.last_heartbeat = None

    def run_once(self, now):
        self.started = self.started or now
        due = self.last_heartbeat is None or \
            (now - self.last_heartbeat).total_seconds() >= self.ctx.settings.heartbeat_period
        if due:
            self.ctx.server.heartbeat(iso(self.started), agent_figures(), queue_report(self.ctx, now),
                                      home_disk(self.ctx.home))
            self.last_heartbeat = now
        with models.database.atomic():
            for command in self.ctx.server.acquire_commands():
                models.Command.insert(command_id=int(command["command_id"]), command=str(command["command"]),
                                      params=json.dumps(command.get("params") or {}), received=now) \
                    .on_conflict_ignore().execute()
        done = []
        for command in models.Command.select().where(models.Command.status != "acknowledged"):
            if command.status == "received":
                result = self.execute(command.command, json.loads(command.params or "{}"), now)
                models.Command.update(status="done", result=result[:2000]).where(
                    models.Command.command_id == command.command_id).execute()
            done.append(command.command_id)
        if done:
            self.ctx.server.acknowledge_commands(done)
            models.Command.update(status="acknowledged").where(models.Command.command_id.in_(done)).execute()
        return len(done)

    def execute(self, name, params, now):
        if name == "KILL_WORKERS":
            return kill_workers(params.get("queue"), params.get("worker_ids"), "KILL_WORKERS from the server",
                                self.ctx)
        if name == "SET_N_WORKERS":
            queue, value = params.get("queue"), params.get("n_workers")
            if not queue:
                return "refused: no queue"
            db.queue_state(queue)
            models.QueueState.update(n_workers_override=None if value is None else int(value)) \
                .where(models.QueueState.queue == queue).execute()
            log.info("queue %s: maxWorkers set to %s by the server", queue, value)
            self.ctx.wake("adjuster")
            return f"queue {queue}: n_workers {value}"
        if name == "REPORT_WORKER_STATS":
            queues = [params["queue"]] if params.get("queue") else list(self.ctx.live_queues())
            for queue in queues:
                db.queue_state(queue)
            models.QueueState.update(stats_requested=True).where(models.QueueState.queue.in_(queues)).execute()
            self.ctx.wake("propagator")
            return f"statistics requested for {len(queues)} queues"
        log.error("unknown command %s %s from the server: ignored", name, params)
        return f"unknown command {name}: ignored"


def agent_figures():
    """Each agent's cycles so far: runs, errors, last duration (s), last error and its time."""
    return {run.agent: {"runs": run.runs, "errors": run.errors, "last_duration": round(run.last_duration, 6),
                        "last_error": run.last_error or None, "last_error_time": iso(run.last_error_time)}
            for run in models.AgentRun.select()}


def queue_report(context, now):
    """Each queue harvester works for or has paused: paused (its configuration is invalid), seconds of backoff
    left after failures, consecutive failures, and the error; the server's /metrics alerts on these."""
    report = {}
    for name in sorted(set(context.queues) | set(context.queue_errors)):
        state = db.queue_state(name)
        left = (state.backoff_until - now).total_seconds() if state.backoff_until else 0.0
        report[name] = {"paused": bool(state.config_error), "backoff_s": round(max(0.0, left), 1),
                        "failures": state.failures, "error": (state.config_error or state.last_error or "")[:512]}
    return report


def home_disk(home):
    """{size_bytes, avail_bytes} of the file system holding harvester's home (None when it cannot be read)."""
    try:
        stat = os.statvfs(home)
    except OSError:
        return None
    return {"size_bytes": stat.f_blocks * stat.f_frsize, "avail_bytes": stat.f_bavail * stat.f_frsize}

