"""What a testbed run did: figures from the server's database and this process's CPU times, written to
summary.json and printed."""
import json
import os

from testbed.config import OUT_SCOPE
from testbed.demo import DATASET, OUTPUT
from testbed.processes import count_files, utc_epoch


def summarize(run, state):
    """The summary's fields. ``run`` is the :class:`testbed.bed.Testbed` whose task has ended (``state``)."""
    import peewee
    from minipanda.core import models

    args = run.args
    cpu = os.times()
    job = models.Job
    rows = list(job.select(job.panda_id, job.status, job.attempt_nr, job.start_time, job.end_time)
                .where(job.task_id == run.task_id).tuples())
    finished = [r for r in rows if r[1] == "finished"]
    first_running = models.StatusLog.select(peewee.fn.MIN(models.StatusLog.time)).where(
        models.StatusLog.panda_id.in_([r[0] for r in rows]),
        models.StatusLog.new_status == "running").scalar() if rows else None
    last_end = max((r[4] for r in rows if r[4] is not None), default=None)
    makespan = utc_epoch(last_end) - run.submitted_at if last_end else None
    ideal = args.jobs * args.job_seconds / run.cores
    out_dir = os.path.join(run.home.server, "files", OUT_SCOPE)
    by_state = {}
    for row in rows:
        by_state[row[1]] = by_state.get(row[1], 0) + 1
    return {
        "home": run.home.path, "url": run.url, "monitor": run.monitor_url(), "task_id": run.task_id,
        "task_status": state["task"], "jobs": args.jobs, "jobs_by_state": by_state,
        "attempts": len(rows), "retries": max(0, len(rows) - args.jobs),
        "finished_inputs": len(finished), "complete": state["task"] == "done" and len(finished) == args.jobs,
        "cores": run.cores, "pilots": run.pilots, "job_seconds": args.job_seconds,
        "makespan_s": makespan, "ideal_s": ideal, "ratio": (makespan / ideal) if makespan and ideal else None,
        "jobs_per_s": (len(finished) / makespan) if makespan else None,
        "first_job_running_s": (utc_epoch(first_running) - run.started) if first_running else None,
        "outputs_dir": out_dir, "outputs": count_files(out_dir, "." + OUTPUT), "logs": count_files(out_dir, ".log.tgz"),
        "pilots_started": len(run.processes.records()),
        # CPU seconds so far: this process (server + harvester threads), and the pilots with their payloads
        # (job scripts re-parented here and collected: their children's time is counted in theirs)
        "cpu_testbed_s": cpu.user + cpu.system, "cpu_pilots_s": cpu.children_user + cpu.children_system,
        "load": [round(x, 2) for x in os.getloadavg()],
    }


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
    if s["makespan_s"]:
        lines.append(f"  makespan {s['makespan_s']:.1f} s (task submitted -> last job ended), "
                     f"{s['jobs_per_s']:.1f} jobs/s; ideal {s['ideal_s']:.1f} s = {s['jobs']} x "
                     f"{s['job_seconds']:g} s / {s['cores']} cores, ratio {s['ratio']:.2f}"
                     if s["ideal_s"] else f"  makespan {s['makespan_s']:.1f} s, {s['jobs_per_s']:.1f} jobs/s")
    if s["first_job_running_s"] is not None:
        lines.append(f"  first job running {s['first_job_running_s']:.1f} s after the command started")
    lines.append(f"  CPU: server + harvester {s['cpu_testbed_s']:.1f} s, pilots and payloads "
                 f"{s['cpu_pilots_s']:.1f} s; "
                 f"load average {'/'.join(str(x) for x in s['load'])}")
    lines.append(f"  {s['pilots']} pilots at a time on {s['cores']} cores ({s['pilots_started']} started). "
                 "More pilots than cores, on purpose: the demo payload only sleeps, and each job also costs "
                 "the pilot its own work (getJob, stage-in, log tarball, uploads, final update: CPU above), "
                 "during which a core would otherwise wait")
    lines.append(f"  outputs and logs: {s['outputs_dir']}/ ({s['outputs']} *.{OUTPUT}, {s['logs']} *.log.tgz)")
    lines.append(f"  inputs: {data_dir}/ (also in the file store under {DATASET}/)")
    lines.append(f"  everything else: {s['home']} (summary.json, testbed.log, queues.yaml, server/, harvester/)")
    if keep_running:
        lines.append(f"monitor: {s['monitor']} (up until Ctrl-C)")
    else:
        lines.append(f"monitor: {s['monitor']} was up while the task ran; 'minipanda testbed --keep-running' "
                     "keeps the server, harvester and monitor up afterwards")
    return "\n".join(lines)
