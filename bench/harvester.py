#!/usr/bin/env python
"""Harvester benchmark: the monitor cycle, the submission rate, and jobs through server + harvester + pilots.

Three parts, and a fourth with --batch, figures side by side in one table at the end (with the load average, since
the machine is shared):

  (a) monitor   one ``Monitor.run_once(now)`` over --workers live workers of the local batch plugin, in a
                harvester database made here. --real of them are real detached processes submitted through the
                plugin (``sleep``); the others have spool records and exit files written directly in the format
                harvester/batch/local.py reads (10,000 processes would not fit on the machine): "running" ones
                point at the pid and start time of a real live process, so the /proc check is the real one;
                "ending" ones have no process and an exit file, so the cycle also makes status changes. The
                plugin's status() calls are counted (the contract: one per queue per cycle). Cycle 1 sees the
                ending workers (and the plugin reads each spool record for the first time); cycles 2 and on are
                the steady state (nothing changes). Every access point holds a running pilot's files (attributes,
                PandaIDs, heartbeat): cycle 1 reads them all, later cycles only what changed (nothing).
                With --transport ssh the same part runs twice, side by side: the queues' submit host reached
                directly, then over SSH (an sshd on 127.0.0.1 started here, tests/slurmhelp.py): every status
                query, listing and file read goes through the transport; the transport's calls are counted (the
                contract: one status batch and one listing per queue per cycle, plus one read of changed files).
  (b) submit    the local plugin's submit() alone on --submit workers (scripts written beforehand), then the
                whole Submitter (access point, queuedata, a pilot token minted per worker by a real server,
                script, one submit call, recording) on --submit other workers. The pilot interpreter is
                /bin/true there, so no pilot really starts: the figure is harvester's work, not the pilots'.
  (c) e2e       --jobs jobs of --payload s each through a real ``minipanda serve`` + ``harvester run`` (agent periods
                --period s) + the local batch + our pilot zipapp, on a queue with maxWorkers = --cores and a
                pilot timefloor, so each pilot runs many jobs. Makespan from starting harvester to the last job
                seen finished; ideal = jobs x payload / cores.

  (d) batch     with --batch htcondor: the HTCondor plugin's submit() of --batch-workers workers (one transaction)
                and ONE status() of them, against a real one-host pool (tests/condorhelp.py) with no execute node,
                so every job stays idle; beside the local plugin's submit() and status() of as many /bin/true
                workers, and a transaction per worker on a tenth of them (how the HTCondor plugin used to submit).

Nothing is asserted: the goals are only reported. Only 127.0.0.1 is contacted; every process the bench starts
(server, harvester, pilots and the sleep processes) is stopped by its pid (pilots by the process group in the
plugin's spool record).

    python3 bench/harvester.py                          # all three parts at the default sizes
    python3 bench/harvester.py --parts monitor --workers 20000
    python3 bench/harvester.py --parts monitor --workers 1000 --transport ssh   # the same over SSH, side by side
    python3 bench/harvester.py --parts e2e --jobs 200 --keep
    python3 bench/harvester.py --parts submit --batch htcondor   # (d): HTCondor beside the local plugin (as root)
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.join(ROOT, "tests"))  # the testbed of the end-to-end tests (harvesterhelp)

NOT_A_PID = 5_000_000  # above any pid_max (at most 2^22): synthetic ended workers never match a live process


def load():
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def write_queue_file(path, queues):
    import yaml

    with open(path, "w") as handle:
        yaml.safe_dump({"queues": queues}, handle)


def harvester_context(home, queue_file, server=None, **settings):
    """An in-process harvester: its database under ``home`` and the queues of ``queue_file`` in force."""
    from harvester import db
    from harvester.context import Context, Settings
    from harvester.queues import QueueFile

    os.makedirs(home, exist_ok=True)
    db.open_database(os.path.join(home, "harvester.db"))
    context = Context(home, server, Settings(**settings), "bench-harvester")
    queues = QueueFile(queue_file)
    queues.context = context
    queues.load()
    queues.apply()
    return context


class Timed:
    """Replaces ``owner.name`` by a wrapper that counts the calls and their time; undo() puts it back."""

    def __init__(self, owner, name):
        self.owner, self.name, self.inner = owner, name, getattr(owner, name)
        self.calls, self.seconds = 0, 0.0

        def timed(*a, **k):
            started = time.perf_counter()
            try:
                return self.inner(*a, **k)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - started

        setattr(owner, name, timed)

    def reset(self):
        self.calls, self.seconds = 0, 0.0

    def undo(self):
        setattr(self.owner, self.name, self.inner)


class CountingPlugin:
    """Wraps a plugin instance's status() to count its calls and their time."""

    def __init__(self, plugin):
        self.calls, self.seconds, self.ids = 0, 0.0, 0
        self.inner = plugin.status

        def status(batch_ids):
            started = time.perf_counter()
            try:
                return self.inner(batch_ids)
            finally:
                self.calls += 1
                self.ids += len(batch_ids)
                self.seconds += time.perf_counter() - started

        plugin.status = status

    def reset(self):
        self.calls, self.seconds, self.ids = 0, 0.0, 0


