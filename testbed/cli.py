"""The options of ``minipanda testbed`` and its entry point; the run itself is :class:`testbed.bed.Testbed`."""
import argparse
import os
import tempfile

from testbed import demo
from testbed.bed import Testbed
from testbed.config import PREFERRED_PORT, WARM_GETJOB_INTERVAL_S, WARM_WAIT_S

DESCRIPTION = """Run a complete minipanda system on this machine: the server and harvester in this process, pilots
as local batch workers, SQLite in a fresh home, and a demo task of --jobs jobs; each job reads one input file from
the server's file store and uploads its output there. A progress bar shows the jobs (plain lines when the output
is not a terminal); a summary follows. Exit code 0 only when every job finished."""

EPILOG = """examples:
  minipanda testbed                          # 100 jobs on every core of this machine
  minipanda testbed --jobs 1000 --cores 2    # the benchmark size (bench/testbed.py)
  minipanda testbed --keep-running --port 25080   # keep the server and harvester up to look around; Ctrl-C stops
  minipanda testbed --fail-some              # every 10th payload fails once: its retry finishes
  minipanda testbed --warm-up --files none   # pilots up first: a warm makespan beside the cold one

Ctrl-C (or SIGTERM) stops harvester, every pilot it started and the server; nothing is left running."""




def add_parsers(sub):
    p = sub.add_parser("testbed", help="run server + harvester + pilots here with a demo task (one command)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=_positive_int, default=100, metavar="N",
                   help="jobs in the demo task, one input file each (default 100)")
    p.add_argument("--cores", type=_positive_int, default=None, metavar="C",
                   help="cores the queue may use (default: all of this machine's, %d here)" % (os.cpu_count() or 1))
    p.add_argument("--pilots", type=_positive_int, default=None, metavar="P",
                   help="pilots at a time (default 3 x cores: the demo payload only sleeps, and each job also "
                        "costs our pilot, the server and harvester together some CPU (3-20 ms per job on a 2-core VM, more in a "
                        "short run, where start-up counts) and some waiting of its own "
                        "(getJob, stage-in, log tarball, uploads, reports; bench/README.md), so more pilots than cores keep the cores busy; for "
                        "payloads that use a core, give --pilots C)")
    p.add_argument("--job-seconds", type=float, default=0.1, metavar="S",
                   help="how long each demo payload runs (a sleep, then it reads and writes its files; default 0.1)")
    p.add_argument("--files", choices=demo.FILES, default="small",
                   help="what each job reads and writes: 'small' (default): one small text input from the file "
                        "store, upper-cased into its output; '1mb': the same with a 1 MB input and output; "
                        "'none': no input and no output, the payload only sleeps (or runs `true` with "
                        "--job-seconds 0); every job uploads its log tarball")
    p.add_argument("--home", metavar="DIR",
                   help="where everything is kept: database, file store, logs, pilots' directories; it must be "
                        "new or empty (default: a new directory under %s, printed at the start)"
                        % tempfile.gettempdir())
    p.add_argument("--port", type=int, default=None, metavar="P",
                   help=f"the server's port on 127.0.0.1 (default {PREFERRED_PORT} when free, else any free port)")
    p.add_argument("--keep-running", action="store_true",
                   help="when the task is over, keep the server and harvester up (monitor, CLI, more jobs) until "
                        "Ctrl-C or SIGTERM")
    p.add_argument("--warm-up", action="store_true",
                   help="have the pilots up before the demo task, as the task runners' benchmarks do (dask waits "
                        "for its workers, Parsl runs a task first): a warm-up task of one `true` job per pilot goes "
                        "first, harvester launches the pilots for it, and the demo task (its inputs already in the "
                        "file store) is submitted once every pilot has told the server it started and the warm-up's "
                        "jobs are done; pilots with no job ask again every %g s for %g s (queuedata "
                        "pilot_getjob_tries/interval). The summary gives both makespans: from the warm-up's "
                        "submission (cold: pilots launched and started, warm-up included) and from the demo task's "
                        "(warm)" % (WARM_GETJOB_INTERVAL_S, WARM_WAIT_S))
    p.add_argument("--fail-some", action="store_true",
                   help="make every 10th payload fail once (exit code 3): the server retries it, and the retry "
                        "finishes")
    p.add_argument("--auth", choices=["none", "token"], default="none",
                   help="'none' (default; loopback only): the monitor opens without a token; 'token': every "
                        "request needs a bearer token (the admin one is <home>/server/admin.token)")
    p.add_argument("--lost-heartbeat", type=int, default=600, metavar="S",
                   help="a running job whose pilot sent no heartbeat for S seconds is failed as lost and retried; "
                        "pilots send one every S/4 (default 600)")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                   help="server setting, as 'minipanda serve --setting' (e.g. period.watchdog=1); repeatable")
    p.add_argument("--harvester-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="harvester setting, as 'harvester run --setting' (e.g. monitor_period=2); repeatable")
    p.add_argument("--debug", action="store_true", help="debug logging in <home>/testbed.log")
    p.set_defaults(func=cmd_testbed)


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def cmd_testbed(args):
    if args.job_seconds < 0:
        raise ValueError(f"--job-seconds: must not be negative, got {args.job_seconds}")
    if args.fail_some and args.files == "none":
        raise ValueError("--fail-some: needs input files (each 10th input is marked to fail once); not with "
                         "--files none")
    if args.lost_heartbeat < 4:
        raise ValueError(f"--lost-heartbeat: at least 4 s (pilots beat every quarter of it), got {args.lost_heartbeat}")
    return Testbed(args).run()


