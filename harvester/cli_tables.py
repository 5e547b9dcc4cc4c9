"""What `harvester status|workers|explain|kill` print: tables for people, ``--json`` for scripts."""
import datetime
import json

import peewee

from harvester import models, shapes
from harvester.errors import HarvesterError
from harvester.handoff import usage
from harvester.states import FINAL, HeldJobStatus, WorkerError, WorkerStatus
from harvester.steps import kill_workers


def text(value):
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def table(rows, headers):
    widths = [max(len(h), *(len(text(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(text(v).ljust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def worker_object(w):
    return {"workerID": w.worker_id, "batchID": w.batch_id, "queue": w.queue, "status": w.status,
            "diag": w.diag, "mapType": w.map_type, "accessPoint": w.access_point, "cores": w.cores,
            "memory": w.memory_mb, "pilots": w.n_pilots, "nodes": w.nodes, "walltime": w.walltime_s,
            "elapsed": w.elapsed_s, "chargeSource": w.charge_source, "payloadWall": w.payload_wall_s,
            "payloadCpu": w.payload_cpu_s, "pilotWait": w.pilot_wait_s, "pilotDrain": w.pilot_drain_s,
            "jobsRun": w.jobs_run, "usefulPercent": usage.useful_percent(w.payload_wall_s, w.n_pilots, w.elapsed_s),
            "submissionAttempts": w.submission_attempts, "submitTime": text(w.submit_time) or None,
            "startTime": text(w.start_time) or None, "endTime": text(w.end_time) or None,
            "lastSeen": text(w.last_seen) or None, "killReason": w.kill_reason, "reported": w.reported,
            "errorCode": w.error_code, "error": error_name(w.error_code)}


def delivered_lines(worker):
    """What the pilots did with the time charged (harvester.handoff.usage), in words; [] before the worker ended
    or when no pilot left a usage record."""
    if worker.payload_wall_s is None:
        return ["delivered: no pilot usage record (a pilot other than ours, or none ended yet)"] \
            if worker.elapsed_s is not None else []
    slots = f"{worker.n_pilots} pilot slot{'s' if worker.n_pilots != 1 else ''}"
    lines = [f"delivered: payloads ran {worker.payload_wall_s:.0f} s wall, {worker.payload_cpu_s:.0f} s CPU, "
             f"{worker.jobs_run} job{'s' if worker.jobs_run != 1 else ''}"]
    idle = f"idle: pilots waiting {worker.pilot_wait_s:.0f} s (asking for jobs, staging, reporting)"
    if worker.pilot_drain_s is not None:
        idle += f", slots without a pilot {worker.pilot_drain_s:.0f} s (starting, drained before the end)"
    lines.append(idle)
    useful = usage.useful_percent(worker.payload_wall_s, worker.n_pilots, worker.elapsed_s)
    if useful is not None:
        lines.append(f"useful: {useful:.1f}% of {slots} x {worker.elapsed_s:.0f} s ran payloads")
    return lines


def error_name(code):
    try:
        return WorkerError(code).name if code else None
    except ValueError:
        return str(code)


def status(args):
    queues = {}
    for queue, state, count in (models.Worker.select(models.Worker.queue, models.Worker.status,
                                                     peewee.fn.COUNT(models.Worker.worker_id))
                                .group_by(models.Worker.queue, models.Worker.status).tuples()):
        queues.setdefault(queue, {})[state] = count
    held = dict(models.HeldJob.select(models.HeldJob.queue, peewee.fn.COUNT(models.HeldJob.panda_id))
                .where(models.HeldJob.status != HeldJobStatus.DONE.value).group_by(models.HeldJob.queue).tuples())
    states = {row.queue: row for row in models.QueueState.select()}
    data = {"queues": {}, "agents": {}, "outbox": {
        "pending": models.Outbox.select().where(models.Outbox.rejected == False).count(),  # noqa: E712
        "rejected": models.Outbox.select().where(models.Outbox.rejected == True).count()}}  # noqa: E712
    for name in sorted(set(queues) | set(states)):
        state = states.get(name)
        decision = json.loads(state.decision) if state and state.decision else {}
        data["queues"][name] = {
            "workers": queues.get(name, {}), "held_jobs": held.get(name, 0),
            "paused": bool(state and state.config_error), "config_error": state.config_error if state else "",
            "last_decision": decision.get("n"), "decision_winner": decision.get("winner"),
            "backoff_until": text(state.backoff_until) if state and state.backoff_until else None,
            "last_error": state.last_error if state else ""}
    for run in models.AgentRun.select().order_by(models.AgentRun.agent):
        data["agents"][run.agent] = {"last_start": text(run.last_start), "duration_s": round(run.last_duration, 3),
                                     "runs": run.runs, "errors": run.errors, "last_error": run.last_error,
                                     "last_error_time": text(run.last_error_time) or None}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    states_order = [s.value for s in WorkerStatus]
    rows = []
    for name, q in data["queues"].items():
        workers = " ".join(f"{s}={q['workers'][s]}" for s in states_order if q["workers"].get(s))
        note = f"PAUSED: {q['config_error']}" if q["paused"] else (
            f"backing off until {q['backoff_until']}: {q['last_error']}" if q["backoff_until"] else q["last_error"])
        rows.append((name, workers or "-", q["held_jobs"], q["last_decision"], q["decision_winner"] or "", note))
    print(table(rows, ["QUEUE", "WORKERS", "HELD JOBS", "LAST N", "LIMITED BY", "ERRORS"]))
    print()
    rows = [(name, a["last_start"], a["duration_s"], a["runs"], a["errors"], a["last_error"][:80])
            for name, a in data["agents"].items()]
    print(table(rows, ["AGENT", "LAST CYCLE (UTC)", "SECONDS", "RUNS", "ERRORS", "LAST ERROR"]))
    print(f"\noutbox: {data['outbox']['pending']} reports waiting for the server, "
          f"{data['outbox']['rejected']} refused for good")
    return 0


def workers(args):
    query = models.Worker.select().order_by(models.Worker.worker_id.desc()).limit(max(1, args.limit))
    if args.queue:
        query = query.where(models.Worker.queue == args.queue)
    if args.state:
        try:
            query = query.where(models.Worker.status == WorkerStatus(args.state).value)
        except ValueError:
            raise HarvesterError(f"--state {args.state!r}: expected one of "
                                 f"{', '.join(s.value for s in WorkerStatus)}") from None
    rows = list(query)
    if args.json:
        print(json.dumps([worker_object(w) for w in rows], indent=2))
        return 0
    print(table([(w.worker_id, w.queue, w.status, w.batch_id, w.submit_time, w.end_time, (w.diag or "")[:60])
                 for w in rows], ["WORKER", "QUEUE", "STATUS", "BATCH ID", "SUBMITTED", "ENDED", "DIAG"]))
    return 0


def explain(args):
    if args.worker is not None:
        return explain_worker(args)
    if not args.queue:
        raise HarvesterError("explain: name a QUEUE or give --worker ID")
    state = models.QueueState.get_or_none(models.QueueState.queue == args.queue)
    if state is None:
        raise HarvesterError(f"queue {args.queue!r}: harvester has no record of it (known: " + ", ".join(
            q.queue for q in models.QueueState.select()) + ")")
    decision = json.loads(state.decision) if state.decision else None
    shape = json.loads(state.shape) if state.shape else None
    if args.json:
        print(json.dumps({"queue": args.queue, "decision": decision, "decision_time": text(state.decision_time),
                          "shape": shape,
                          "config_error": state.config_error, "last_error": state.last_error}, indent=2))
        return 0
    if state.config_error:
        print(f"queue {args.queue} is PAUSED: its configuration is invalid:\n  {state.config_error}")
    if not decision:
        print(f"queue {args.queue}: no decision yet")
        return 0
    print(f"queue {args.queue}: {decision['n']} new workers at {text(state.decision_time)} UTC")
    print("  limits (the smallest wins):")
    for name, value in decision["limits"]:
        mark = "  <- winner" if name == decision["winner"] else ""
        print(f"    {name:70} {value}{mark}")
    print("  inputs: " + ", ".join(f"{k}={v}" for k, v in decision["inputs"].items()))
    if shape:
        print(f"  last backfill shape at {shape['time']} UTC:")
        print("\n".join(shapes.describe(shape)))
    if state.last_error:
        print(f"  last error: {state.last_error}")
    return 0


def explain_worker(args):
    worker = models.Worker.get_or_none(models.Worker.worker_id == args.worker)
    if worker is None:
        raise HarvesterError(f"worker {args.worker}: no such worker")
    history = list(models.WorkerStatusLog.select().where(models.WorkerStatusLog.worker_id == worker.worker_id)
                   .order_by(models.WorkerStatusLog.id))
    jobs = [row.panda_id for row in models.JobWorker.select().where(models.JobWorker.worker_id == worker.worker_id)]
    if args.json:
        print(json.dumps({"worker": worker_object(worker), "jobs": jobs, "last_plugin_output": worker.last_plugin_output,
                          "history": [{"time": text(h.time), "from": h.old_status, "to": h.new_status,
                                       "kind": h.kind, "reason": h.reason} for h in history]}, indent=2))
        return 0
    print(f"worker {worker.worker_id} of queue {worker.queue}: {worker.status}"
          + (f" (final)" if worker.status in {s.value for s in FINAL} else ""))
    print(f"  batch id {worker.batch_id or '-'}, access point {worker.access_point or '-'}, "
          f"{worker.n_pilots} pilot{'s' if worker.n_pilots != 1 else ''} on {worker.cores} "
          f"core{'s' if worker.cores != 1 else ''}" + (f" of {worker.nodes} nodes" if worker.nodes > 1 else "")
          + f", walltime {worker.walltime_s} s, "
          f"{worker.submission_attempts} submission attempts, jobs {jobs or '-'}")
    if worker.elapsed_s is not None:
        print(f"  charged: {worker.nodes} node{'s' if worker.nodes != 1 else ''} x {worker.elapsed_s:.0f} s = "
              f"{worker.nodes * worker.elapsed_s / 3600:.3f} node-hours ({worker.charge_source})")
    for line in delivered_lines(worker):
        print(f"  {line}")
    if worker.diag:
        print(f"  diag: {worker.diag}")
    if worker.error_code:
        print(f"  error: {error_name(worker.error_code)} ({worker.error_code})")
    if worker.kill_reason:
        print(f"  kill requested: {worker.kill_reason}")
    print("  history:")
    for h in history:
        arrow = f"{h.old_status or '(new)'} -> {h.new_status}" if h.kind == "transition" else "note"
        print(f"    {text(h.time)}  {arrow:24} {h.reason}")
    print(f"  last batch system output: {worker.last_plugin_output or '-'}")
    return 0


def kill(args):
    if not args.queue and not args.worker:
        raise HarvesterError("kill: give --queue QUEUE or --worker ID")
    print(kill_workers(args.queue, args.worker, "harvester kill (command line)"))
    return 0
