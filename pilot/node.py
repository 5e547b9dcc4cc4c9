"""Facts about the worker node that the pilot offers to getJob and puts in its reports."""
import os
import socket


def hostname():
    """This node's name as the server should see it."""
    return socket.gethostname()


def cores():
    """The cores this process may use (CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def memory_mb():
    """Total memory of the node in MB (from /proc/meminfo; 0 when unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError, AttributeError):
        return 0


BATCH_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "CONDOR_JOB_ID", "JOB_ID")


def batch_id(environ=None):
    """The batch system's id of the job running this pilot, from the usual variables; '' when not in batch."""
    environ = os.environ if environ is None else environ
    for name in BATCH_ID_VARIABLES:
        if environ.get(name):
            return environ[name]
    return ""


def pilot_id(start_time, environ=None):
    """An id unique to this pilot: $GTAG when the wrapper sets it, else host:pid:start."""
    environ = os.environ if environ is None else environ
    if environ.get("GTAG"):
        return environ["GTAG"][:250]
    return f"{hostname()}:{os.getpid()}:{int(start_time)}"[:250]


def peak_rss_kb():
    """The pilot process's own peak resident memory in kB.

    /proc/self/status VmHWM counts this program only; getrusage's ru_maxrss would also count the memory of the
    process that forked the pilot (Linux carries it over exec), so it is only the fallback.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def become_subreaper():
    """Make orphaned payload processes re-parent to the pilot (Linux prctl), so none escapes the kill.

    Returns True when the kernel accepted it. Only the pilot's own process (never a test runner) calls this.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError, ImportError):
        return False
