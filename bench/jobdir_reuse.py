"""What a no-op job's directory costs the pilot: made, its three files written, removed (every directory new, as
before round 10: ``JobDirs(reuse=False)``) against reused (a spare renamed, its files checked and truncated, kept
again: pilot.jobdirs), in one run, alternating, CPU of this process (user + system) per job.

The cost of a new inode depends on what was deleted lately on the file system (a journal-less ext4 skips every
recently deleted inode: bench/README round 10), so the run prints what a new file costs before and after, and the
sides alternate in rounds. Run where the pilots work (default: under /tmp, like bench/testbed.py)::

    python3 bench/jobdir_reuse.py --jobs 2000 --rounds 4
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fsprobe  # noqa: E402
from pilot.jobdirs import JobDirs, open_job_file  # noqa: E402

DEFINITION = b'{"PandaID":1,"transformation":"/bin/true","jobPars":""}'  # each file written: truncated when reused


def jobs(dirs, base, first, count):
    """``count`` jobs' directories as the pilot handles them (made, definition, stdout and stderr, released);
    CPU seconds taken."""
    began = time.process_time()
    for panda_id in range(first, first + count):
        job_dir = os.path.join(base, f"PandaJob_{panda_id}")
        dirs.make(job_dir)
        for name, data in (("job_definition.json", DEFINITION), ("payload.stdout", b"out\n"),
                           ("payload.stderr", b"err\n")):
            with open(open_job_file(os.path.join(job_dir, name)), "wb") as handle:
                handle.write(data)
        dirs.release(job_dir, payload_gone=True)
    return time.process_time() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per side and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each side once per round (default 4)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the pilot directories go (/tmp)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-jobdir-", dir=args.dir)
    print(f"bench/jobdir_reuse.py: {args.jobs} jobs x {args.rounds} rounds per side under {work}; "
          f"load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"  before: {fsprobe.describe(work)}", flush=True)
    results = {"new each job": [], "reused": []}
    try:
        for n in range(args.rounds):
            order = ("new each job", "reused") if n % 2 == 0 else ("reused", "new each job")
            for side in order:
                base = os.path.join(work, f"{side[:3]}-{n}")
                os.makedirs(base)
                dirs = JobDirs(base, reuse=side == "reused")
                cpu = jobs(dirs, base, 1 + n * args.jobs, args.jobs)
                dirs.close()
                results[side].append(cpu * 1000 / args.jobs)
                print(f"  round {n + 1} {side}: {cpu * 1000 / args.jobs:.3f} ms CPU per job "
                      f"({dirs.reused} reused, {dirs.fresh} made new)", flush=True)
        print(f"  after: {fsprobe.describe(work)}; load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    old, new = (sorted(results[side]) for side in ("new each job", "reused"))
    print("| side | ms CPU per job, each round | median |\n|---|---|---:|")
    for side, values in (("new each job (before)", old), ("reused (pilot.jobdirs)", new)):
        print(f"| {side} | {', '.join(f'{v:.3f}' for v in values)} | {values[len(values) // 2]:.3f} |")
    print(f"reused / new each job (medians) = {new[len(new) // 2] / old[len(old) // 2]:.2f}")


if __name__ == "__main__":
    main()
