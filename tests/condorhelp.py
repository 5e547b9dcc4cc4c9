"""A real one-host HTCondor pool for the tests and the bench (no tests here): Debian 13's minicondor (HTCondor 23.9)
in the root file system that .ci/htcondor-root builds once per machine. condor_master runs under a small
supervisor of ours (the process that made the namespaces), stopped by its pid; the supervisor also stops the pool
when the process that started it dies, killed or not.

How the pool shares this machine, and why:

- a user namespace: inside it, uids 0..999 are unprivileged host uids (ID_BASE + n) and the pool's ordinary user
  ``pilot`` (uid 1000) is host root. HTCondor never runs a job as root, while harvester runs as root in the tests;
  through this map FS authentication sees root's files as pilot's, jobs run as pilot, that is as host root, and can
  write the access points harvester made, as a harvester and a pool sharing one service account do on a site.
- a private mount namespace: /proc, /dev and the host's /tmp are bound into the root file system (pytest's
  directories and FS authentication's rendezvous directory are under /tmp), paths in ``hidden`` are covered by an
  empty tmpfs so the execute side cannot see them. Nothing is mounted outside the namespace, and every mount goes
  away with its last process: nothing machine-global is left to undo.
- the host's network: every daemon binds 127.0.0.1; the collector (and shared port) listens on a free port.
- a configuration of its own (CONDOR_CONFIG) that includes the root file system's and moves every directory, key
  and token under ``base``: two pools on this machine share nothing but the read-only root file system.

Without root, or without the root file system, the tests that need a pool skip with the reason; under CI=true
that is a failure (.ci/run builds the root file system and runs as root).
"""
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from conftest import IN_CI, free_port
from slurmhelp import descendants

ROOT = os.environ.get("MINIPANDA_CONDOR_ROOT", "/var/cache/minipanda-ci/htcondor-trixie")
READY = ".minipanda-ready"
BUILD = ".ci/htcondor-root"
USER, UID = "pilot", 1000  # the pool's ordinary user, made by .ci/htcondor-root
ID_BASE = 1_500_000_000  # inside uid/gid n (other than 1000) is host uid/gid ID_BASE + n
CONDOR_UID, CONDOR_GID = 100, 101  # Debian's condor user and group in the root file system
ENTER = r'''
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18

def mount(source, target, fstype=None, flags=0, data=None):
    enc = lambda text: text.encode() if text else None
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        sys.exit(f"mount {source} on {target}: {os.strerror(ctypes.get_errno())}")

if libc.unshare(0x10000000 | 0x20000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
    sys.exit(f"unshare: {os.strerror(ctypes.get_errno())}")
os.write(1, b"u")  # the parent writes our uid and gid maps now
os.dup2(2, 1)
if os.read(0, 1) != b"g":
    sys.exit("the uid map was not written")
os.setgroups([])
os.setresgid(0, 0, 0)
os.setresuid(0, 0, 0)  # root of the new namespace, with its capabilities
# the mounts are made here, not by mount(8): it is setuid root, and host root is `pilot` in here, without them
root, config, hidden = sys.argv[1], sys.argv[2], sys.argv[3:]
mount(None, "/", flags=MS_REC | MS_PRIVATE)
for path in ("/proc", "/dev", "/tmp"):
    mount(path, root + path, flags=MS_BIND | MS_REC)
for path in hidden:
    mount("tmpfs", root + path, "tmpfs", 0, "mode=755")
os.chroot(root)
os.chdir("/")
os.environ["CONDOR_CONFIG"] = config
# This process stays as condor_master's parent: the test process that started it can die without stopping it, and
# the kernel's parent-death signal cannot be given to condor_master itself (it is cleared when a process changes
# its uids, which condor_master does all the time). So: SIGTERM here when our parent dies, forwarded to the master.
libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() == 1:
    sys.exit("the process that started the pool is gone")
master = os.fork()
if master == 0:
    os.execv("/usr/sbin/condor_master", ["condor_master", "-f"])
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
    signal.signal(sig, lambda number, frame: os.kill(master, number))
sys.exit(os.waitstatus_to_exitcode(os.waitpid(master, 0)[1]))
'''
CONFIG = """\
# one-host pool of a minipanda test ({base})
include : /etc/condor/condor_config
LOCAL_DIR = {base}/local
CONDOR_HOST = 127.0.0.1
COLLECTOR_PORT = {port}
COLLECTOR_HOST = $(CONDOR_HOST):$(COLLECTOR_PORT)
NETWORK_INTERFACE = 127.0.0.1
ENABLE_IPV6 = False
SEC_PASSWORD_DIRECTORY = $(LOCAL_DIR)/passwords.d
SEC_TOKEN_POOL_SIGNING_KEY_FILE = $(SEC_PASSWORD_DIRECTORY)/POOL
SEC_TOKEN_SYSTEM_DIRECTORY = $(LOCAL_DIR)/tokens.d
# per-job mount and pid namespaces and cgroups cannot be made inside this root file system
MOUNT_UNDER_SCRATCH =
USE_PID_NAMESPACES = False
USE_CGROUPS = False
# the slot offers what the tests ask for, not what this machine has (their payloads mostly sleep)
NUM_CPUS = {cpus}
MEMORY = {memory}
# the schedd evaluates periodic expressions (the walltime's periodic_remove) every 5 s, not every minute, and
# condor_master starts a daemon that died again after 2 s, not 9
PERIODIC_EXPR_INTERVAL = 5
MASTER_BACKOFF_CONSTANT = 2
{extra}
"""


