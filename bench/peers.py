#!/usr/bin/env python
"""minipanda's testbed beside the task runners people compare it with: the same workloads, the same concurrency,
one run, one table.

Workloads (each N tasks):
  sleep    N x `sleep S`                                         (default 1,000 x 0.1 s)
  noop     N x nothing                                           (default 2,000)
  files    N x read a 1 MB input, write a 1 MB output            (default 200)

Runners, each with C concurrent slots (default 6):
  minipanda    ``minipanda testbed --warm-up`` as a user runs it: server, harvester and C pilots; a PanDA job each
               (getJob, stage-in over HTTP, payload, log tarball, stage-out, reports); ``--files none`` for sleep
               and noop, ``--files 1mb`` for files (inputs from the file store, outputs uploaded to it)
  hyperqueue   HyperQueue's server and one worker with C cores (its Python API runs both in-process), a process
               per task, as ours: `sleep S`, `true`, `tr a-z A-Z < in > out`
  parsl        Parsl's HighThroughputExecutor with C workers on this host, one python_app call per task
  dask         dask.distributed LocalCluster with C single-threaded worker processes, one client.map task each
Parsl and dask run Python functions in long-lived workers (their usual way): time.sleep, nothing, and reading and
writing the files in Python; no process is started per task there.

What each runner's makespan covers (tasks/s and makespan / ideal come from it):
  minipanda    warm: from the demo task's submission (task/submit; its inputs already in the file store and
               registered) to its last job's end in the server's database, with every pilot up: the testbed's
               --warm-up ran one `true` job per pilot first, and waited until every pilot had told the server it
               started and those jobs were done; the pilots poll for work every 0.5 s meanwhile. In it: the task
               split into jobs, getJob polls, every job's stage-in, payload, log, stage-out and reports.
               Cold, printed beside it (``cold`` column): from the warm-up task's submission, when no pilot was up
               (harvester launching the pilots, their start-up and the warm-up's jobs in it), to the same end;
               ``cold start`` is that submission -> the first job started.
  hyperqueue   from client.submit(job) (the job's tasks built before; LocalCluster has started the server and the
               worker) to wait_for_jobs returning
  parsl        from the first app call to the last result, after one warm-up task's result (the workers up)
  dask         from client.map to client.gather returning, after client.wait_for_workers(C)
Inputs of the files workload are written before every runner's timer starts (minipanda: into its file store).

The peers are optional: ``pip install -e '.[bench]'`` (parsl, dask/distributed, hyperqueue); a runner whose package
is missing is skipped with a note. Only 127.0.0.1 and this host are used; each runner stops what it started.

    python3 bench/peers.py                                     # every workload, every runner
    python3 bench/peers.py --workloads noop --runners minipanda,hyperqueue --noop-jobs 500
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import fsprobe

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNNERS = ("minipanda", "hyperqueue", "parsl", "dask")
WORKLOADS = ("sleep", "noop", "files")
MB = 1 << 20


# ---- inside the measuring child (one runner, one workload) -------------------------------------------------------

def become_subreaper():
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


def reap_all(timeout=30.0):
    """Collect every process below this one (orphans were re-parented here); kill what is still there after
    ``timeout`` s (a runner's worker that did not stop)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            for child in children(os.getpid()):
                try:
                    os.kill(child, 9)
                except OSError:
                    pass
            deadline = time.monotonic() + 10
        time.sleep(0.05)


def children(pid):
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found += [int(x) for x in handle.read().split()]
    except OSError:
        pass
    return found


def make_inputs(directory, n):
    os.makedirs(directory, exist_ok=True)
    line = b"peers benchmark input: the task upper-cases this file into its output\n"
    data = (line * (MB // len(line) + 1))[:MB]
    for i in range(n):
        with open(os.path.join(directory, f"in.{i}"), "wb") as handle:
            handle.write(data)


def upper_file(src, dest):
    with open(src, "rb") as inp, open(dest, "wb") as out:
        out.write(inp.read().upper())


def sleep_task(seconds):
    import time  # the task runs in a worker that has only what the function brings along

    time.sleep(seconds)


def noop_task(i):
    return i


def run_hyperqueue(work, n, seconds, slots, workload):
    from hyperqueue import Job, LocalCluster
    from hyperqueue.cluster import WorkerConfig

    with LocalCluster(server_dir=os.path.join(work, "hq"), worker_config=WorkerConfig(cores=slots)) as cluster:
        client = cluster.client()
        job = Job(default_workdir=work)
        for i in range(n):
            if workload == "sleep":
                args = ["sleep", f"{seconds:g}"]
            elif workload == "noop":
                args = ["true"]
            else:
                args = ["sh", "-c", f"tr a-z A-Z < data/in.{i} > data/out.{i}"]
            job.program(args, stdout=None, stderr=None)
        t0 = time.perf_counter()
        submitted = client.submit(job)
        client.wait_for_jobs([submitted])
        return time.perf_counter() - t0


def run_parsl(work, n, seconds, slots, workload):
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    config = Config(executors=[HighThroughputExecutor(label="htex", max_workers_per_node=slots, cores_per_worker=1,
                                                      address="127.0.0.1", loopback_address="127.0.0.1",
                                                      provider=LocalProvider(init_blocks=1, max_blocks=1))],
                    run_dir=os.path.join(work, "runinfo"), usage_tracking=0, strategy="none")
    dfk = parsl.load(config)
    try:
        app = parsl.python_app(executors=["htex"])(
            {"sleep": sleep_task, "noop": noop_task, "files": upper_file}[workload])
        app(0 if workload != "files" else os.path.join(work, "data", "in.0"),
            *(() if workload != "files" else (os.path.join(work, "data", "warm"),))).result()  # workers up
        t0 = time.perf_counter()
        if workload == "sleep":
            futures = [app(seconds) for _ in range(n)]
        elif workload == "noop":
            futures = [app(i) for i in range(n)]
        else:
            futures = [app(os.path.join(work, "data", f"in.{i}"), os.path.join(work, "data", f"out.{i}"))
                       for i in range(n)]
        for future in futures:
            future.result()
        return time.perf_counter() - t0
    finally:
        dfk.cleanup()


def run_dask(work, n, seconds, slots, workload):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=slots, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, local_directory=os.path.join(work, "dask")) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(slots)
        t0 = time.perf_counter()
        if workload == "sleep":
            futures = client.map(sleep_task, [seconds] * n, pure=False)
        elif workload == "noop":
            futures = client.map(noop_task, range(n), pure=False)
        else:
            futures = client.map(upper_file, [os.path.join(work, "data", f"in.{i}") for i in range(n)],
                                 [os.path.join(work, "data", f"out.{i}") for i in range(n)], pure=False)
        client.gather(futures)
        return time.perf_counter() - t0


def run_minipanda(work, n, seconds, slots, workload):
    home = os.path.join(work, "testbed")
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", home, "--port", "0", "--jobs", str(n),
            "--pilots", str(slots), "--warm-up", "--job-seconds", f"{seconds if workload == 'sleep' else 0:g}",
            "--files", "1mb" if workload == "files" else "none"]
    with open(os.path.join(work, "testbed.out"), "wb") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    with open(os.path.join(home, "summary.json")) as handle:
        summary = json.load(handle)
    if code != 0 or not summary.get("complete"):
        raise RuntimeError(f"minipanda testbed exited {code}; see {work}/testbed.out")
    return summary["makespan_warm_s"], summary


def measure(runner, workload, n, seconds, slots, work):
    """Run one runner on one workload in this process (the measuring child); print its figures as JSON."""
    become_subreaper()
    # the runners' own commands (parsl's interchange.py and worker pool) are in this interpreter's bin directory
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    if workload == "files" and runner != "minipanda":
        make_inputs(os.path.join(work, "data"), n)
    cpu0 = os.times()
    extra, summary = {}, {}
    if runner == "minipanda":
        makespan, summary = run_minipanda(work, n, seconds, slots, workload)
        extra = {"minipanda_cpu_ms": summary.get("cpu_minipanda_per_job_ms"), "cold": summary.get("makespan_s"),
                 "cold_start": summary.get("cold_start_s"), "warm_up": summary.get("warm_up_s"),
                 "pilots_up": summary.get("pilots_up_at_submission")}
    else:
        makespan = {"hyperqueue": run_hyperqueue, "parsl": run_parsl, "dask": run_dask}[runner](
            work, n, seconds, slots, workload)
    reap_all()
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system) + (cpu1.children_user - cpu0.children_user) + \
        (cpu1.children_system - cpu0.children_system)
    if runner == "minipanda":  # its testbed writes the inputs itself; the others' were made before cpu0
        cpu -= summary.get("cpu_inputs_s") or 0
    print("RESULT " + json.dumps(dict(extra, makespan=makespan, cpu=cpu, load=os.getloadavg())), flush=True)