# ---- (a) the monitor ---------------------------------------------------------------------------------------------
def part_monitor(args, base, transport="local"):
    from harvesterhelp import queue_config

    home = os.path.join(base, f"monitor-{transport}")
    os.makedirs(home)
    names = [f"BENCH_MON{i}" for i in range(args.monitor_queues)]
    queue_file = os.path.join(home, "queues.yaml")
    sshd = None
    if transport == "ssh":
        from slurmhelp import Sshd

        sshd = Sshd(os.path.join(base, "sshd")).start()
    try:
        write_queue_file(queue_file, {name: queue_config(pilot={"lifetime": 86400}, transport=(
            sshd.queue_transport(workdir=os.path.join(home, "workers", name)) if sshd else {}))
            for name in names})
        return monitor_cycles(args, home, queue_file, names, transport)
    finally:
        if sshd is not None:
            sshd.stop()


def _pilot_files(ap, worker_id):
    """What a running pilot keeps in its access point (pull mode): its attributes, PandaIDs and heartbeat."""
    for name, data in (("worker_attributes.json", {"jobId": worker_id, "state": "running"}),
                       ("worker_pandaids.json", [worker_id]), ("worker_heartbeat.json", {})):
        with open(os.path.join(ap, name), "w") as handle:
            json.dump(data, handle)


