"""Several hosts on this machine, made of Linux network, mount and UTS namespaces (no tests here).

The edge deployment, for real::

    edge  (server + harvester)  --- one veth link ---  login (sshd + slurmctld)  --- a bridge ---  node1, node2
    10.231.0.1                                         10.231.0.2 | 10.232.0.1                     10.232.0.2, .3

- **edge** cannot see the site's files: its processes run in a mount namespace with a read-only empty tmpfs over
  the site directory (a local file operation there fails instead of quietly working).
- **login** and the **nodes** share the site directory (the same host directory, seen at the same path) and cannot
  see edge's directory (hidden the same way).
- the nodes have a link to login's bridge only: no route to edge (login does not forward), nor anywhere else.
- each host has its own host name (UTS namespace): slurmctld insists that it runs on ``SlurmctldHost``.

Addresses are private and exist only inside the namespaces made here; the host's own network is never routed to.
Namespace and link names carry a random tag, so several instances (other tests, other engineers) run side by side;
a :class:`Site` deletes only the namespaces it made (by name) and stops only the daemons it started (by pid), also
when a test fails (use it as a context manager or call :meth:`Site.close`).

Processes enter a host with ``nsenter --net=/run/netns/NAME`` (never ``ip netns exec``, which mounts a fresh /sys
where slurmd finds no cgroup file system) and ``unshare -m -u`` (their own view and host name). The test process
itself talks to a host's network through :meth:`Host.call`: a thread of its own that joined the namespace.

:class:`TwoNodeSlurm` is a real Slurm on these hosts: munged (its socket is a file, reachable from every namespace),
slurmctld on login, one slurmd on each node. :class:`LoginSshd` is login's sshd, port 22 on the edge link.
"""
import concurrent.futures
import ctypes
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import IN_CI
from slurmhelp import (SLURM_PROGRAMS, SSH_PROGRAMS, Daemon, children, descendants, keygen, program, require,
                       wait_until)

EDGE_ADDRESS, LOGIN_EDGE_ADDRESS = "10.231.0.1", "10.231.0.2"  # the edge <-> login link (/24)
LOGIN_SITE_ADDRESS = "10.232.0.1"  # login's bridge, where the nodes are (/24)
NODE_ADDRESSES = {"node1": "10.232.0.2", "node2": "10.232.0.3"}
CLONE_NEWNET = 0x40000000
NET_PROGRAMS = ("ip", "nsenter", "unshare", "mount")


def require_namespaces():
    """Skip (fail under CI) unless we are root with ip, nsenter and unshare and may make network namespaces."""
    missing = [name for name in NET_PROGRAMS if program(name) is None]
    why = None
    if missing:
        why = f"multi-host tests need {', '.join(missing)} (apt-get install iproute2 util-linux mount)"
    elif os.geteuid() != 0:
        why = "multi-host tests make network namespaces, which needs root"
    if why:
        if IN_CI:
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)


