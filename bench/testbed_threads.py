#!/usr/bin/env python
"""Where the testbed process's CPU goes, thread by thread: ``minipanda testbed --files none`` (server and harvester
in one process, the pilots apart), this tree beside a baseline commit's, in the order this, baseline, baseline, this.

While a run goes, the CPU time of every thread of the testbed process is read from /proc/<pid>/task/*/stat twice a
second (the last reading counts), and ``py-spy dump`` names the threads every few seconds (Python threads carry
their names only inside the interpreter: the request threads, the loop thread ``minipanda-http``, each harvester
agent and each server duty); granian's Rust threads keep their own names. Prints ms of CPU per job per group of
threads, side by side, with the testbed's own summary line and the load average; then harvester's agent cycles in
the run and the seconds from the first job waiting on the server to the first worker handed to the batch system
(both from the run's databases). Needs py-spy (the bench extra).
Only 127.0.0.1 is contacted; the testbed stops what it started.

    python3 bench/testbed_threads.py --baseline main~5             # 1,000 no-op jobs per run, 4 runs
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import baseline  # noqa: E402

GROUPS = (("minipanda-http (the loop: bodies read, replies sent)", lambda n: n == "minipanda-http"),
          ("request threads", lambda n: n.startswith("minipanda-request")),
          ("granian's Rust I/O", lambda n: n.startswith("tokio")),
          ("granian's scheduling thread", lambda n: n.startswith("python:")),
          ("main thread (imports, the testbed's follow loop)", lambda n: n == "MainThread"),
          ("duties", lambda n: n.startswith("duty-")),
          ("harvester monitor", lambda n: n == "agent-monitor"),
          ("harvester submitter", lambda n: n == "agent-submitter"),
          ("harvester adjuster", lambda n: n == "agent-adjuster"),
          ("other agents", lambda n: n.startswith("agent-")),
          ("other threads", lambda n: True))


def spy():
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or beside


def one_run(tree, jobs, base):
    home = os.path.join(base, f"run-{time.time_ns()}")
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", home, "--port", "0", "--jobs", str(jobs),
            "--job-seconds", "0", "--cores", "2", "--files", "none"]
    with open(home + ".out", "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tree)
    names, last, dumped = {}, {}, 0.0
    while proc.poll() is None:
        try:
            for tid in os.listdir(f"/proc/{proc.pid}/task"):
                with open(f"/proc/{proc.pid}/task/{tid}/stat") as handle:
                    text = handle.read()
                fields = text.rsplit(")", 1)[1].split()
                last[tid] = (text[text.index("(") + 1:text.rindex(")")], int(fields[11]) + int(fields[12]))
        except OSError:
            pass
        if time.monotonic() - dumped > 5:
            dumped = time.monotonic()
            try:
                dump = subprocess.run([spy(), "dump", "--pid", str(proc.pid), "--nonblocking"], capture_output=True,
                                      text=True, timeout=30).stdout
                for match in re.finditer(r'Thread (\d+) \([^)]*\): "([^"]+)"', dump):
                    names.setdefault(match.group(1), match.group(2))
            except (OSError, subprocess.TimeoutExpired):
                pass
        time.sleep(0.5)
    with open(home + ".out") as handle:
        output = handle.read()
    summary = re.search(r"CPU: server \+ harvester ([\d.]+) s, pilots ([\d.]+) s.*?load average ([\d./]+)", output)
    ticks = collections.Counter()
    for tid, (comm, used) in last.items():
        name = names.get(tid) or f"{comm}:{tid}"
        group = next(label for label, test in GROUPS if test(name))
        ticks[group] += used
    per_job = {group: 1000 * value / os.sysconf("SC_CLK_TCK") / jobs for group, value in ticks.items()}
    return per_job, (summary.groups() if summary else ("?", "?", "?")) + harvester_figures(home), proc.returncode


def harvester_figures(home):
    """(harvester's agent cycles in the run, s from the first job waiting on the server to the first worker handed to
    the batch system), read from the run's two databases; "?" where they cannot be read."""
    import datetime
    import sqlite3

    def one(path, sql):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return conn.execute(sql).fetchone()[0]
        except (sqlite3.Error, TypeError):
            return None

    cycles = one(os.path.join(home, "harvester", "harvester.db"), "SELECT SUM(runs) FROM agent_run")
    waiting = one(os.path.join(home, "server", "minipanda.db"), "SELECT MIN(creation_time) FROM job")
    submitted = one(os.path.join(home, "harvester", "harvester.db"), "SELECT MIN(submit_time) FROM worker")
    latency = "?"
    if waiting and submitted:
        seconds = (datetime.datetime.fromisoformat(submitted) - datetime.datetime.fromisoformat(waiting))
        latency = f"{seconds.total_seconds():.2f}"
    return (str(cycles) if cycles is not None else "?", latency)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", metavar="REV", required=True, help="the commit to run beside this tree")
    p.add_argument("--jobs", type=int, default=1000, help="no-op jobs per run (default 1,000)")
    args = p.parse_args(argv)
    base = tempfile.mkdtemp(prefix="bench-testbed-threads-")
    print(f"bench/testbed_threads.py: {args.jobs} no-op jobs per run; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    def one_side(label, where, _):
        per_job, summary, code = one_run(where, args.jobs, base)
        print(f"  {label}: exit {code}, server + harvester {summary[0]} s, pilots {summary[1]} s, load "
              f"{summary[2]}", flush=True)
        return per_job, summary

    try:  # two pairs: this, baseline, baseline, this
        runs = [(run.label, *run.result) for run in baseline.run_sides(args.baseline, one_side, 2,
                                                                       baseline_label=args.baseline)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\nms of CPU per job, by thread of the testbed process (server + harvester)")
    print("| thread(s) | " + " | ".join(label for label, _, _ in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for group, _ in GROUPS:
        print(f"| {group} | " + " | ".join(f"{per_job.get(group, 0.0):.2f}" for _, per_job, _ in runs) + " |")
    print("| all threads | " + " | ".join(f"{sum(per_job.values()):.2f}" for _, per_job, _ in runs) + " |")
    print("| testbed summary: server + harvester s | " + " | ".join(s[0] for _, _, s in runs) + " |")
    print("| load average at the end | " + " | ".join(s[2] for _, _, s in runs) + " |")
    print("| harvester agent cycles in the run | " + " | ".join(s[3] for _, _, s in runs) + " |")
    print("| first job waiting -> first worker submitted, s | " + " | ".join(s[4] for _, _, s in runs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
