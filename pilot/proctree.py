"""The payload's process tree: which processes belong to it, what they use, and killing every one of them.

A process belongs to the job when it descends from the payload, or shares the payload's process group or
session (it was orphaned to init but did not call setsid), or - when the pilot made itself a child subreaper -
when it was re-parented to the pilot. psutil is used when it can be imported, /proc otherwise.
"""
import collections
import os
import signal
import time

_psutil = False  # not looked for yet; then the module, or None (not installed, or PILOT_NO_PSUTIL set)


def psutil_module():
    """psutil, imported the first time a payload's processes are looked at (a pilot that runs no job never loads
    its ~1 MB), or None."""
    global _psutil
    if _psutil is False:
        _psutil = None
        if not os.environ.get("PILOT_NO_PSUTIL"):
            try:
                import psutil

                _psutil = psutil
            except ImportError:
                pass
    return _psutil

Usage = collections.namedtuple("Usage", "nprocs rss_kb pss_kb vmem_kb cpu_s")
ProcInfo = collections.namedtuple("ProcInfo", "pid ppid pgid sid zombie")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_KB = (os.sysconf("SC_PAGE_SIZE") // 1024) if hasattr(os, "sysconf") else 4


def _read_proc(path):
    """The whole of a /proc file, read from a bare descriptor: open(path, 'rb') also pays an fstat, an isatty
    ioctl and an lseek for its buffer, on files read several times per job (OSError as open's)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _stat_fields(pid):
    """Fields 3.. of /proc/<pid>/stat (index 0 = state), parsed after the command name."""
    data = _read_proc(f"/proc/{pid}/stat")
    return data[data.rindex(b")") + 2:].split()


def _table_proc():
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            f = _stat_fields(entry)
            table[int(entry)] = ProcInfo(int(entry), int(f[1]), int(f[2]), int(f[3]), f[0] == b"Z")
        except (OSError, ValueError, IndexError):
            continue
    return table


def _table_psutil():
    psutil = psutil_module()
    table = {}
    for proc in psutil.process_iter(["pid", "ppid", "status"]):
        try:
            pid = proc.info["pid"]
            table[pid] = ProcInfo(pid, proc.info["ppid"], os.getpgid(pid), os.getsid(pid),
                                  proc.info["status"] == psutil.STATUS_ZOMBIE)
        except (OSError, psutil.Error):
            continue
    return table


def _children(pid):
    """Pids of ``pid``'s children from /proc (every thread's ``children`` file), or None where it is missing."""
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            found += _read_proc(f"/proc/{pid}/task/{tid}/children").split()
    except OSError:
        return None
    return found


def process_table():
    """{pid: ProcInfo} for every process visible to this user."""
    return _table_psutil() if psutil_module() else _table_proc()


def _usage_proc(pid):
    f = _stat_fields(pid)
    cpu = sum(int(x) for x in f[11:15]) / CLOCK_TICKS
    rss_kb, vmem_kb = int(f[21]) * PAGE_KB, int(f[20]) // 1024
    pss_kb = rss_kb
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    pss_kb = int(line.split()[1])
                    break
    except (OSError, ValueError, IndexError):
        pass
    return rss_kb, pss_kb, vmem_kb, cpu


def _usage_psutil(pid):
    psutil = psutil_module()
    proc = psutil.Process(pid)
    with proc.oneshot():
        times = proc.cpu_times()
        try:
            mem = proc.memory_full_info()
            pss = getattr(mem, "pss", mem.rss)
        except (psutil.AccessDenied, OSError):
            mem = proc.memory_info()
            pss = mem.rss
    cpu = times.user + times.system + getattr(times, "children_user", 0) + getattr(times, "children_system", 0)
    return mem.rss // 1024, pss // 1024, mem.vms // 1024, cpu


class ProcessTree:
    """The processes of one payload.

    Args:
        root_pid: the payload's pid; it leads its own session and process group.
        adopter_pid: the pilot's pid when the pilot is a child subreaper: its other children are orphans of the
            payload. None in any process that has unrelated children (a test runner).
        ignore: pids of the pilot's own children that are not the payload's (its guard, pilot.guard).
    """

    def __init__(self, root_pid, adopter_pid=None, ignore=()):
        self.root = root_pid
        self.adopter = adopter_pid
        self.ignore = frozenset(ignore)
        self.seen = set()
        self.gone = False  # known to have no live process left (see _surely_gone): it cannot come back

    def members(self, table=None):
        """Pids of the job's processes (zombies included), the payload first."""
        table = process_table() if table is None else table
        children = collections.defaultdict(list)
        for info in table.values():
            children[info.ppid].append(info.pid)
        found = [self.root] if self.root in table else []
        found += [p for p, i in table.items() if p != self.root and (i.pgid == self.root or i.sid == self.root)]
        if self.adopter:
            found += [p for p in children[self.adopter] if p != self.root and p not in self.ignore]
        queue, members = list(found), set(found)
        while queue:
            for child in children[queue.pop()]:
                if child not in members and child != self.adopter:
                    members.add(child)
                    queue.append(child)
        members.discard(self.adopter)
        self.seen |= members
        return [self.root] + sorted(members - {self.root}) if self.root in members else sorted(members)

    def usage(self):
        """Usage summed over the live processes of the tree (CPU includes reaped children's time)."""
        rss = pss = vmem = 0
        cpu = 0.0
        table = process_table()
        pids = [p for p in self.members(table) if not table[p].zombie]
        psutil = psutil_module()
        for pid in pids:
            try:
                r, p, v, c = _usage_psutil(pid) if psutil else _usage_proc(pid)
            except (OSError, ValueError, IndexError) if psutil is None else (OSError, psutil.Error):
                continue
            rss, pss, vmem, cpu = rss + r, pss + p, vmem + v, cpu + c
        return Usage(len(pids), rss, pss, vmem, cpu)

    def alive(self):
        """Pids of the tree that are still running (not zombies)."""
        if self.gone or self._surely_gone():
            self.gone = True
            return []
        table = process_table()
        return [p for p in self.members(table) if not table[p].zombie]

    def _surely_gone(self):
        """True when, without walking every process on the node, nothing of the tree can be left: the payload's
        process group is empty (the payload itself was reaped) and the pilot, a child subreaper, has no child.

        Only processes below the payload can join its session or group, and one that loses its parent is
        re-parented to the nearest subreaper above it, so some live one would be the pilot's child (the pilot's
        guard, its one child of its own, does not count). Once true it stays true: no process is left to start
        another, so :meth:`alive` asks again no more (one look per payload, not one per call). Without a
        subreaper (orphans go to init, out of sight) or when the kernel does not list children, the full walk
        decides."""
        if not self.adopter:
            return False
        try:
            os.killpg(self.root, 0)
            return False  # the group still has a process (or the payload is an unreaped zombie)
        except ProcessLookupError:
            pass
        except OSError:
            return False
        children = _children(self.adopter)
        return children is not None and not {int(pid) for pid in children} - self.ignore

    def signal(self, signum):
        """Send ``signum`` to the payload's process group and to every member found."""
        try:
            os.killpg(self.root, signum)
        except OSError:
            pass
        for pid in self.members():
            try:
                os.kill(pid, signum)
            except OSError:
                pass

    def kill(self, grace, reap=None):
        """SIGTERM to all, SIGKILL after ``grace`` s to whatever is left; return when none is running.

        Args:
            grace: seconds between SIGTERM and SIGKILL.
            reap: called between looks, so the caller can collect its own exited children.
        """
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            if reap:
                reap()
            time.sleep(0.05)
        for _ in range(100):
            if reap:
                reap()
            if not self.alive():
                return True
            self.signal(signal.SIGKILL)
            time.sleep(0.05)
        return not self.alive()
