"""File-system operations per job: ``minipanda testbed`` (no-op jobs, no files) run under ``strace -f``, each
successful create (``openat`` with ``O_CREAT``, an existing file opened so included), mkdir, unlink, rmdir and rename
counted and divided by the jobs; those in the pilot's and the jobs' directories apart. A new inode costs 0.1-0.8 ms
of CPU on this VM's journal-less ext4 after many deletions (bench/README round 10), and a metadata round trip on
Lustre/GPFS/NFS, so these counts say what a job costs the file system whatever the load::

    python3 bench/fsops.py --jobs 200 --baseline acf7a53

Needs strace. The counts do not depend on timing, except the few directories a pilot makes before it has a
spare (pilot.jobdirs).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # run as a script it is first already; imported
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # (by tests) it must not hide the packages

import baseline  # noqa: E402

KINDS = ("creates", "mkdir", "unlink", "rmdir", "rename")
CALLS = "openat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir"
PILOT_PATHS = re.compile(r"PanDA_Pilot-|PandaJob_|payload\.std|job_definition|spare_jobdir|\.tgz")


def joined_calls(lines):
    """The system calls of ``strace -f`` output, an ``<unfinished ...>`` call joined to its ``<... resumed>`` end
    (another process's call came between them)."""
    pending = {}
    for line in lines:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()  # strace pads the pid column
        if rest.endswith("<unfinished ...>\n"):
            pending[pid] = rest[: -len("<unfinished ...>\n")]
            continue
        resumed = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
        yield pending.pop(pid, "") + resumed.group(1) if resumed else rest


def kind(call):
    """What the call does to the file system (one of KINDS), or None."""
    if call.startswith("openat(") and "O_CREAT" in call:
        return "creates"
    if re.match(r"mkdir(at)?\(", call):
        return "mkdir"
    if call.startswith("unlinkat("):
        return "rmdir" if "AT_REMOVEDIR" in call else "unlink"
    if call.startswith("unlink("):
        return "unlink"
    if call.startswith("rmdir("):
        return "rmdir"
    if re.match(r"rename(at2?)?\(", call):
        return "rename"
    return None


def count(lines):
    """(every process, the pilot's and jobs' directories): Counters of KINDS over the successful calls."""
    every, pilot = collections.Counter(), collections.Counter()
    for call in joined_calls(lines):
        what, result = kind(call), re.search(r"\) += (-?\d+)", call)
        if what is None or result is None or int(result.group(1)) < 0:
            continue
        every[what] += 1
        if PILOT_PATHS.search(call):
            pilot[what] += 1
    return every, pilot


def run_side(label, tree, jobs, pilots):
    work = tempfile.mkdtemp(prefix="bench-fsops-")
    try:
        trace = os.path.join(work, "strace.txt")
        argv = ["strace", "-f", "-qq", "-e", f"trace={CALLS}", "-o", trace, sys.executable, "-m", "minipanda",
                "testbed", "--home", os.path.join(work, "home"), "--port", "0", "--jobs", str(jobs), "--pilots",
                str(pilots), "--warm-up", "--job-seconds", "0", "--files", "none"]
        out = subprocess.run(argv, cwd=tree, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{label}: testbed failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr[-1500:]}")
        with open(trace, encoding="utf-8", errors="replace") as handle:
            return count(handle)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="no-op jobs (default 200)")
    parser.add_argument("--pilots", type=int, default=1, help="pilots (default 1)")
    parser.add_argument("--baseline", metavar="REV", help="also count that commit's testbed")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("bench/fsops.py needs strace")
    runs = baseline.run_sides(args.baseline, lambda label, tree, case: run_side(label, tree, args.jobs, args.pilots),
                              1, prepare=baseline.compile_tree)
    print(f"file-system operations per job ({args.jobs} no-op jobs, {args.pilots} pilot(s), successful calls)")
    print(f"| tree | pilot and job directories: {' / '.join(KINDS)} | every process: {' / '.join(KINDS)} |")
    print("|---|---|---|")
    for run in runs:
        every, pilot = run.result
        per_job = lambda counter: " / ".join(f"{counter[k] / args.jobs:.2f}" for k in KINDS)  # noqa: E731
        print(f"| {run.label} | {per_job(pilot)} | {per_job(every)} |")


if __name__ == "__main__":
    main()