def unavailable():
    """Why no pool can start here, or None."""
    if sys.platform != "linux":
        return "an HTCondor pool for the tests needs Linux (user and mount namespaces)"
    if os.geteuid() != 0:
        return "the HTCondor tests start a pool in a chroot with its own user namespace, which needs root"
    ready = os.path.join(ROOT, READY)
    if not os.path.exists(ready) and not (wait_for_build() and os.path.exists(ready)):
        log = os.environ.get("MINIPANDA_CONDOR_BUILD_LOG")
        tail = ""
        if log and os.path.exists(log):
            with open(log, encoding="utf-8", errors="replace") as handle:
                tail = f"; the build's log ({log}) ends:\n{handle.read()[-3000:]}"
        return (f"no HTCondor root file system at {ROOT} (missing or incomplete): build it once with "
                f"`sudo {BUILD}` (debootstrap, about 4 minutes), as .ci/run does{tail}")
    if shutil.which("nsenter") is None:
        return "the HTCondor tests need nsenter (util-linux)"
    return None


def wait_for_build(limit=1800):
    """Wait while a build of the root file system holds its lock (.ci/run starts one in the background); True once
    no build runs."""
    try:
        handle = open(ROOT + ".lock")
    except OSError:
        return True  # never built here: nothing to wait for
    with handle:
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(2)


def require():
    """Skip the test (fail it under CI=true) when no pool can start here."""
    import pytest

    why = unavailable()
    if why:
        if IN_CI:
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)


def host_id(inside):
    """The host uid (or gid) of an id of the pool's user namespace."""
    return 0 if inside == UID else ID_BASE + inside


