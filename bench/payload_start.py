#!/usr/bin/env python
"""A payload's start and reap, the pilot's ways and the ones it replaced, side by side in one run.

Each way starts the same command (``/bin/sleep S``) through pilot.payload.Payload (its job directory, output
files, session) the number of times asked, in turn, from this process with a pilot-sized heap (20 MB of Python
objects), and waits for its exit:

  guard + pidfd      with a pilot.guard.Guard (vfork, one exec), woken by the payload's pidfd (the pilot now)
  guard + SIGCHLD    the same start, woken by SIGCHLD through signal.set_wakeup_fd (the pilot's wake-up before)
  setpriv            the command behind ``setpriv --pdeathsig KILL --`` (two execs), SIGCHLD wake-up (round 3-5)
  fork + prctl       without a guard: a preexec_fn sets PR_SET_PDEATHSIG (a full fork of this process; the
                     pilot's fallback where no guard runs)

Figures per way: ``total`` (median over the runs) from before the start to the exit reaped, ``over`` = total - S, and ``CPU`` (mean) = this process's and its
children's CPU per payload (the payload's own included, so compare ways, not absolutes). Nothing is asserted;
the load average is printed (the machine may be shared).

    python3 bench/payload_start.py                     # 100 x sleep 0 and 40 x sleep 0.1
    python3 bench/payload_start.py --runs 200 --seconds 0
"""
import argparse
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pilot import guard, payload  # noqa: E402


class Wakeup:
    """SIGCHLD to a pipe, as pilot.signals.Waker."""

    def __init__(self):
        self.read_fd, write_fd = os.pipe()
        for fd in (self.read_fd, write_fd):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def wait_for(self, proc):
        while os.wait4(proc.pid, os.WNOHANG)[0] == 0:
            select.select([self.read_fd], [], [], 1.0)
            try:
                while os.read(self.read_fd, 512):
                    pass
            except BlockingIOError:
                pass
        proc.returncode = 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=0, help="payloads per way (default 100 for 0 s, 40 otherwise)")
    p.add_argument("--seconds", type=float, action="append", help="payload seconds (repeatable; default 0 and 0.1)")
    args = p.parse_args(argv)
    heap = [bytearray(1 << 20) for _ in range(20)]  # noqa: F841 (a pilot-sized process to fork)
    wake = Wakeup()
    work = tempfile.mkdtemp(prefix="bench-payload-start-")
    env = dict(os.environ)
    g = guard.Guard.start()
    setpriv = shutil.which("setpriv")
    print(f"bench/payload_start.py: load before {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")

    def start_and_reap(argv, pidfd=False, with_guard=True):
        run = payload.Payload(argv, work, env, None, g if with_guard else None)
        run.start()
        if pidfd:
            while run.wait(1.0) is None:
                pass
        else:
            wake.wait_for(run.proc)
        run.release()

    ways = {
        "guard + pidfd": lambda argv: start_and_reap(argv, pidfd=True),
        "guard + SIGCHLD": lambda argv: start_and_reap(argv),
        "fork + prctl": lambda argv: start_and_reap(argv, with_guard=False),
    }
    if setpriv:  # vfork and two execs, as the pilot did from round 3 to 5 (the guard's two writes aside)
        ways["setpriv"] = lambda argv: start_and_reap([setpriv, "--pdeathsig", "KILL", "--"] + argv)
    try:
        print("| payload | way | runs | total ms | over ms | CPU ms | load 1/5/15 |")
        print("|---|---|---:|---:|---:|---:|---|")
        for seconds in args.seconds or [0.0, 0.1]:
            runs = args.runs or (100 if seconds == 0 else 40)
            argv = ["/bin/sleep", f"{seconds:g}"]
            figures = {name: [] for name in ways}
            for _ in range(runs):
                for name, way in ways.items():  # in turn, so the load is shared alike
                    before, began = os.times(), time.perf_counter()
                    way(argv)
                    took, after = time.perf_counter() - began, os.times()
                    cpu = sum(after[:4]) - sum(before[:4])
                    figures[name].append((took, cpu))
            load = "/".join(f"{x:.2f}" for x in os.getloadavg())
            for name, values in figures.items():
                total = statistics.median(v[0] for v in values) * 1000
                cpu = statistics.fmean(v[1] for v in values) * 1000
                print(f"| sleep {seconds:g} | {name} | {runs} | {total:.2f} | {total - seconds * 1000:.2f} | "
                      f"{cpu:.2f} | {load} |")
    finally:
        g.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