def _ip(*args, check=True):
    proc = subprocess.run([program("ip"), *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


class Host:
    """One host: a network namespace, a host name, and the directories it must not see.

    Args:
        name: its host name (``edge``, ``login``, ``node1``...).
        netns: the network namespace (``/run/netns/<netns>``).
        hidden: directories covered by an empty read-only tmpfs in this host's view.
        address: its address on the link the other hosts reach it by.
    """

    def __init__(self, name, netns, hidden, address):
        self.name, self.netns, self.hidden, self.address = name, netns, tuple(hidden), address
        self._pool = None

    def argv(self, argv):
        """The command line that runs ``argv`` on this host (its network, its file-system view, its name)."""
        mounts = "".join(f"mount -t tmpfs -o ro,size=16k,mode=0555 minipanda-hidden {shlex.quote(path)} && "
                         for path in self.hidden)
        script = f'{mounts}hostname {shlex.quote(self.name)} && exec "$@"'
        return [program("nsenter"), f"--net=/run/netns/{self.netns}", "--", program("unshare"), "-m",
                "--propagation", "private", "-u", "--", "sh", "-c", script, self.name, *argv]

    def run(self, argv, timeout=60, check=False, **kwargs):
        """Run a command on this host and wait for it (``subprocess.run`` arguments)."""
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)}: exit {proc.returncode}: {proc.stderr[-2000:]}")
        return proc

    def daemon(self, name, argv, log_path, env=None):
        """A :class:`slurmhelp.Daemon` that runs ``argv`` on this host (pid = the program's own: every wrapper
        execs it)."""
        return Daemon(f"{name}@{self.name}", self.argv(argv), log_path, env)

    def call(self, function, *args, **kwargs):
        """``function(*args, **kwargs)`` in a thread that joined this host's network namespace (sockets it makes
        are this host's); its result or its exception."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, f"net-{self.netns}", _join_netns, (self.netns,))
        return self._pool.submit(function, *args, **kwargs).result()

    def can_connect(self, address, port, timeout=3):
        """None when a TCP connection from this host to ``address:port`` works, else the OS's reason."""
        def attempt():
            try:
                socket.create_connection((address, port), timeout).close()
                return None
            except OSError as exc:
                return exc.strerror or str(exc)
        return self.call(attempt)

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _join_netns(netns):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
    finally:
        os.close(fd)


class Site:
    """edge, login, node1, node2 under ``base`` (see the module docstring).

    Directories: ``base/edge`` (edge's own: server and harvester homes) and ``base/site`` (login's and the nodes':
    the shared file system), each hidden from the other side.
    """

    def __init__(self, base):
        self.base = os.path.abspath(str(base))
        self.tag = "mp" + secrets.token_hex(3)
        self.edge_dir, self.site_dir = os.path.join(self.base, "edge"), os.path.join(self.base, "site")
        for folder in (self.edge_dir, self.site_dir):
            os.makedirs(folder, exist_ok=True)
        ns = {name: f"{self.tag}-{name}" for name in ("edge", "login", "node1", "node2")}
        self.edge = Host("edge", ns["edge"], [self.site_dir], EDGE_ADDRESS)
        self.login = Host("login", ns["login"], [self.edge_dir], LOGIN_EDGE_ADDRESS)
        self.nodes = [Host(name, ns[name], [self.edge_dir], NODE_ADDRESSES[name]) for name in ("node1", "node2")]
        self.edge_link = f"{self.tag}-e"  # edge's end of the edge <-> login cable
        self.made = []  # namespaces this instance created, deleted by name in close()
        self.daemons = []  # stopped by pid in close(), last started first

    @property
    def hosts(self):
        return [self.edge, self.login, *self.nodes]

    # ---- network ------------------------------------------------------------------------------------------------
    def up(self):
        require_namespaces()
        try:
            for host in self.hosts:
                _ip("netns", "add", host.netns)
                self.made.append(host.netns)
                _ip("-n", host.netns, "link", "set", "lo", "up")
            self._cable(self.edge, self.edge_link, EDGE_ADDRESS, self.login, f"{self.tag}-l", LOGIN_EDGE_ADDRESS)
            bridge = f"{self.tag}-br"
            _ip("-n", self.login.netns, "link", "add", bridge, "type", "bridge")
            _ip("-n", self.login.netns, "addr", "add", f"{LOGIN_SITE_ADDRESS}/24", "dev", bridge)
            _ip("-n", self.login.netns, "link", "set", bridge, "up")
            for index, node in enumerate(self.nodes, 1):
                port, end = f"{self.tag}-b{index}", f"{self.tag}-n{index}"
                _ip("link", "add", end, "netns", node.netns, "type", "veth", "peer", "name", port, "netns",
                    self.login.netns)
                _ip("-n", self.login.netns, "link", "set", port, "master", bridge)
                _ip("-n", self.login.netns, "link", "set", port, "up")
                _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", end)
                _ip("-n", node.netns, "link", "set", end, "up")
        except BaseException:
            self.close()
            raise
        return self

    def _cable(self, a, a_end, a_address, b, b_end, b_address):
        _ip("link", "add", a_end, "netns", a.netns, "type", "veth", "peer", "name", b_end, "netns", b.netns)
        for host, end, address in ((a, a_end, a_address), (b, b_end, b_address)):
            _ip("-n", host.netns, "addr", "add", f"{address}/24", "dev", end)
            _ip("-n", host.netns, "link", "set", end, "up")

    def cut_edge_link(self):
        """Unplug the edge <-> login cable (edge's end down): connections hang, new ones fail."""
        _ip("-n", self.edge.netns, "link", "set", self.edge_link, "down")

    def mend_edge_link(self):
        _ip("-n", self.edge.netns, "link", "set", self.edge_link, "up")

    # ---- daemons ------------------------------------------------------------------------------------------------
    def start(self, daemon):
        """Start a daemon and stop it (by pid) in close()."""
        self.daemons.append(daemon)
        return daemon.start()

    def close(self):
        """Stop every daemon started here (by pid, last first), then delete the namespaces made here (by name)."""
        for item in reversed(self.daemons):
            try:
                item.stop()
            except Exception as exc:  # one that will not stop must not keep the others (or the namespaces) alive
                print(f"nethosts: stopping {getattr(item, 'name', item)} failed: {exc}")
        self.daemons = []
        for host in self.hosts:
            host.close()
        for netns in reversed(self.made):
            _ip("netns", "del", netns, check=False)
        self.made = []

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc_info):
        self.close()