# ---- the driver -----------------------------------------------------------------------------------------------------

def available(runner):
    modules = {"minipanda": "minipanda", "hyperqueue": "hyperqueue", "parsl": "parsl", "dask": "distributed"}
    try:
        __import__(modules[runner])
        return True
    except ImportError:
        return False


def one(runner, workload, n, seconds, slots, base, time_limit):
    work = tempfile.mkdtemp(prefix=f"{runner}-{workload}-", dir=base)
    argv = [sys.executable, os.path.abspath(__file__), "--measure", runner, workload, str(n), f"{seconds:g}",
            str(slots), work]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=time_limit, cwd=work)
    except subprocess.TimeoutExpired:
        return {"error": f"over {time_limit:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1][:200]}
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--measure":
        runner, workload, n, seconds, slots, work = sys.argv[2:8]
        measure(runner, workload, int(n), float(seconds), int(slots), work)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated, of {', '.join(RUNNERS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument("--slots", type=int, default=6, help="concurrent tasks of every runner (minipanda: pilots; 6)")
    p.add_argument("--sleep-jobs", type=int, default=1000, help="tasks of the sleep workload (1000)")
    p.add_argument("--sleep-seconds", type=float, default=0.1, help="seconds each sleeps (0.1)")
    p.add_argument("--noop-jobs", type=int, default=2000, help="tasks of the noop workload (2000)")
    p.add_argument("--files-jobs", type=int, default=200, help="tasks of the files workload (200)")
    p.add_argument("--time-limit", type=float, default=1800, help="s for one runner on one workload (1800)")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    args = p.parse_args(argv)
    runners = [r for r in args.runners.split(",") if r]
    workloads = [w for w in args.workloads.split(",") if w]
    for name, allowed in ((runners, RUNNERS), (workloads, WORKLOADS)):
        unknown = set(name) - set(allowed)
        if unknown:
            p.error(f"unknown: {', '.join(sorted(unknown))}; known: {', '.join(allowed)}")
    base = tempfile.mkdtemp(prefix="bench-peers-")
    print(f"bench/peers.py: {args.slots} slots; {os.cpu_count()} CPUs; load {os.getloadavg()}; work under {base}",
          flush=True)
    print(f"  before: {fsprobe.describe(base)}", flush=True)
    sizes = {"sleep": (args.sleep_jobs, args.sleep_seconds), "noop": (args.noop_jobs, 0.0),
             "files": (args.files_jobs, 0.0)}
    rows = []
    try:
        for workload in workloads:
            n, seconds = sizes[workload]
            for runner in runners:
                if not available(runner):
                    rows.append((workload, runner, n, seconds, {"error": "not installed (pip install -e '.[bench]')"}))
                    continue
                result = one(runner, workload, n, seconds, args.slots, base, args.time_limit)
                rows.append((workload, runner, n, seconds, result))
                print(f"  {workload} {runner}: {fmt_row(n, seconds, args.slots, result)}", flush=True)
        print(f"  after: {fsprobe.describe(base)}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n| workload | runner | tasks/s | makespan s | makespan / ideal | minipanda cold: makespan s "
          f"(/ ideal), cold start s | CPU ms per task | load 1/5/15 |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for workload, runner, n, seconds, r in rows:
        if "error" in r:
            print(f"| {workload} | {runner} | - | - | - | - | - | {r['error']} |")
            continue
        ideal = n * seconds / args.slots
        ratio = f"{r['makespan'] / ideal:.2f}" if ideal else "-"
        cpu = f"{1000 * r['cpu'] / n:.1f}" + (f" ({r['minipanda_cpu_ms']:.1f} without payloads)"
                                               if r.get("minipanda_cpu_ms") else "")
        what = f"{workload} {n}" + (f" x {seconds:g} s" if seconds else "")
        load = "/".join(f"{x:.1f}" for x in r["load"])
        print(f"| {what} | {runner} | {n / r['makespan']:.1f} | {r['makespan']:.1f} | {ratio} | {cold(r, ideal)} | "
              f"{cpu} | {load} |")
    for workload in workloads:
        done = {runner: r for w, runner, n, _, r in rows if w == workload and "error" not in r}
        if "minipanda" in done:
            n = sizes[workload][0]
            mine = done["minipanda"]
            ratios = ", ".join(f"{r['makespan'] / mine['makespan']:.2f} x {runner}'s"
                               + (f" (cold {r['makespan'] / mine['cold']:.2f})" if mine.get("cold") else "")
                               for runner, r in done.items() if runner != "minipanda")
            if ratios:
                print(f"{workload}: minipanda's tasks/s, warm (cold) = {ratios}")
    return 0


def cold(r, ideal):
    """minipanda's cold figures: makespan from the first submission (no pilot up) (/ ideal), the cold start."""
    if r.get("cold") is None:
        return "-"
    return (f"{r['cold']:.1f}" + (f" ({r['cold'] / ideal:.2f})" if ideal else "")
            + (f", {r['cold_start']:.2f}" if r.get("cold_start") is not None else ""))


def fmt_row(n, seconds, slots, r):
    if "error" in r:
        return r["error"]
    ideal = n * seconds / slots
    return (f"{n / r['makespan']:.1f} tasks/s, makespan {r['makespan']:.1f} s"
            + (f" ({r['makespan'] / ideal:.2f} x ideal)" if ideal else "")
            + (f"; cold {cold(r, ideal)} (makespan, cold start)" if r.get("cold") is not None else "")
            + f", CPU {1000 * r['cpu'] / n:.1f} ms per task, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
