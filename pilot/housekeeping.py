"""Housekeeping: the pilot log, free space, and removing old pilot directories from the work area."""
import logging
import os
import re
import shutil
import sys
import time

from pilot.fileutil import free_mb, newest_mtime

log = logging.getLogger(__name__)
PILOT_DIR = re.compile(r"^PanDA_Pilot-\d+_\d+$")
LOG_NAME = "pilotlog.txt"


def setup_logging(pilot_dir, debug=False, quiet=False):
    """Log to ``<pilot_dir>/pilotlog.txt`` (it goes into each job's log tarball) and to stderr; return its path."""
    path = os.path.join(pilot_dir, LOG_NAME)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    if not quiet:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # the format uses none of the caller's file and line, thread or process: not looked up for each line
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    return path


def free_space_mb(path):
    """MB free where the pilot works (0 when it cannot be read)."""
    try:
        return free_mb(path)
    except OSError:
        return 0.0


def clean_old_pilot_dirs(workdir, own_dir, max_age, now=None):
    """Remove ``PanDA_Pilot-*`` directories in ``workdir`` untouched for more than ``max_age`` s.

    Only directories named like a pilot's are considered, never the caller's own; the outbox and outputs are not
    pilot directories and are never touched. Returns the removed paths.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(workdir)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(workdir, name)
        if not PILOT_DIR.match(name) or os.path.abspath(path) == os.path.abspath(own_dir):
            continue
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        age = now - newest_mtime(path)
        if age > max_age:
            log.info("removing old pilot directory %s (untouched for %.1f h)", path, age / 3600)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
