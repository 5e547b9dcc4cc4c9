"""What a testbed run did: figures from the server's database, this process's CPU times and the pilots' own
timing files, written to summary.json and printed.

The ideal makespan is what the pilots could do if a job cost nothing but its payload: jobs x job seconds / pilots
running at once. The CPU-bound floor beside it is the CPU every process used (server, harvester, pilots, payloads)
spread over the cores: no schedule ends sooner than that either.

Two makespans, both ending when the demo task's last job ended: ``makespan_s`` (cold) from the first task's
submission, when no pilot was up, so harvester's launch of the pilots and their start-up are in it; with
``--warm-up`` that first task is the warm-up, whose pilots' start and jobs it includes. ``makespan_warm_s`` (only
with ``--warm-up``) from the demo task's submission, every pilot up and asking for work: how the task runners'
benchmarks time themselves (bench/peers.py). ``cold_start_s`` is the first submission -> the first job started.
"""
import glob
import json
import os

from testbed.config import OUT_SCOPE
from testbed.demo import DATASET, OUTPUT
from testbed.processes import count_files, utc_epoch


def summarize(run, state):
    """The summary's fields. ``run`` is the :class:`testbed.bed.Testbed` whose task has ended (``state``)."""
    from minipanda.core import models

    args = run.args
    cpu = os.times()
    job = models.Job
    rows = list(job.select(job.panda_id, job.status, job.attempt_nr, job.start_time, job.end_time)
                .where(job.task_id == run.task_id).tuples())
    finished = [r for r in rows if r[1] == "finished"]
    first_started = first_job_started([run.warm_up_task_id, run.task_id])
    demo_started = first_job_started([run.task_id]) if run.warm_up_task_id else first_started
    last_end = max((r[4] for r in rows if r[4] is not None), default=None)
    # cold: from the first submission, when no pilot was up (with --warm-up, the warm-up's, which it includes);
    # warm (--warm-up): from the demo task's submission, its inputs already in the file store, every pilot up
    makespan = utc_epoch(last_end) - run.first_submitted_at if last_end else None
    warm = utc_epoch(last_end) - run.submitted_at if last_end and run.warm_up_task_id else None
    ideal = args.jobs * args.job_seconds / run.pilots
    out_dir = os.path.join(run.home.server, "files", OUT_SCOPE)
    by_state = {}
    for row in rows:
        by_state[row[1]] = by_state.get(row[1], 0) + 1
    result = {
        "home": run.home.path, "url": run.url, "monitor": run.monitor_url(), "task_id": run.task_id,
        "task_status": state["task"], "jobs": args.jobs, "jobs_by_state": by_state,
        "attempts": len(rows), "retries": max(0, len(rows) - args.jobs),
        "finished_inputs": len(finished), "complete": state["task"] == "done" and len(finished) == args.jobs,
        "cores": run.cores, "pilots": run.pilots, "job_seconds": args.job_seconds, "files": args.files,
        "makespan_s": makespan, "ideal_s": ideal, "ratio": (makespan / ideal) if makespan and ideal else None,
        "jobs_per_s": (len(finished) / makespan) if makespan else None,
        "warm_up": bool(run.warm_up_task_id), "warm_up_task_id": run.warm_up_task_id,
        "warm_up_panda_ids": sorted(r[0] for r in job.select(job.panda_id).where(
            job.task_id == run.warm_up_task_id).tuples()) if run.warm_up_task_id else [],
        "warm_up_s": (run.submitted_at - run.first_submitted_at) if run.warm_up_task_id else None,
        "pilots_up_at_submission": run.pilots_at_submission,
        "makespan_warm_s": warm, "ratio_warm": (warm / ideal) if warm and ideal else None,
        "jobs_per_s_warm": (len(finished) / warm) if warm else None,
        "first_job_started_s": (utc_epoch(first_started) - run.started) if first_started else None,
        "cold_start_s": (utc_epoch(first_started) - run.first_submitted_at) if first_started else None,
        "warm_start_s": (utc_epoch(demo_started) - run.submitted_at) if demo_started and warm else None,
        "outputs_dir": out_dir, "outputs": count_files(out_dir, "." + OUTPUT),
        "logs": count_files(out_dir, ".log.tgz", f"{run.task_id}."),
        "pilots_started": len(run.processes.records()),
        # CPU seconds so far: this process (server + harvester threads), and the pilots with their payloads
        # (job scripts re-parented here and collected: their children's time is counted in theirs)
        "cpu_testbed_s": cpu.user + cpu.system, "cpu_pilots_s": cpu.children_user + cpu.children_system,
        # of cpu_testbed_s: writing the demo's input files (data/ and the file store) before its submission, the
        # demo's set-up as a benchmark's inputs made beforehand; left out of the per-job figures
        "cpu_inputs_s": run.cpu_inputs_s,
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    result.update(pilot_cpu(run.home.harvester))
    total = result["cpu_testbed_s"] + result["cpu_pilots_s"]
    result["cpu_floor_s"] = total / run.cores
    result["cpu_per_job_ms"] = 1000 * (total - run.cpu_inputs_s) / len(rows) if rows else None
    if result["pilots_reporting_cpu"] == result["pilots_started"] and rows:
        # minipanda's own processes: the payloads' CPU is the job's, not the system's
        result["cpu_minipanda_per_job_ms"] = 1000 * (result["cpu_testbed_s"] - run.cpu_inputs_s +
                                                     result["cpu_pilots_own_s"]) / len(rows)
    else:
        result["cpu_minipanda_per_job_ms"] = None
    return result


def first_job_started(task_ids):
    """When the first job of these tasks started: a job is reported starting before a stage-in, running once its
    payload outlives a delay; a short job without inputs is only reported when it ends, with the start time of its
    payload."""
    import peewee
    from minipanda.core import models

    job = models.Job
    rows = list(job.select(job.panda_id, job.start_time).where(job.task_id.in_([t for t in task_ids if t])).tuples())
    if not rows:
        return None
    logged = models.StatusLog.select(peewee.fn.MIN(models.StatusLog.time)).where(
        models.StatusLog.panda_id.in_([r[0] for r in rows]),
        models.StatusLog.new_status.in_(["starting", "running"])).scalar()
    return min([t for t in [logged] + [r[1] for r in rows] if t is not None], default=None)


def pilot_cpu(harvester_home):
    """The pilots' own CPU seconds and their payloads', from the figures each writes into its pilot_timing.json
    when it ends; ``pilots_reporting_cpu`` says how many did (a pilot still running has not)."""
    own = payloads = 0.0
    reporting = 0
    for path in glob.glob(os.path.join(harvester_home, "workers", "*", "*", "PanDA_Pilot-*", "pilot_timing.json")):
        try:
            with open(path) as handle:
                figures = json.load(handle).get("0", {})
            own, payloads = own + float(figures["PILOT_CPU_S"]), payloads + float(figures["PILOT_PAYLOADS_CPU_S"])
            reporting += 1
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return {"cpu_pilots_own_s": own, "cpu_payloads_s": payloads, "pilots_reporting_cpu": reporting}


def write(path, s):
    with open(path, "w") as handle:
        json.dump(s, handle, indent=1)


def text(s, data_dir, keep_running):
    """The summary as the lines printed at the end of the run."""
    states_text = ", ".join(f"{k} {v}" for k, v in sorted(s["jobs_by_state"].items(), key=lambda kv: -kv[1]))
    lines = [
        "",
        f"task {s['task_id']} {s['task_status']}: {s['finished_inputs']} of {s['jobs']} jobs finished"
        f" ({'all' if s['complete'] else 'NOT all'})",
        f"  job attempts by final state: {states_text}; retries {s['retries']}",
    ]
    floor = (f"CPU-bound floor {s['cpu_floor_s']:.1f} s = {s['cpu_testbed_s'] + s['cpu_pilots_s']:.1f} CPU-s / "
             f"{s['cores']} cores")
    if s["makespan_warm_s"]:
        lines.append(f"  makespan {s['makespan_warm_s']:.1f} s warm (demo task submitted, {s['pilots_up_at_submission']}"
                     f" pilots up -> last job ended), {s['jobs_per_s_warm']:.1f} jobs/s"
                     + (f", ratio {s['ratio_warm']:.2f}" if s["ideal_s"] else "")
                     + f"; first job started {s['warm_start_s']:.2f} s after its submission")
    if s["makespan_s"]:
        lines.append(f"  makespan {s['makespan_s']:.1f} s " + (
            f"cold (warm-up task submitted, no pilot up -> last job ended; the warm-up took {s['warm_up_s']:.1f} s)"
            if s["warm_up"] else "(task submitted -> last job ended)") + f", {s['jobs_per_s']:.1f} jobs/s")
        lines.append(f"  ideal {s['ideal_s']:.1f} s = {s['jobs']} x {s['job_seconds']:g} s / {s['pilots']} pilots, "
                     f"ratio {s['ratio']:.2f}; {floor}" if s["ideal_s"] else f"  {floor}")
    if s["first_job_started_s"] is not None:
        lines.append(f"  first job started {s['cold_start_s']:.2f} s after the first task's submission (cold start), "
                     f"{s['first_job_started_s']:.1f} s after the command started")
    if s["cpu_minipanda_per_job_ms"] is not None:
        pilots = (f"pilots {s['cpu_pilots_own_s']:.1f} s, their payloads {s['cpu_payloads_s']:.1f} s; "
                  f"{s['cpu_minipanda_per_job_ms']:.1f} ms per job attempt without the payloads")
    else:
        pilots = f"pilots and payloads {s['cpu_pilots_s']:.1f} s; {s['cpu_per_job_ms'] or 0:.1f} ms per job attempt"
    inputs = (f" (writing the inputs {s['cpu_inputs_s']:.1f} s of it, not counted per job)"
              if s["cpu_inputs_s"] >= 0.05 else "")
    lines.append(f"  CPU: server + harvester {s['cpu_testbed_s']:.1f} s{inputs}, {pilots}; "
                 f"load average {'/'.join(str(x) for x in s['load'])}")
    lines.append(f"  {s['pilots']} pilots at a time on {s['cores']} cores ({s['pilots_started']} started). "
                 "More pilots than cores, on purpose: the demo payload only sleeps, and each job also costs "
                 "the pilot its own work (getJob, stage-in, log tarball, uploads, final update: CPU above), "
                 "during which a core would otherwise wait")
    lines.append(f"  outputs and logs: {s['outputs_dir']}/ ({s['outputs']} *.{OUTPUT}, {s['logs']} *.log.tgz)")
    if s["files"] != "none":
        lines.append(f"  inputs: {data_dir}/ (also in the file store under {DATASET}/)")
    lines.append(f"  everything else: {s['home']} (summary.json, testbed.log, queues.yaml, server/, harvester/)")
    if keep_running:
        lines.append(f"monitor: {s['monitor']} (up until Ctrl-C)")
    else:
        lines.append(f"monitor: {s['monitor']} was up while the task ran; 'minipanda testbed --keep-running' "
                     "keeps the server, harvester and monitor up afterwards")
    return "\n".join(lines)
