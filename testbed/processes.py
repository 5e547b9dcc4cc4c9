"""The process tree below the testbed: subreaper, /proc reads, reaping; and small helpers of the run."""
import datetime
import os
import socket
import time
import zlib

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Orphans below this process are re-parented here instead of to init (Linux); False elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def proc_stat(pid):
    """(state, process group, start ticks) of ``pid`` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return fields[0], int(fields[2]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def children(pid):
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found += [int(x) for x in handle.read().split()]
        except OSError:
            pass
    return found


def descendants(pid):
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def reap(pid):
    """Collect ``pid`` if it is an exited child of ours (a re-parented orphan); never blocks."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def free_port(preferred):
    """``preferred`` when nothing listens there on 127.0.0.1, else 0 (the server picks a free port)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return 0


def adler32(data):
    return f"{zlib.adler32(data) & 0xffffffff:08x}"


def process_start_time():
    """When this process started (epoch seconds), so 'time to first job' counts the command's own start-up."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil is a dependency; this is only a fallback
        return time.time()


def count_files(directory, suffix):
    try:
        return sum(name.endswith(suffix) for name in os.listdir(directory))
    except OSError:
        return 0


def utc_epoch(value):
    if value is None:
        return None
    return value.replace(tzinfo=datetime.timezone.utc).timestamp()


