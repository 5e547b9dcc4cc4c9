#!/usr/bin/env python
"""How many pilots a testbed run starts, and whether any left while jobs could still be claimed: ``minipanda
testbed`` runs (one at a time) of this tree and, with ``--baseline REV``, of that commit, alternating.

Per run, from its home (kept only when the run started more pilots than asked for):
  pilots    pilots started (summary.json) against the testbed's pilots
  decided   harvester adjuster's cycles that decided new workers (testbed.log)
  early     pilots whose first empty getJob came before the server's last dispatch of a job (pilot logs against
            the server's status_log): a pilot that gave up while work was still claimed by others
The profiling hooks of bench/files_cpu.py are on the testbed's PYTHONPATH unless --no-hooks (files_cpu.py's runs
are where twelve pilots were first seen). Nothing is asserted; the load average is printed. Only 127.0.0.1 is
contacted.

    python3 bench/pilot_sets.py --runs 6 --files none,1mb --baseline d82bba9
"""
import argparse
import datetime
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
HOOKS = os.path.join(HERE, "files_cpu_hooks")
sys.path.insert(0, HERE)

import baseline  # noqa: E402


def first_empty_getjob(pilot_log):
    """When the pilot's first getJob without a job was logged (UTC, naive), or None."""
    with open(pilot_log, errors="replace") as handle:
        for line in handle:
            if "no job for this pilot" in line:
                local = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
                return local.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return None


def last_dispatch(server_db):
    with sqlite3.connect(server_db) as conn:
        value = conn.execute("SELECT MAX(time) FROM status_log WHERE new_status = 'sent'").fetchone()[0]
    return datetime.datetime.fromisoformat(value) if value else None


def run_once(tree, files, jobs, base, hooks):
    out = tempfile.mkdtemp(prefix=f"pilots-{files}-", dir=base)
    home = os.path.join(out, "home")
    env = dict(os.environ, FILES_CPU_DIR=out)
    if hooks:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", home, "--port", "0", "--jobs", str(jobs),
            "--job-seconds", "0", "--files", files]
    with open(os.path.join(out, "testbed.out"), "wb") as log:
        code = subprocess.run(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900).returncode
    summary = json.load(open(os.path.join(home, "summary.json")))
    if code or not summary.get("complete"):
        raise SystemExit(f"testbed --files {files} in {tree}: exit {code}, see {out}")
    with open(os.path.join(home, "testbed.log"), errors="replace") as handle:
        decided = sum(1 for line in handle if "harvester.agents.adjuster" in line and "new workers" in line)
    last = last_dispatch(os.path.join(home, "server", "minipanda.db"))
    logs = glob.glob(os.path.join(home, "harvester", "workers", "*", "*", "PanDA_Pilot-*", "pilotlog.txt"))
    empties = [first_empty_getjob(path) for path in logs]
    early = sum(1 for when in empties if when is not None and last is not None and when < last)
    result = {"pilots": summary["pilots_started"], "asked": summary["pilots"], "decided": decided, "early": early}
    if result["pilots"] == result["asked"] and not early:
        shutil.rmtree(out, ignore_errors=True)
    else:
        result["kept"] = out
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4, help="runs per side and --files kind (default 4)")
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--files", default="none,1mb", help="testbed --files kinds, comma-separated (default none,1mb)")
    p.add_argument("--no-hooks", action="store_true", help="without bench/files_cpu_hooks on the PYTHONPATH")
    p.add_argument("--baseline", metavar="REV", help="also run that commit's testbed (alternating)")
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="bench-pilot-sets-")
    kinds = [k.strip() for k in args.files.split(",") if k.strip()]
    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)

    def run_side(label, tree, kind):
        result = run_once(tree, kind, args.jobs, base, not args.no_hooks)
        print(f"{label:>20} {kind:>5}: {result['pilots']} pilots of {result['asked']}, adjuster decided "
              f"{result['decided']}x, {result['early']} left early" + (f" (kept {result['kept']})"
                                                                      if "kept" in result else "")
              + f"  load {os.getloadavg()[0]:.2f}", flush=True)
        return result

    try:
        runs = baseline.run_sides(args.baseline, run_side, args.runs, cases=kinds, prepare=baseline.compile_tree)
    finally:
        if not glob.glob(os.path.join(base, "*", "home")):
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'side':>20}  runs  more pilots than asked  pilots leaving early")
    for label in runs.labels:
        mine = runs.of(label)
        extra = sum(1 for r in mine if r["pilots"] > r["asked"])
        early = sum(1 for r in mine if r["early"])
        print(f"{label:>20}  {len(mine):>4}  {extra:>22}  {early:>20}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
