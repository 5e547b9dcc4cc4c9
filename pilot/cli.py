"""The ``pilot`` command: options close to pilot3's, plus ``build-zipapp``, ``replay-outbox`` and ``queuedata-keys``.

    pilot -q QUEUE [--url URL] [-p PORT] [-a WORKDIR] [-l LIFETIME] [--token-file F] [--queuedata F] ...
    pilot build-zipapp OUT.pyz
    pilot replay-outbox -a WORKDIR [--url URL] [-p PORT] [--token-file F]
    pilot queuedata-keys
"""
import argparse
import os
import select
import sys

from pilot import __version__, comm

EPILOG = """exit codes (pilot3's): 0 ok, 64 queue offline, 65 general error, 66 mkdir, 68 token refused,
69 no local space, 70 pilot exception, 71 no queuedata, 72 bad queuedata, 78 queue not active,
79 server communication (a final update may be in the outbox), 81 reached the time limit, 82 no jobs,
128+N killed by signal N (143 SIGTERM, 130 SIGINT, ...). See docs/pilot.md."""


def commands():
    """The subcommands: name -> (function, arguments, what it does); ``pilot --help`` lists them."""
    return {"build-zipapp": (build_zipapp, "OUT.pyz", "write the pilot as one .pyz file"),
            "replay-outbox": (replay_outbox, "-a WORKDIR", "send the final updates spooled in the outbox"),
            "queuedata-keys": (queuedata_keys, "", "list every queuedata key the pilot reads, with its default")}


def run_parser():
    listed = "\n".join(f"  {f'pilot {name} {args}':34} {what}" for name, (_, args, what) in commands().items())
    parser = argparse.ArgumentParser(
        prog="pilot", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description=f"minipanda pilot: run PanDA jobs on this node\n\ncommands (each has --help):\n{listed}")
    add = parser.add_argument
    add("--version", action="version", version=f"minipanda pilot {__version__}")
    add("-q", "--queue", required=True, help="the PanDA queue this pilot serves (computingElement)")
    add("--url", default=os.environ.get("MINIPANDA_URL", "http://127.0.0.1"), help="server URL (default "
        "$MINIPANDA_URL or http://127.0.0.1)")
    add("-p", "--port", type=int, default=25080, help="server port when --url has none (default 25080)")
    add("-j", "--job-label", help="prodSourceLabel asked for (default: what the queue serves, from queuedata "
        "prodsourcelabels: unified when managed and user; else managed)")
    add("-a", "--workdir", default=os.getcwd(), help="work area: pilot directories, outbox (default: cwd)")
    add("-l", "--lifetime", type=int, help="seconds this pilot may live (default: queuedata pilot_lifetime, "
                                           "324000)")
    add("-d", "--debug", action="store_true", help="debug logging")
    add("--quiet", action="store_true", help="log only to the pilot log file, not to stderr")
    add("--token-file", help="file holding the bearer token (role pilot); re-read at each request")
    add("--queuedata", help="queuedata JSON file instead of the server's /cache/schedconfig/<queue>.all.json")
    add("--harvester-workdir", help="the worker's directory shared with harvester (job file, reports)")
    add("--harvester-submit-mode", choices=["PULL", "PUSH"], default="PULL", type=str.upper,
        help="PUSH: the job is in the harvester work dir; PULL (default): ask the server")
    add("-z", "--no-server-updates", action="store_true",
        help="file mode: no HTTP at all; jobs and reports go through the harvester work dir")
    add("--input-dir", help="where copy/mv/symlink find input files (overrides queuedata input_dir)")
    add("--output-dir", help="where outputs and the log tarball go (overrides queuedata output_dir)")
    add("--batch-id", help="batch job id reported to the server (default: from SLURM_JOB_ID, PBS_JOBID, ...)")
    add("--no-cleanup", action="store_true", help="keep job directories after the job")
    add("--no-subreaper", action="store_true", help="do not adopt the payload's orphans (PR_SET_CHILD_SUBREAPER)")
    add("--getjob-lookahead", type=float, default=1.0, metavar="SECONDS",
        help="over HTTP, ask one getJob for as many jobs (nJobs) as fill about this many seconds at the pace "
             "seen so far (one until a job's pace is known; never more than the remaining time or timefloor "
             "allow); 0 turns it off: one job per getJob (default 1.0)")
    add("--getjob-max-jobs", type=int, default=50, metavar="N",
        help="the most jobs one getJob asks for (default 50)")
    add("--final-batch-wait", type=float, default=1.0, metavar="SECONDS",
        help="over HTTP, how long a job's final update may wait for others' to go to the server in one "
             "updateJobsInBulk (sent at once when the pilot has no job in hand or stops; default 1.0)")
    add("-w", "--workflow", default="generic", help="accepted for pilot3 compatibility; only generic exists")
    add("--pilot-user", default="generic", help="accepted for pilot3 compatibility; ignored")
    return parser