class TwoNodeSlurm:
    """munged, slurmctld on ``site.login`` and one slurmd on each node: two real Slurm nodes (partition
    ``debug``), every file under ``<site>/slurm``. Clients find it with ``SLURM_CONF`` (:attr:`env`) on login.

    Register it with :meth:`Site.start`-style cleanup by calling :meth:`start` once; :meth:`stop` (called by
    ``site.close()``) cancels its jobs and stops its daemons by pid, then any job step daemon of this Slurm.
    """

    name = "slurm"

    def __init__(self, site, cpus=4, memory=8000, partitions=(("debug", "INFINITE", True),), settings=None):
        self.site, self.settings = site, dict(settings or {})  # slurm.conf keys that replace (or add to) ours
        self.base = os.path.join(site.site_dir, "slurm")
        self.conf = os.path.join(self.base, "slurm.conf")
        self.socket = os.path.join(self.base, "munge", "munge.socket")
        self.cpus, self.memory, self.partitions = cpus, memory, partitions
        self.munged = self.slurmctld = None
        self.slurmds = {}

    @property
    def env(self):
        return {**os.environ, "SLURM_CONF": self.conf}

    def write_config(self):
        for folder in ("munge", "state", "log"):
            os.makedirs(os.path.join(self.base, folder), mode=0o700, exist_ok=True)
        lines = [
            f"ClusterName={self.site.tag}",
            f"SlurmctldHost=login({LOGIN_SITE_ADDRESS})",
            "SlurmctldPort=6817", "SlurmdPort=6818",  # each daemon has a network of its own: no clash
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={self.base}/state",
            f"SlurmdSpoolDir={self.base}/spool-%n",
            f"SlurmctldPidFile={self.base}/slurmctld.pid", f"SlurmdPidFile={self.base}/slurmd-%n.pid",
            f"SlurmctldLogFile={self.base}/log/slurmctld.log", f"SlurmdLogFile={self.base}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1",
            "MinJobAge=300", "KillWait=5", "InactiveLimit=0", "SlurmctldTimeout=30", "SlurmdTimeout=30",
            "SlurmctldDebug=info", "SlurmdDebug=info",
        ]
        lines = [line for line in lines if line.split("=")[0] not in self.settings]
        lines += [f"{key}={value}" for key, value in self.settings.items()]
        for node in self.site.nodes:
            lines.append(f"NodeName={node.name} NodeAddr={node.address} CPUs={self.cpus} "
                         f"RealMemory={self.memory} State=UNKNOWN")
        for name, max_time, default in self.partitions:
            lines.append(f"PartitionName={name} Nodes=ALL Default={'YES' if default else 'NO'} MaxTime={max_time} "
                         "State=UP")
        with open(self.conf, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    def start(self):
        require("Slurm", SLURM_PROGRAMS)
        self.write_config()
        key = os.path.join(self.base, "munge", "munge.key")
        with open(key, "wb") as handle:
            handle.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.site.daemons.append(self)  # stopped by site.close(), whatever happens below
        log = os.path.join(self.base, "log")
        self.munged = Daemon("munged", [program("munged"), "--foreground", "--force", f"--socket={self.socket}",
                                        f"--key-file={key}", f"--pid-file={self.base}/munge/munged.pid",
                                        f"--log-file={log}/munged.log", f"--seed-file={self.base}/munge/seed"],
                             os.path.join(log, "munged.out")).start()
        wait_until(lambda: os.path.exists(self.socket), "munged's socket", [self.munged])
        self.start_controller()
        for node in self.site.nodes:
            self.slurmds[node.name] = node.daemon("slurmd", [program("slurmd"), "-D", "-f", self.conf, "-N",
                                                             node.name],
                                                  os.path.join(log, f"slurmd-{node.name}.out"), self.env).start()
        wait_until(self.nodes_ready, "both Slurm nodes to be idle", self.running_daemons())
        return self

    def running_daemons(self):
        return [d for d in (self.munged, self.slurmctld, *self.slurmds.values()) if d is not None]

    def start_controller(self):
        self.slurmctld = self.site.login.daemon("slurmctld", [program("slurmctld"), "-D", "-f", self.conf],
                                                os.path.join(self.base, "log", "slurmctld.out"), self.env).start()
        wait_until(lambda: self.run("sinfo", "-h").returncode == 0, "slurmctld to answer",
                   [self.munged, self.slurmctld])

    def stop_controller(self):
        if self.slurmctld is not None:
            self.slurmctld.stop()

    def restart_controller(self):
        self.stop_controller()
        self.start_controller()

    def run(self, *argv, timeout=60):
        """A Slurm client command on login."""
        return self.site.login.run([program(argv[0]), *argv[1:]], timeout=timeout, env=self.env)

    def nodes_ready(self):
        result = self.run("sinfo", "-h", "-N", "-o", "%N %T")
        states = dict(line.split() for line in result.stdout.splitlines() if len(line.split()) == 2)
        return result.returncode == 0 and sorted(states) == sorted(self.slurmds) and all(
            state.rstrip("*") in ("idle", "mixed", "allocated") for state in states.values())

    def stop(self):
        """Cancel this Slurm's jobs and let them end, stop its daemons (by pid), then any job step daemon of ours
        (it holds a file under our directory) and its processes."""
        if self.slurmctld is not None and self.slurmctld.running:
            try:
                self.run("scancel", "--full", "--user=root", timeout=30)
                wait_until(lambda: not self.run("squeue", "-h", "-t", "RUNNING,COMPLETING,SUSPENDED").stdout.strip(),
                           "the cancelled jobs to end", timeout=30)
            except (subprocess.SubprocessError, OSError, RuntimeError):
                pass
        for daemon in (*self.slurmds.values(), self.slurmctld, self.munged):
            if daemon is not None:
                daemon.stop()
        for pid in self.step_daemons():
            for victim in [*descendants(pid), pid]:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def step_daemons(self):
        found = []
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and open(f"/proc/{name}/comm").read().strip() == "slurmstepd" and any(
                        os.readlink(f"/proc/{name}/fd/{fd}").startswith(self.base + "/")
                        for fd in os.listdir(f"/proc/{name}/fd")):
                    found.append(int(name))
            except OSError:
                continue
        return found

    def logs(self):
        parts = []
        for name in sorted(os.listdir(os.path.join(self.base, "log"))):
            with open(os.path.join(self.base, "log", name), errors="replace") as handle:
                parts.append(f"--- {name} ---\n{handle.read()[-3000:]}")
        return "\n".join(parts)


class LoginSshd:
    """sshd on ``site.login``, port 22 of its edge address, root login with one throw-away key. Its sessions get
    ``set_env`` (as a login node's profile would set SLURM_CONF). The keys and known_hosts that harvester uses
    live on edge (:attr:`user_key`, :attr:`known_hosts`); the host key and sshd's files on the site."""

    name = "sshd"

    def __init__(self, site, set_env=None, port=22):
        self.site, self.port, self.set_env = site, port, dict(set_env or {})
        self.base = os.path.join(site.site_dir, "sshd")
        self.keys = os.path.join(site.edge_dir, "ssh")
        self.host_key = os.path.join(self.base, "host_key")
        self.user_key = os.path.join(self.keys, "id_ed25519")
        self.known_hosts = os.path.join(self.keys, "known_hosts")
        self.authorized = os.path.join(self.base, "authorized_keys")
        self.config = os.path.join(self.base, "sshd_config")
        self.daemon = None

    def prepare(self):
        require("sshd", SSH_PROGRAMS)
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        os.makedirs(self.keys, mode=0o700, exist_ok=True)
        keygen(self.host_key, "login")
        keygen(self.user_key, "harvester@edge")
        shutil.copyfile(self.user_key + ".pub", self.authorized)
        with open(self.host_key + ".pub") as handle:
            kind, key = handle.read().split()[:2]
        host = LOGIN_EDGE_ADDRESS if self.port == 22 else f"[{LOGIN_EDGE_ADDRESS}]:{self.port}"
        with open(self.known_hosts, "w") as handle:
            handle.write(f"{host} {kind} {key}\n")
        lines = [f"Port {self.port}", f"ListenAddress {LOGIN_EDGE_ADDRESS}", f"HostKey {self.host_key}",
                 f"AuthorizedKeysFile {self.authorized}", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", f"PidFile {self.base}/sshd.pid",
                 "StrictModes no", "PermitRootLogin yes", "UsePAM no", "MaxStartups 100", "MaxSessions 100",
                 "LogLevel INFO", "Subsystem sftp internal-sftp"]
        if self.set_env:
            lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in self.set_env.items()))
        with open(self.config, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        return self

    def start(self):
        if not os.path.exists(self.config):
            self.prepare()
            self.site.daemons.append(self)
        self.daemon = self.site.login.daemon("sshd", [program("sshd"), "-D", "-f", self.config, "-E",
                                                      os.path.join(self.base, "sshd.log")],
                                             os.path.join(self.base, "sshd.out")).start()
        wait_until(lambda: self.site.login.can_connect(LOGIN_EDGE_ADDRESS, self.port, 1) is None,
                   f"sshd on login:{self.port}", [self.daemon])
        return self

    def stop(self):
        """Stop sshd and the per-connection processes it forked (cut every kept connection, as a reboot)."""
        if self.daemon is None or self.daemon.proc is None:
            return
        sessions = children(self.daemon.proc.pid)
        self.daemon.stop()
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def restart(self):
        self.stop()
        self.start()

    def queue_transport(self, **over):
        """A queue's ``transport`` section for harvester on edge."""
        return {"type": "ssh", "host": LOGIN_EDGE_ADDRESS, "port": self.port, "user": "root",
                "key_file": self.user_key, "known_hosts": self.known_hosts, "connect_timeout": 10,
                "command_timeout": 60, **over}


def wait_for(condition, what, timeout=60, poll=0.2):
    """``condition()``'s first true value, polled (a safety-net limit only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
