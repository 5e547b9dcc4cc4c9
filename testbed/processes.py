"""The process tree below the testbed: subreaper, /proc reads, reaping, the pilots harvester started and their
stop; and small helpers of the run."""
import contextlib
import datetime
import json
import os
import signal
import socket
import time

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


def process_start_time():
    """When this process started (epoch seconds), so 'time to first job' counts the command's own start-up.

    From /proc, as psutil's create_time() reads it (boot time + the process's start in clock ticks): importing psutil
    for it was ~12 ms of CPU at every testbed start, and nothing else in the testbed's process needs psutil."""
    try:
        with open("/proc/stat") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        return boot + proc_stat(os.getpid())[2] / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError, TypeError):
        return time.time()  # no /proc: the testbed's start, less the interpreter's


def count_files(directory, suffix, prefix=""):
    try:
        return sum(name.endswith(suffix) and name.startswith(prefix) for name in os.listdir(directory))
    except OSError:
        return 0


def utc_epoch(value):
    if value is None:
        return None
    return value.replace(tzinfo=datetime.timezone.utc).timestamp()




class PilotProcesses:
    """The pilots harvester started below this process, known from the local batch plugin's spool records, and
    everything else below it: found, collected when they end, stopped."""

    def __init__(self, harvester_home, subreaper):
        self.harvester_home, self.subreaper = harvester_home, subreaper
        self._records = {}
        self._ended = set()  # pilots seen gone (or collected): never looked at again, so a look costs the live ones

    def records(self):
        """{pid: start ticks} of every pilot harvester started (the local batch plugin's spool records)."""
        root = os.path.join(self.harvester_home, "workers")
        if not os.path.isdir(root):
            return {}
        for queue in os.listdir(root):
            spool = os.path.join(root, queue, ".batch")
            if not os.path.isdir(spool):
                continue
            for name in os.listdir(spool):
                if not name.endswith(".json") or name in self._records:
                    continue
                try:
                    with open(os.path.join(spool, name)) as handle:
                        record = json.load(handle)
                    self._records[name] = (int(record["pid"]), int(record["start"]))
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # being written: read at the next look
        return dict(self._records.values())

    def watched(self):
        """{pid: start ticks} of the pilots not known to have ended."""
        return {pid: start for pid, start in self.records().items() if pid not in self._ended}

    def live(self):
        """The pilots' process groups still running: {pid: start ticks}."""
        live = {}
        for pid, start in self.watched().items():
            stat = proc_stat(pid)
            if stat and stat[2] == start and stat[0] not in ("Z", "X"):
                live[pid] = start
            elif not stat or stat[2] != start:  # gone, or its pid taken by another process: ended for good
                self._ended.add(pid)
        return live

    def reap_orphans(self):
        """Pilots' job scripts are re-parented here (subreaper): collect the ended ones."""
        if not self.subreaper:
            return
        for pid, start in self.watched().items():
            stat = proc_stat(pid)
            if stat and stat[0] == "Z" and stat[2] == start:
                reap(pid)
                self._ended.add(pid)

    def let_end(self, timeout=15.0):
        """No job is left: the pilots ask a few more times (getjob_tries), find none and exit, so their workers
        end finished; the ones still there after ``timeout`` are stopped later with everything else."""
        deadline = time.monotonic() + timeout
        while self.live() and time.monotonic() < deadline:
            self.reap_orphans()
            time.sleep(0.2)
        self.reap_orphans()

    def stop(self, grace=10.0):
        """SIGTERM to every live pilot's process group (the pilot kills its payload and reports), SIGKILL to what
        is left after ``grace`` s."""
        live = set(self.live()) | (self.live_groups() & set(self.records()))
        if not live:
            return 0
        for pgid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        groups = set(live)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.reap_orphans()
            groups &= self.live_groups()
            if not groups:
                break
            time.sleep(0.1)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.reap_orphans()
        return len(live)

    def live_groups(self):
        """Process groups with a live process below this one (the job script, which leads its pilot's group, dies
        at once on SIGTERM; its pilot goes on to stop its payload and report)."""
        groups = set()
        for pid in descendants(os.getpid()):
            stat = proc_stat(pid)
            if stat and stat[0] not in ("Z", "X"):
                groups.add(stat[1])
        if not self.subreaper:  # orphans are not below us: ask the kernel about each pilot's group
            for pgid in self.records():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, 0)
                    groups.add(pgid)
        return groups

    def stop_descendants(self):
        """Anything still below this process (orphaned payloads, a cancel helper): killed and collected."""
        me = os.getpid()
        for _ in range(3):
            left = [pid for pid in descendants(me) if proc_stat(pid) and proc_stat(pid)[0] not in ("Z", "X")]
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for pid in children(me):
            stat = proc_stat(pid)
            if stat and stat[0] == "Z":
                reap(pid)

    def leftovers(self):
        """Pilots' process groups and processes below this one that still run (should be none after a stop)."""
        below = [pid for pid in descendants(os.getpid()) if (proc_stat(pid) or ("X",))[0] not in ("Z", "X")]
        return sorted(set(below) | set(self.live()))