def monitor_cycles(args, home, queue_file, names, transport):
    from harvester import db, models
    from harvester.agents import monitor as monitor_module
    from harvester.agents.monitor import Monitor
    from harvester.batch.base import OK, WorkerSpec
    from harvester.states import utcnow

    ctx = harvester_context(home, queue_file)
    counters, procs, files_calls, run_calls = {}, [], [], []
    boot_id = open("/proc/sys/kernel/random/boot_id").read().strip()
    now = utcnow()
    next_id = 1
    ending = int(args.workers * args.ending)
    per_queue = [args.workers // len(names) + (i < args.workers % len(names)) for i in range(len(names))]
    real_per_queue = [args.real // len(names) + (i < args.real % len(names)) for i in range(len(names))]
    ends_per_queue = [ending // len(names) + (i < ending % len(names)) for i in range(len(names))]
    started = time.perf_counter()
    try:
        for name, n_workers, n_real, n_end in zip(names, per_queue, real_per_queue, ends_per_queue):
            queue = ctx.queues[name]
            plugin = ctx.plugin(queue)
            counters[name] = CountingPlugin(plugin)
            files_calls.append(Timed(ctx.transport(queue), "files"))  # every listing, read and status batch
            run_calls.append(Timed(ctx.transport(queue), "run"))  # every command
            os.makedirs(ctx.spool_dir(queue), exist_ok=True)
            rows = []
            # real detached processes, submitted through the plugin itself
            specs = []
            for _ in range(max(1, n_real)):
                ap = ctx.access_point(queue, next_id)
                specs.append(WorkerSpec(next_id, ap, ("sleep", str(args.sleep)), {}, 1, 1000, 3600))
                plugin.write_script(specs[-1])
                next_id += 1
            results = plugin.submit(specs)
            live = []
            for spec, result in zip(specs, results):
                if result.status != OK:
                    raise RuntimeError(f"local submit failed: {result.message}")
                with open(os.path.join(ctx.spool_dir(queue), result.batch_id + ".json")) as handle:
                    record = json.load(handle)
                procs.append(record["pid"])
                live.append(record)
                rows.append(dict(worker_id=spec.worker_id, batch_id=result.batch_id, access_point=spec.access_point,
                                 last_plugin_output=f"pid {record['pid']} running"))
            # synthetic spool records: running ones point at a live process, ending ones left an exit file
            for index in range(n_workers - len(specs)):
                worker_id, ap = next_id, ctx.access_point(queue, next_id)
                next_id += 1
                os.makedirs(ap)
                _pilot_files(ap, worker_id)
                if index < n_end:
                    record = {"pid": NOT_A_PID + worker_id, "start": worker_id}
                    with open(os.path.join(ap, "job.exit"), "w") as handle:
                        handle.write("0\n" if index % 5 else "1\n")  # 4 in 5 finish, 1 in 5 fail
                    diag = ""
                else:
                    record = live[index % len(live)]
                    diag = f"pid {record['pid']} running"
                batch_id = f"{NOT_A_PID + worker_id}-{worker_id}"
                spool = {"pid": record["pid"], "start": record["start"], "boot_id": boot_id, "worker_id": worker_id,
                         "access_point": ap, "submitted": time.time()}
                with open(os.path.join(ctx.spool_dir(queue), batch_id + ".json"), "w") as handle:
                    json.dump(spool, handle)
                rows.append(dict(worker_id=worker_id, batch_id=batch_id, access_point=ap, last_plugin_output=diag))
            with models.database.atomic():
                for chunk in range(0, len(rows), 500):
                    models.Worker.insert_many([
                        dict(row, queue=name, status="running", submit_phase="done", cores=1, memory_mb=1000,
                             walltime_s=3600, submit_time=now, start_time=now, status_changed=now,
                             modification_time=now, reported=True)
                        for row in rows[chunk:chunk + 500]]).execute()
        setup_s = time.perf_counter() - started
        live_rows = models.Worker.select().where(models.Worker.status == "running").count()
        print(f"(a) monitor, transport {transport}: {live_rows} live workers in {len(names)} queue(s) "
              f"({sum(real_per_queue)} real sleep processes submitted through the local plugin; the other spool "
              f"records and exit files written directly in its format, {ending} of them with an exit file); setup "
              f"{setup_s:.1f} s")
        monitor = Monitor(ctx)
        cycles = []
        claim = Timed(db, "claim_workers")  # the monitor calls db.claim_workers through the module
        changes = Timed(monitor_module, "change_worker_status")
        for cycle in range(1, args.cycles + 1):
            claim.reset()
            changes.reset()
            for counter in counters.values():
                counter.reset()
            for counter in files_calls + run_calls:
                counter.reset()
            live_before = models.Worker.select().where(models.Worker.status == "running").count()
            changes_before = models.WorkerStatusLog.select().count()
            t0 = time.perf_counter()
            checked = monitor.run_once(utcnow())
            seconds = time.perf_counter() - t0
            changed = models.WorkerStatusLog.select().count() - changes_before
            calls = sum(c.calls for c in counters.values())
            status_s = sum(c.seconds for c in counters.values())
            cycles.append({"cycle": cycle, "live": live_before, "checked": checked, "seconds": seconds,
                           "status_calls": calls, "status_s": status_s, "changed": changed, "claim_s": claim.seconds,
                           "change_s": changes.seconds, "files_calls": sum(c.calls for c in files_calls),
                           "files_s": sum(c.seconds for c in files_calls),
                           "run_calls": sum(c.calls for c in run_calls), "reads": monitor_reads(monitor)})
            rest = seconds - status_s - claim.seconds - changes.seconds
            print(f"    cycle {cycle}: {checked} workers checked in {seconds:.3f} s "
                  f"({checked / seconds:,.0f} workers/s); {calls} status() call(s) for {len(names)} queue(s): "
                  f"{status_s:.3f} s; db.claim_workers (lease + read the rows): {claim.seconds:.3f} s; "
                  f"{changed} status changes (change_worker_status): {changes.seconds:.3f} s; the rest (pilot files, "
                  f"per-worker follow): {rest:.3f} s; transport: {cycles[-1]['files_calls']} file-operation "
                  f"batches ({cycles[-1]['files_s']:.3f} s; {cycles[-1]['reads']} pilot files read), "
                  f"{cycles[-1]['run_calls']} commands; load {load()}")
        claim.undo()
        changes.undo()
        for counter in files_calls + run_calls:
            counter.undo()
        batch = batch_round_trips(ctx.transport(ctx.queues[names[0]]), ctx.workers_dir(ctx.queues[names[0]]))
        return {"cycles": cycles, "queues": len(names), "real": sum(real_per_queue), "ending": ending,
                "load": load(), "transport": transport, "batch": batch}
    finally:
        for pid in procs:
            try:
                os.killpg(pid, signal.SIGKILL)  # the plugin starts each worker in a session of its own
            except OSError:
                pass
        ctx.close()
        db.close_database()


def batch_round_trips(transport, root, n=10):
    """Median seconds of one batch of file operations (a listing of ``root``) through ``transport.files``, and
    over SSH beside it the same batch as one exec of the helper per batch (how it ran before the helper was kept
    open)."""
    ops = [{"op": "scan", "root": root, "only": ["1"], "depth": 1}]

    def median(call):
        times = []
        for _ in range(n):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return sorted(times)[n // 2]
    kept = median(lambda: transport.files(ops))
    if transport.name != "ssh":
        return {"files": kept}
    once = median(lambda: transport.run(transport._helper("ops"), input=json.dumps(ops)))
    return {"files": kept, "exec": once}


def monitor_reads(monitor):
    """Pilot files read from the submit host in the monitor's last cycle (the rest came from the previous one)."""
    return sum(snapshot.reads for snapshot in monitor.snapshots.values())


# ---- (b) submission --------------------------------------------------------------------------------------------
def part_submit(args, base):
    from harvester import db, models
    from harvester.agents.submitter import Submitter
    from harvester.batch.base import OK, WorkerSpec
    from harvester.client import ServerClient
    from harvester.states import utcnow
    from harvesterhelp import QUEUE, Testbed, queue_config

    n = args.submit
    limits = {"maxWorkers": 2 * n, "nQueueLimitWorker": 2 * n, "maxNewWorkersPerCycle": 2 * n}
    bed = Testbed(os.path.join(base, "submit"), {QUEUE: queue_config(limits=limits, pilot={"lifetime": 86400})})
    home = os.path.join(bed.base, "harvester-inproc")
    spawned = []
    try:
        server = ServerClient(bed.server.url, bed.token_file, "h1", 30)  # its token's name: the server holds it to it
        ctx = harvester_context(home, bed.queues_path, server, pilot_python="/bin/true")
        queue = ctx.queues[QUEUE]
        plugin = ctx.plugin(queue)
        # the plugin alone: scripts written first, then one submit() call
        specs = [WorkerSpec(100000 + i, os.path.join(home, "plain", str(i)), ("/bin/true",), {}, 1, 1000, 600)
                 for i in range(n)]
        t0 = time.perf_counter()
        for spec in specs:
            plugin.write_script(spec)
        script_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = plugin.submit(specs)
        plugin_s = time.perf_counter() - t0
        ok = sum(r.status == OK for r in results)
        spawned += [int(r.batch_id.split("-")[0]) for r in results if r.batch_id]
        print(f"(b) submit: local plugin submit() of {n} workers: {plugin_s:.2f} s, {ok / plugin_s:,.0f} workers/s "
              f"({ok} ok; writing their scripts before took {script_s:.2f} s); load {load()}")
        # the whole Submitter, tokens minted by the real server
        minted = {"calls": 0, "seconds": 0.0}
        inner = server.mint_pilot_token

        def mint(*a, **k):
            started = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                minted["calls"] += 1
                minted["seconds"] += time.perf_counter() - started

        server.mint_pilot_token = mint
        submitter = Submitter(ctx)
        prepare, submit = Timed(submitter, "prepare"), Timed(plugin, "submit")
        ctx.plugin(queue)  # built already; the zipapp too, below, so neither is in the timing
        from harvester.handoff import pilots
        pilots.zipapp_path(home)
        models.QueueState.update(to_submit=n).where(models.QueueState.queue == QUEUE).execute()
        t0 = time.perf_counter()
        done = submitter.run_once(utcnow())
        submitter_s = time.perf_counter() - t0
        spawned += [int(w.batch_id.split("-")[0]) for w in models.Worker.select() if w.batch_id]
        rest = submitter_s - prepare.seconds - submit.seconds
        print(f"    Submitter.run_once on {n} workers: {submitter_s:.2f} s, {done / submitter_s:,.0f} workers/s "
              f"({done} submitted): prepare {prepare.seconds:.2f} s (of which {minted['calls']} pilot tokens minted "
              f"over HTTP {minted['seconds']:.2f} s), {submit.calls} plugin submit() call(s) {submit.seconds:.2f} s, "
              f"the rest (rows, claim, recording) {rest:.2f} s; load {load()}")
        ctx.close()
        server.close()
        db.close_database()
        return {"n": n, "plugin_rate": ok / plugin_s, "plugin_s": plugin_s, "submitter_rate": done / submitter_s,
                "submitter_s": submitter_s, "mint_s": minted["seconds"], "load": load()}
    finally:
        for pid in spawned:  # /bin/true is long gone; a group left behind would not be
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        bed.close()


# ---- (d) a real batch system beside the local plugin -----------------------------------------------------------
def part_batch(args, base):
    """--batch htcondor: the plugin's submit() and ONE status() over --batch-workers workers, against a real
    one-host pool without an execute node (every job stays idle), beside the local plugin on as many workers."""
    import htcondor2
    from condorhelp import Pool, unavailable
    from harvester.batch import plugin_for
    from harvester.batch.base import OK, WorkerSpec
    from harvester.transport import LocalTransport
    from queueconfig import Queue

    why = unavailable()
    if why:
        raise SystemExit(f"--batch htcondor: {why}")
    n, home = args.batch_workers, os.path.join(base, "batch")

    def specs(queue, count, first=1):
        made = []
        for worker_id in range(first, first + count):
            fields = dict(worker_id=worker_id, access_point=os.path.join(home, queue.name, str(worker_id)),
                          argv=("/bin/true",), environment={"HARVESTER_WORKER_ID": str(worker_id)}, cores=1,
                          memory_mb=1000, walltime_s=3600)
            made.append(WorkerSpec(**fields))
        return made

    def measure(queue, transport, count, spool=None):
        plugin = plugin_for(queue, transport, spool)
        workers = specs(queue, count)
        for worker in workers:
            plugin.write_script(worker)
        t0 = time.perf_counter()
        results = plugin.submit(workers)
        submit_s = time.perf_counter() - t0
        ids = [r.batch_id for r in results if r.status == OK]
        if len(ids) != count:
            raise RuntimeError(f"{queue.batch.system}: {count - len(ids)} submissions failed: "
                               f"{next(r.message for r in results if r.status != OK)}")
        time.sleep(1)  # the local pilots (/bin/true) have ended: their exit files are what the status reads
        t0 = time.perf_counter()
        answer = plugin.status(ids)
        status_s = time.perf_counter() - t0
        return plugin, ids, {"submit_s": submit_s, "rate": count / submit_s, "status_s": status_s,
                             "states": len(answer.states)}

    figures = {"n": n}
    local = Queue.model_validate({"name": "BENCH_LOCAL", "batch": {"system": "local"}})
    spool = os.path.join(home, ".spool")
    os.makedirs(spool)
    plugin, ids, figures["local"] = measure(local, LocalTransport(), n, spool)
    print(f"(d) local plugin: submit() of {n} workers {figures['local']['submit_s']:.2f} s "
          f"({figures['local']['rate']:,.0f} workers/s); one status() of them {figures['local']['status_s']:.3f} s "
          f"({figures['local']['states']} answered); load {load()}")
    pool = Pool(execute=False).start()
    before = os.environ.get("CONDOR_CONFIG")
    try:
        os.environ["CONDOR_CONFIG"] = pool.client_config
        htcondor2.reload_config()
        condor = Queue.model_validate({"name": "BENCH_CONDOR", "batch": {"system": "htcondor"}})
        plugin, ids, figures["htcondor"] = measure(condor, LocalTransport(), n)
        print(f"    htcondor plugin (one transaction): submit() of {n} workers {figures['htcondor']['submit_s']:.2f} s "
              f"({figures['htcondor']['rate']:,.0f} workers/s); one status() of {n} idle jobs "
              f"{figures['htcondor']['status_s']:.3f} s ({figures['htcondor']['states']} answered); load {load()}")
        # the same schedd, a transaction per worker (what the plugin did before): how much one transaction saves
        one_by_one = max(1, n // 10)
        plugin = plugin_for(condor, LocalTransport(), None)
        workers = specs(condor, one_by_one, first=n + 1)
        for worker in workers:
            plugin.write_script(worker)
        t0 = time.perf_counter()
        for worker in workers:
            assert plugin.submit([worker])[0].status == OK
        figures["per_worker_rate"] = one_by_one / (time.perf_counter() - t0)
        figures["per_worker_n"] = one_by_one
        print(f"    htcondor plugin, a transaction per worker: {one_by_one} workers at "
              f"{figures['per_worker_rate']:,.0f} workers/s; load {load()}")
    finally:
        if before is None:
            os.environ.pop("CONDOR_CONFIG", None)
        else:
            os.environ["CONDOR_CONFIG"] = before
        pool.stop()
    figures["load"] = load()
    return figures


# ---- (c) end to end --------------------------------------------------------------------------------------------
def part_e2e(args, base):
    from harvesterhelp import QUEUE, Testbed, queue_config

    cores, slots = args.cores, args.max_workers or args.cores
    queue = queue_config(limits={"maxWorkers": slots, "nQueueLimitWorker": slots, "maxNewWorkersPerCycle": slots},
                         pilot={"timefloor": args.timefloor, "lifetime": 86400, "heartbeat": 60})
    bed = Testbed(os.path.join(base, "e2e"), {QUEUE: queue})
    try:
        trf = bed.script("payload.sh", f"#!/bin/sh\nsleep {args.payload}\n")
        specs = [{"jobName": f"bench.e2e.{i}", "computingSite": QUEUE, "prodSourceLabel": "managed",
                  "transformation": trf, "jobParameters": "--x 1", "coreCount": 1, "minRamCount": 1000,
                  "maxWalltime": 600, "Files": [{"type": "log", "lfn": f"log.{i}.tgz", "scope": "bench"}]}
                 for i in range(args.jobs)]
        ids = [row[0] for row in bed.v1("job/submit", jobs=specs)]
        period = f"{args.period:g}"
        settings = [f"{name}_period={period}" for name in ("monitor", "propagator", "adjuster", "submitter",
                                                           "fetcher")]
        t0 = time.time()
        bed.start(*settings)
        first_running, done, deadline = None, 0, t0 + args.time_limit
        while time.time() < deadline:
            states = bed.statuses(ids).values()
            done = sum(s in ("finished", "failed", "cancelled", "closed") for s in states)
            if first_running is None and any(s != "activated" for s in states):
                first_running = time.time() - t0
            if done == len(ids):
                break
            if bed.daemon.poll() is not None:
                raise RuntimeError("harvester exited early:\n" + bed.log()[-3000:])
            time.sleep(args.poll)
        makespan = time.time() - t0
        cpu = {"harvester": cpu_seconds(bed.daemon.pid), "server": cpu_seconds(bed.server.proc.pid)}
        final = bed.statuses(ids)
        finished = sum(s == "finished" for s in final.values())
        bed.stop()
        workers = bed.workers()
        ideal = args.jobs * args.payload / cores
        result = {"jobs": args.jobs, "finished": finished, "done": done, "makespan": makespan, "ideal": ideal,
                  "ratio": makespan / ideal, "rate": done / makespan, "workers": len(workers),
                  "worker_states": {}, "first": first_running, "load": load(),
                  "complete": done == len(ids), "cpu": cpu, "slots": slots, "cycle": pilot_cycle(bed.home)}
        for worker in workers:
            result["worker_states"][worker["status"]] = result["worker_states"].get(worker["status"], 0) + 1
        print(f"(c) e2e, maxWorkers {slots}, pilot timefloor {args.timefloor} min, agent periods {period} s: "
              f"{finished} of {args.jobs} jobs finished ({done} ended) in {makespan:.1f} s"
              f"{'' if result['complete'] else ' (TIME LIMIT: not all jobs ended)'}; ideal {ideal:.1f} s "
              f"({args.jobs} x {args.payload:g} s / {cores} cores), ratio {result['ratio']:.2f}, "
              f"{result['rate']:.1f} jobs/s; {len(workers)} workers {result['worker_states']}; first job left "
              f"'activated' after {first_running if first_running is None else round(first_running, 1)} s; "
              f"load {load()}")
        cycle = result["cycle"]
        bound = args.jobs / slots * cycle["cycle"]
        print(f"    CPU used during the makespan: harvester {cpu['harvester']:.1f} s, server {cpu['server']:.1f} s; "
              f"pilots' own timing: {cycle['jobs']} jobs, median job cycle (getJob to next getJob) "
              f"{cycle['cycle'] * 1000:.0f} ms, of which the payload {cycle['payload'] * 1000:.0f} ms, so the pilots "
              f"alone need {args.jobs} / {slots} x {cycle['cycle']:.3f} s = {bound:.1f} s: makespan ÷ that "
              f"{makespan / bound:.2f}")
        return result
    finally:
        bed.close()


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc; its children not counted)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pilot_cycle(home):
    """Median per-job cycle and payload time from the pilots' pilot_timing.json files in the access points."""
    import glob
    import statistics

    cycles, payloads = [], []
    for path in glob.glob(os.path.join(home, "workers", "*", "*", "PanDA_Pilot-*", "pilot_timing.json")):
        try:
            with open(path) as handle:
                timing = json.load(handle)
        except (OSError, ValueError):
            continue
        jobs = sorted((marks for key, marks in timing.items() if key not in ("0", "next")
                       and {"PILOT_PRE_GETJOB", "PILOT_PRE_PAYLOAD", "PILOT_POST_PAYLOAD"} <= set(marks)),
                      key=lambda marks: marks["PILOT_PRE_GETJOB"])
        payloads += [m["PILOT_POST_PAYLOAD"] - m["PILOT_PRE_PAYLOAD"] for m in jobs]
        cycles += [b["PILOT_PRE_GETJOB"] - a["PILOT_PRE_GETJOB"] for a, b in zip(jobs, jobs[1:])]
    median = lambda values: statistics.median(values) if values else float("nan")  # noqa: E731
    return {"jobs": len(payloads), "cycle": median(cycles), "payload": median(payloads)}


# ---- main ------------------------------------------------------------------------------------------------------
def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--parts", default="monitor,submit,e2e",
                   help="comma-separated subset of monitor,submit,e2e (default: all three)")
    p.add_argument("--workers", type=int, default=10000, help="(a) live workers the monitor tracks (default 10000)")
    p.add_argument("--real", type=int, default=20,
                   help="(a) how many of them are real sleep processes submitted through the local plugin (20)")
    p.add_argument("--ending", type=float, default=0.05,
                   help="(a) fraction of workers whose pilot left an exit file: ended in cycle 1 (0.05)")
    p.add_argument("--monitor-queues", type=int, default=2,
                   help="(a) queues the workers are spread over; one status() call each per cycle (2)")
    p.add_argument("--transport", choices=["local", "ssh"], default="local",
                   help="(a) ssh: run the monitor part twice, side by side: the submit host reached directly, then "
                        "over SSH (an sshd on 127.0.0.1 started here; needs root and openssh-server)")
    p.add_argument("--cycles", type=int, default=3, help="(a) monitor cycles to time (3)")
    p.add_argument("--sleep", type=int, default=600, help="(a) seconds the real sleep processes would live (600)")
    p.add_argument("--submit", type=int, default=200,
                   help="(b) workers submitted by the plugin alone, and again by the Submitter (200)")
    p.add_argument("--jobs", type=int, default=500, help="(c) jobs through server + harvester + pilots (500)")
    p.add_argument("--payload", type=float, default=0.1, help="(c) seconds each job's payload sleeps (0.1)")
    p.add_argument("--cores", type=int, default=os.cpu_count(),
                   help="(c) the cores of the ideal makespan, and maxWorkers of the queue unless --max-workers "
                        "(default nproc)")
    p.add_argument("--max-workers", type=int, default=0,
                   help="(c) maxWorkers of the queue instead of --cores (the ideal still divides by --cores)")
    p.add_argument("--timefloor", type=int, default=10,
                   help="(c) the pilots' timefloor in minutes: a pilot takes jobs until it runs out of them or "
                        "of this time (10)")
    p.add_argument("--period", type=float, default=0.5,
                   help="(c) period of harvester's monitor, propagator, adjuster, submitter and fetcher, s (0.5)")
    p.add_argument("--poll", type=float, default=0.25, help="(c) how often the bench asks the server, s (0.25)")
    p.add_argument("--time-limit", type=float, default=600, help="(c) give up waiting after this many s (600)")
    p.add_argument("--batch", choices=["htcondor"],
                   help="(d) also measure this real batch system's plugin beside the local one: submit() and one "
                        "status() of --batch-workers idle jobs (htcondor: a one-host pool from tests/condorhelp.py; "
                        "needs root and the root file system .ci/htcondor-root builds)")
    p.add_argument("--batch-workers", type=int, default=1000, help="(d) workers submitted to each plugin (1000)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"monitor", "submit", "e2e"}
    if unknown:
        parser().error(f"unknown parts {sorted(unknown)}")
    base = tempfile.mkdtemp(prefix="bench-harvester-")
    print(f"machine: {os.cpu_count()} cores (nproc), load average {load()} at start; Python "
          f"{sys.version.split()[0]}; temporary directory {base}")
    results = {}
    try:
        if "monitor" in parts:
            results["monitor"] = [part_monitor(args, base, "local")]
            if args.transport == "ssh":
                results["monitor"].append(part_monitor(args, base, "ssh"))
        if "submit" in parts:
            results["submit"] = part_submit(args, base)
        if "e2e" in parts:
            results["e2e"] = part_e2e(args, base)
        if args.batch:
            results["batch"] = part_batch(args, base)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    report(results)


def report(results):
    rows = []
    monitors = results.get("monitor") or []
    for mon in monitors:
        goal = 2 if mon["transport"] == "ssh" else 1
        for index, c in enumerate(mon["cycles"]):
            what = f"(a) monitor {mon['transport']} cycle {c['cycle']}: {c['live']:,} live, {c['changed']} changes"
            if mon is not monitors[0]:
                direct = monitors[0]["cycles"][index]["seconds"]
                what += f"; ÷ local {c['seconds'] / direct:.1f}"
            rows.append((what, f"{c['seconds']:.3f} s", f"{c['status_calls']} status() for {mon['queues']} queues, "
                         f"{c['status_s']:.3f} s in them; {c['files_calls']} file batches, {c['reads']} files read, "
                         f"{c['run_calls']} commands", f"≤ {goal} s " + ("met" if c["seconds"] <= goal
                                                                         else "NOT met"), mon["load"]))
        batch = mon["batch"]
        if "exec" in batch:
            rows.append(("(a) one batch of file operations over SSH: kept helper / an exec each",
                         f"{batch['files'] * 1000:.1f} ms / {batch['exec'] * 1000:.0f} ms", "median of 10 listings",
                         f"÷ {batch['exec'] / batch['files']:.0f}", mon["load"]))
    sub = results.get("submit")
    if sub:
        rows.append((f"(b) local plugin submit(), {sub['n']} workers", f"{sub['plugin_rate']:,.0f} workers/s",
                     f"{sub['plugin_s']:.2f} s", "", sub["load"]))
        rows.append((f"(b) Submitter end to end, {sub['n']} workers", f"{sub['submitter_rate']:,.0f} workers/s",
                     f"{sub['submitter_s']:.2f} s, token minting {sub['mint_s']:.2f} s",
                     f"÷ plugin alone: {sub['submitter_rate'] / sub['plugin_rate']:.2f}", sub["load"]))
    e2e = results.get("e2e")
    if e2e:
        rows.append((f"(c) {e2e['jobs']} jobs, makespan ÷ ideal", f"{e2e['ratio']:.2f}",
                     f"{e2e['makespan']:.1f} s ÷ {e2e['ideal']:.1f} s; {e2e['rate']:.1f} jobs/s; "
                     f"{e2e['workers']} workers (maxWorkers {e2e['slots']}); median pilot job cycle {e2e['cycle']['cycle'] * 1000:.0f} ms",
                     "≤ 1.5 " + ("met" if e2e["ratio"] <= 1.5 and e2e["complete"]
                                                             else "NOT met"), e2e["load"]))
    bat = results.get("batch")
    if bat:
        loc, con = bat["local"], bat["htcondor"]
        rows.append((f"(d) local plugin submit(), {bat['n']} workers", f"{loc['rate']:,.0f} workers/s",
                     f"{loc['submit_s']:.2f} s", "", bat["load"]))
        rows.append((f"(d) htcondor plugin submit(), {bat['n']} workers", f"{con['rate']:,.0f} workers/s",
                     f"{con['submit_s']:.2f} s, one transaction; a transaction per worker: "
                     f"{bat['per_worker_rate']:,.0f} workers/s ({bat['per_worker_n']} workers)",
                     f"÷ local: {con['rate'] / loc['rate']:.2f}", bat["load"]))
        rows.append((f"(d) one status(), {bat['n']} jobs: local / htcondor (idle)",
                     f"{loc['status_s']:.3f} s / {con['status_s']:.3f} s", "htcondor: one query, no history",
                     f"htcondor ÷ local: {con['status_s'] / loc['status_s']:.2f}", bat["load"]))
    if not rows:
        return
    header = ("measure", "figure", "detail", "goal", "load 1/5/15 min")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    print()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\n{os.cpu_count()} cores (nproc); the load average is taken at the end of each part (the bench's "
          f"own processes count in it)")


if __name__ == "__main__":
    main()
