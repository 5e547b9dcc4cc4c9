#!/usr/bin/env python
"""Slurm benchmark: short jobs as one Slurm job each, or through harvester's multi-job pilots; and the status cycle.

On a real one-node Slurm (munged + slurmctld + slurmd, started here on loopback with the tests' throw-away config:
--slots job slots whatever the machine has, since the payloads only sleep) behind a real sshd:

  (a) sbatch    --jobs jobs of --payload s, each its own ``sbatch --wrap 'sleep P'`` (1 core, 100 MB). Makespan
                from the first sbatch to the last job seen ended (squeue every 0.2 s).
  (b) pilots    the same jobs submitted to a real ``minipanda serve``; ``harvester run`` (agent periods --period s)
                submits pilots over SSH to that Slurm (maxWorkers = --slots, pilot timefloor --timefloor min, so each
                pilot takes job after job). Makespan from starting harvester to the last job seen finished.
                With --per-worker N the same slots are filled by workers of N pilots each (pilot.per_worker: one
                Slurm job of N tasks, each pilot an srun step): one run per value of the comma list.
  (c) status    --tracked held Slurm jobs (``sbatch --hold``) and ONE ``SlurmBatch.status()`` call for all of them,
                over SSH and locally: the cost of one monitor status query for that many workers.

Nothing is asserted; the goal (pilots at least 3x faster than one sbatch per job) is only reported. Only 127.0.0.1
is contacted, and every daemon, server, harvester and Slurm job the bench starts is stopped (by pid, or scancel).
Needs root and the Debian packages slurm-wlm, munge and openssh-server (as the tests).

    python3 bench/slurm_pilots.py                      # 200 jobs of 1 s, 8 slots, 1,000 tracked workers
    python3 bench/slurm_pilots.py --per-worker 1,8 --parts sbatch,pilots
    python3 bench/slurm_pilots.py --parts status --tracked 5000
"""
import argparse
import concurrent.futures
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.join(ROOT, "tests"))  # the tests' daemon fixtures (slurmhelp) and testbed (harvesterhelp)