class Pool:
    """A one-host HTCondor pool (collector, negotiator, schedd, startd under one condor_master) with every file
    under ``base``.

    Args:
        base: its directory, whose parents the pool's condor user can enter; default a new one in /tmp, removed
            again by :meth:`stop`.
        cpus, memory: what the one partitionable slot offers.
        execute: False for a pool without a startd, where every job stays idle (the bench's status cycle).
        hidden: host directories the pool must not see (covered by an empty tmpfs in its mount namespace), besides
            ``unseen`` under ``base``.
        extra: more configuration lines.
    """

    def __init__(self, base=None, cpus=8, memory=16000, execute=True, hidden=(), extra=()):
        # the daemons run as the pool's condor user, who must reach every directory above (pytest's own are 0700)
        self.made_base = base is None
        self.base = tempfile.mkdtemp(prefix="minipanda-condor-", dir="/tmp") if base is None else \
            os.path.abspath(str(base))
        self.cpus, self.memory, self.execute, self.hidden = cpus, memory, execute, tuple(hidden)
        self.extra = list(extra)
        self.port = None
        self.proc = None
        self.config = os.path.join(self.base, "condor_config")
        self.local = os.path.join(self.base, "local")
        self.client_config = os.path.join(self.base, "client_config")
        self.unseen = os.path.join(self.base, "unseen")  # a directory on this host the pool cannot see
        self.hidden += (self.unseen,)

    # ---- where a client finds it ------------------------------------------------------------------------------
    @property
    def collector(self):
        return f"127.0.0.1:{self.port}"

    @property
    def schedd_address_file(self):
        return os.path.join(self.local, "spool", "condor", ".schedd_address")

    def client_env(self):
        """The environment of a process on this host that uses the pool as its local one (the htcondor2 bindings
        read CONDOR_CONFIG when they are imported)."""
        return {**os.environ, "CONDOR_CONFIG": self.client_config}

    def write_client_config(self):
        """The configuration of a harvester host whose local pool this is: the schedd found through its address
        file, FS authentication. The schedd (23.9) predates FS channel binding, which 24.0.22+/25.x clients
        enforce by default: a site with such a schedd switches it off for its clients, as here."""
        with open(self.client_config, "w") as handle:
            handle.write(f"COLLECTOR_HOST = {self.collector}\nSCHEDD_ADDRESS_FILE = {self.schedd_address_file}\n"
                         "SEC_CLIENT_AUTHENTICATION_METHODS = FS\nSEC_FS_ENFORCE_CHANNEL_BINDING = false\n")

    # ---- start and stop ----------------------------------------------------------------------------------------
    def write_config(self):
        self.port = free_port()
        lines = list(self.extra)
        if not self.execute:
            lines.append("DAEMON_LIST = MASTER, COLLECTOR, NEGOTIATOR, SCHEDD")
        with open(self.config, "w") as handle:
            handle.write(CONFIG.format(base=self.base, port=self.port, cpus=self.cpus, memory=self.memory,
                                       extra="\n".join(lines)))
        condor = (host_id(CONDOR_UID), host_id(CONDOR_GID))
        for folder in ("run", "log", "lock", "spool", "lib", "lib/execute"):
            path = os.path.join(self.local, folder, "condor") if folder != "lib/execute" else \
                os.path.join(self.local, "lib", "condor", "execute")
            os.makedirs(path, exist_ok=True)
            os.chown(path, *condor)
        for folder in ("passwords.d", "tokens.d"):
            path = os.path.join(self.local, folder)
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chown(path, host_id(0), host_id(0))
        os.chmod(self.base, 0o755)
        os.chmod(self.local, 0o755)
        self.write_client_config()

    def start(self, timeout=180):
        """Start condor_master and wait until the schedd answers (and, with ``execute``, a slot is there)."""
        os.makedirs(self.unseen, exist_ok=True)
        self.write_config()
        for path in self.hidden:
            if not os.path.realpath(path).startswith("/tmp/"):
                raise ValueError(f"a hidden path must be under /tmp (the pool's view of the host): {path}")
        log = open(os.path.join(self.base, "master.out"), "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", ENTER, ROOT, self.config, *map(os.path.realpath, self.hidden)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        finally:
            log.close()
        if self.proc.stdout.read(1) != b"u":
            self.proc.wait()
            raise RuntimeError(f"the pool's namespaces could not be made:\n{self.log('master.out')}")
        maps = f"0 {ID_BASE} {UID}\n{UID} 0 1\n{UID + 1} {ID_BASE + UID + 1} {65536 - UID - 1}\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{self.proc.pid}/{name}", "w") as handle:
                handle.write(maps)
        self.proc.stdin.write(b"g")
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.wait_until(self.ready, "the schedd (and a slot) to answer", timeout)
        return self

    def ready(self):
        if not os.path.exists(self.schedd_address_file):
            return False
        kinds = ["-schedd", "-startd"] if self.execute else ["-schedd"]
        return all(self.run("condor_status", kind, "-af", "Name", check=False).stdout.strip() for kind in kinds)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stop condor_master (SIGTERM: it stops its daemons and their jobs), then anything of ours still left,
        each by its pid."""
        if self.proc is None:
            return
        below = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in below:
            try:
                if os.readlink(f"/proc/{pid}/root") == ROOT:  # still ours (not a reused pid)
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc = None
        if self.made_base:
            shutil.rmtree(self.base, ignore_errors=True)

    # ---- inside the pool ---------------------------------------------------------------------------------------
    def run(self, *argv, user="root", check=True, timeout=60, input=None):
        """Run an HTCondor tool inside the pool (its namespaces and root), as root or as the pool's user."""
        ids = "0" if user == "root" else str(UID)
        proc = subprocess.run(["nsenter", "--target", str(self.proc.pid), "--user", "--mount", "--root",
                               "--setuid", ids, "--setgid", ids, "/usr/bin/env", f"CONDOR_CONFIG={self.config}",
                               *argv], capture_output=True, text=True, timeout=timeout, input=input, cwd="/")
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in the pool failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc

    def value(self, name):
        return self.run("condor_config_val", name).stdout.strip()

    def token(self, identity=None):
        """An IDTOKEN signed by the pool's key, for ``identity`` (default the pool's user)."""
        identity = identity or f"{USER}@{self.value('UID_DOMAIN')}"
        return self.run("condor_token_create", "-identity", identity).stdout.strip()

    def schedd_name(self):
        return self.run("condor_status", "-schedd", "-af", "Name").stdout.split()[0]

    def daemon_pid(self, name):
        """The host pid of one of the pool's processes (condor_master, condor_schedd, ...), or None."""
        for pid in descendants(self.proc.pid) if self.running else ():
            try:
                with open(f"/proc/{pid}/comm") as handle:
                    if handle.read().strip() == name:
                        return pid
            except OSError:
                continue
        return None

    def jobs(self, constraint="true", attributes=("ClusterId", "ProcId", "JobStatus", "MinipandaWorker")):
        """Every job of the queue and of the history that matches: {"cluster.proc": {attribute: value}}."""
        found = {}
        for tool in ("condor_history", "condor_q"):
            extra = ["-allusers"] if tool == "condor_q" else []
            out = self.run(tool, *extra, "-constraint", constraint, "-af:t", *attributes).stdout
            for line in out.splitlines():
                fields = line.split("\t")
                if len(fields) == len(attributes):
                    row = dict(zip(attributes, fields))
                    found[f"{row['ClusterId']}.{row['ProcId']}"] = row
        return found

    # ---- helpers -------------------------------------------------------------------------------------------
    def log(self, name="SchedLog", tail=4000):
        path = name if os.path.isabs(name) else os.path.join(self.base, name) if name == "master.out" else \
            os.path.join(self.local, "log", "condor", name)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-tail:] if tail else handle.read()
        except FileNotFoundError:
            return ""

    def wait_until(self, condition, what, timeout=180, poll=0.5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"condor_master exited ({self.proc.returncode}) while waiting for {what}:\n"
                                   f"{self.log('master.out')}\n{self.log('MasterLog')}")
            value = condition()
            if value:
                return value
            time.sleep(poll)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log('MasterLog')}\n{self.log('SchedLog')}")


if __name__ == "__main__":  # a pool to look at by hand: python3 tests/condorhelp.py [DIR]
    pool = Pool(sys.argv[1] if len(sys.argv) > 1 else None).start()
    print(f"pool up: collector {pool.collector}, master pid {pool.proc.pid}; CONDOR_CONFIG={pool.client_config}; "
          "Ctrl-C stops it")
    try:
        signal.pause()
    finally:
        pool.stop()