def main(argv=None):
    """Entry point of ``pilot``; returns the exit code (0 when the reader of stdout went away: ``| head -1``)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a buffered tail is written here, inside the try, not at exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nowhere left for the exit-time flush
        return 0


def _stdout_reader_gone():
    """True when stdout is a pipe whose reading end is closed (the pilot imports nothing of queueconfig, where
    the other commands' copy of this lives)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _main(argv):
    import_shutil_without_compressors()  # before argparse's help formatter imports shutil
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in commands():
        return commands()[argv[0]][0](argv[1:])
    parser = run_parser()
    options = parser.parse_args(argv)
    if options.getjob_lookahead < 0 or options.final_batch_wait < 0 or options.getjob_max_jobs < 1:
        parser.error("--getjob-lookahead and --final-batch-wait take seconds >= 0, --getjob-max-jobs a count >= 1")
    options.url = comm.base_url(options.url, options.port)
    options.workdir = os.path.abspath(options.workdir)
    for name in ("harvester_workdir", "queuedata", "input_dir", "output_dir", "token_file"):
        if getattr(options, name):
            setattr(options, name, os.path.abspath(getattr(options, name)))
    os.makedirs(options.workdir, exist_ok=True)
    from pilot.worker import Pilot

    return Pilot(options).work()


ARCHIVE_COMPRESSORS = ("bz2", "lzma")


def import_shutil_without_compressors():
    """``shutil``, imported with bz2 and lzma held back when nothing in the process has loaded it yet.

    shutil imports both only to list its archive formats (make_archive, unpack_archive: the pilot uses neither; its
    log tarball is gzip's, written by pilot.tarball): ~0.3 MB of a pilot's resident memory, liblzma's and libbz2's
    code included. Held back as pilot.httpclient holds ``ssl`` back; ``import bz2`` works normally afterwards.
    """
    if "shutil" in sys.modules:
        return
    held = [name for name in ARCHIVE_COMPRESSORS if name not in sys.modules]
    for name in held:
        sys.modules[name] = None  # makes shutil's `import bz2` fail: it leaves the bztar format out
    try:
        import shutil  # noqa: F401
    finally:
        for name in held:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def build_zipapp(argv):
    parser = argparse.ArgumentParser(prog="pilot build-zipapp", description="write the pilot as one .pyz file")
    parser.add_argument("output", help="the file to write, e.g. pilot.pyz")
    parser.add_argument("--python", default="/usr/bin/env python3", help="interpreter line (default: "
                                                                         "/usr/bin/env python3)")
    args = parser.parse_args(argv)
    from pilot import zipapp

    zipapp.build(args.output, args.python)
    print(args.output)
    return 0


def replay_outbox(argv):
    parser = argparse.ArgumentParser(prog="pilot replay-outbox", description="send the final updates spooled in "
                                                                            "the outbox")
    parser.add_argument("-a", "--workdir", default=os.getcwd(), help="the pilot work area holding outbox/")
    parser.add_argument("--url", default=os.environ.get("MINIPANDA_URL", "http://127.0.0.1"),
                        help="server URL (default $MINIPANDA_URL or http://127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=25080, help="server port when --url has none (default "
                                                                      "25080)")
    parser.add_argument("--token-file", help="file holding the bearer token (role pilot)")
    args = parser.parse_args(argv)
    import logging

    from pilot.outbox import Outbox

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    client = comm.ServerClient(comm.base_url(args.url, args.port), args.token_file, 30)
    delivered, left = Outbox(os.path.join(os.path.abspath(args.workdir), "outbox")).replay(client)
    print(f"delivered {delivered}, left {left}")
    return 0 if not left else 79


def queuedata_keys(argv):
    argparse.ArgumentParser(prog="pilot queuedata-keys", description="every queuedata key the pilot reads: name, "
                                                                     "default, meaning").parse_args(argv)
    from pilot import queuedata

    for name, default, doc in queuedata.documented_keys():
        print(f"{name:32} {default!r:28} {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