def load():
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def wait_empty(slurm, poll=0.2, limit=3600):
    """Seconds until squeue lists no job left (pending or running)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        if not slurm.run("squeue", "--noheader", "--format=%i").stdout.strip():
            return True
        time.sleep(poll)
    return False


def part_sbatch(args, cluster):
    slurm = cluster.slurm
    t0 = time.time()
    for i in range(args.jobs):
        result = slurm.run("sbatch", "--parsable", "--job-name", f"bench-{i}", "--cpus-per-task=1", "--mem=100M",
                           "--output=/dev/null", "--wrap", f"sleep {args.payload:g}")
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed: {result.stderr}")
    submitted = time.time() - t0
    complete = wait_empty(slurm)
    makespan = time.time() - t0
    ideal = args.jobs * args.payload / args.slots
    print(f"(a) one sbatch per job: {args.jobs} jobs of {args.payload:g} s on {args.slots} slots in {makespan:.1f} s"
          f"{'' if complete else ' (TIME LIMIT)'} (submitting took {submitted:.1f} s); ideal {ideal:.1f} s, "
          f"ratio {makespan / ideal:.2f}; load {load()}")
    return makespan


def part_pilots(args, cluster, base, per_worker=1):
    from harvesterhelp import QUEUE, Testbed, queue_config

    slots = args.slots
    workers = max(1, slots // per_worker)
    queue = queue_config(batch={"system": "slurm"}, resources={"corecount": 1, "maxrss": 1000},
                         transport=cluster.sshd.queue_transport(workdir=os.path.join(base, f"workers{per_worker}")),
                         limits={"maxWorkers": workers, "nQueueLimitWorker": workers,
                                 "maxNewWorkersPerCycle": workers},
                         pilot={"timefloor": args.timefloor, "lifetime": 86400, "heartbeat": 60,
                                "per_worker": per_worker})
    bed = Testbed(os.path.join(base, f"pilots{per_worker}"), {QUEUE: queue})
    try:
        trf = bed.script("payload.sh", f"#!/bin/sh\nsleep {args.payload:g}\n")
        specs = [{"jobName": f"bench.slurm.{i}", "computingSite": QUEUE, "prodSourceLabel": "managed",
                  "transformation": trf, "jobParameters": "--x 1", "coreCount": 1, "minRamCount": 500,
                  "maxWalltime": 600, "Files": [{"type": "log", "lfn": f"log.{i}.tgz", "scope": "bench"}]}
                 for i in range(args.jobs)]
        ids = [row[0] for row in bed.v1("job/submit", jobs=specs)]
        settings = [f"{name}_period={args.period:g}" for name in ("monitor", "propagator", "adjuster", "submitter",
                                                                   "fetcher")]
        t0 = time.time()
        bed.start(*settings)
        done, deadline = 0, t0 + args.time_limit
        while time.time() < deadline:
            states = bed.statuses(ids).values()
            done = sum(s in ("finished", "failed", "cancelled", "closed") for s in states)
            if done == len(ids) or bed.daemon.poll() is not None:
                break
            time.sleep(0.5)
        makespan = time.time() - t0
        finished = sum(s == "finished" for s in bed.statuses(ids).values())
        bed.stop()
        workers = bed.workers()
        ideal = args.jobs * args.payload / slots
        print(f"(b) harvester pilots over SSH, {per_worker} per worker: {finished} of {args.jobs} jobs finished "
              f"({done} ended) in {makespan:.1f} s{'' if done == len(ids) else ' (TIME LIMIT)'} with "
              f"{len(workers)} Slurm jobs (maxWorkers {max(1, slots // per_worker)}, timefloor {args.timefloor} "
              f"min, agent periods {args.period:g} s); ideal {ideal:.1f} s, ratio {makespan / ideal:.2f}; "
              f"load {load()}")
        return makespan
    finally:
        bed.close()


def part_status(args, cluster):
    from harvester.batch.slurm import SlurmBatch
    from harvester.transport.ssh import SshTransport, SshSettings
    from harvester.transport import LocalTransport
    from queueconfig import Queue

    slurm, queue = cluster.slurm, Queue.model_validate({"name": "BENCH_STATUS", "batch": {"system": "slurm"}})

    def submit(i):
        result = slurm.run("sbatch", "--parsable", "--hold", "--job-name", f"tracked-{i}", "--mem=10M",
                           "--output=/dev/null", "--wrap", "true")
        return result.stdout.strip()

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = [i for i in pool.map(submit, range(args.tracked)) if i.isdigit()]
    print(f"(c) {len(ids)} held Slurm jobs submitted in {time.time() - t0:.1f} s")
    sshd = cluster.sshd
    remote = SshTransport(SshSettings(host="127.0.0.1", port=sshd.port, user="root", key_file=sshd.user_key,
                                      known_hosts=sshd.known_hosts))
    os.environ["SLURM_CONF"] = slurm.conf  # the local transport's commands find this Slurm
    try:
        for name, transport in (("ssh", remote), ("local", LocalTransport())):
            calls = []
            run = transport.run

            def counted(argv, **kwargs):
                calls.append(argv[0])
                return run(argv, **kwargs)
            transport.run = counted
            plugin = SlurmBatch(queue, transport)
            plugin.status(ids[:1])  # connect and warm up
            calls.clear()
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                result = plugin.status(ids)
                times.append(time.perf_counter() - t)
            times.sort()
            print(f"    status() of {len(ids)} tracked workers over {name}: median {times[len(times) // 2]:.3f} s "
                  f"(min {times[0]:.3f}, max {times[-1]:.3f}) over {args.repeat} cycles; {len(result.states)} "
                  f"states; commands per cycle: {len(calls) / args.repeat:g} ({', '.join(sorted(set(calls)))})")
    finally:
        remote.close()
        slurm.run("scancel", "--user=root")


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="sbatch,pilots,status", help="comma list of sbatch, pilots, status")
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--payload", type=float, default=1.0, help="seconds each job sleeps")
    p.add_argument("--slots", type=int, default=8, help="job slots of the Slurm node (= maxWorkers of the queue)")
    p.add_argument("--timefloor", type=int, default=10, help="pilot timefloor, minutes")
    p.add_argument("--per-worker", default=[1], type=lambda text: [int(v) for v in text.split(",")],
                   help="pilots per worker (pilot.per_worker), a comma list: one pilots run per value (default 1)")
    p.add_argument("--period", type=float, default=0.5, help="harvester agent periods, s")
    p.add_argument("--tracked", type=int, default=1000, help="held Slurm jobs for the status part")
    p.add_argument("--repeat", type=int, default=5, help="status cycles measured")
    p.add_argument("--time-limit", type=float, default=1800)
    p.add_argument("--quick-scheduler", action="store_true", help="schedule every second, as the tests do "
                   "(default: Slurm's own scheduler settings, as a site runs it)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    parts = set(args.parts.split(","))
    from slurmhelp import Slurm, Sshd

    class Cluster:
        pass

    base = tempfile.mkdtemp(prefix="minipanda-bench-slurm-")
    cluster = Cluster()
    cluster.slurm = Slurm(os.path.join(base, "slurm"), cpus=args.slots, memory=max(16000, args.slots * 1100),
                          quick=args.quick_scheduler)
    cluster.sshd = Sshd(os.path.join(base, "sshd"), {"SLURM_CONF": cluster.slurm.conf})
    try:
        cluster.slurm.start()
        cluster.sshd.start()
        print(f"Slurm {cluster.slurm.run('sinfo', '--version').stdout.strip()}, one node with {args.slots} slots, "
              f"{'sched_interval=1' if args.quick_scheduler else 'default scheduler settings'}; "
              f"{os.cpu_count()} CPUs, load {load()}")
        single = part_sbatch(args, cluster) if "sbatch" in parts else None
        for per_worker in (args.per_worker if "pilots" in parts else ()):
            pilots = part_pilots(args, cluster, base, per_worker)
            if single and pilots:
                print(f"    pilots ({per_worker} per worker) vs one sbatch per job: {single:.1f} s / {pilots:.1f} s "
                      f"= {single / pilots:.2f}x (goal >= 3x)")
        if "status" in parts:
            part_status(args, cluster)
    finally:
        cluster.sshd.stop()
        cluster.slurm.stop()
        print(f"(files kept under {base})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
