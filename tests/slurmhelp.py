"""A real one-node Slurm (munged + slurmctld + slurmd) and a real sshd, on loopback, with throw-away configs and keys
under a temporary directory (no tests here). Each daemon runs in the foreground as our child, so it is stopped by
its own pid and nothing else; system-wide files (/etc/munge, /etc/slurm, /etc/ssh, port 22) are never touched.

Without root or without the Debian packages (slurm-wlm, munge, openssh-server) the tests that need these daemons
are skipped, except under CI=true, where that is a failure (.ci/run installs the packages and runs as root).
"""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import IN_CI, free_port

SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
SSH_PROGRAMS = ("sshd", "ssh-keygen")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def program(name):
    """The path of a system program, also when /usr/sbin is not on PATH."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def require(kind, names):
    """Skip (fail under CI) unless we are root and every program is installed."""
    missing = [name for name in names if program(name) is None]
    why = None
    if missing:
        why = f"{kind} tests need {', '.join(missing)} (apt-get install slurm-wlm munge openssh-server)"
    elif os.geteuid() != 0:
        why = f"{kind} tests start slurmd/sshd, which need root"
    if why:
        if IN_CI:
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)


class Daemon:
    """One foreground daemon process, its log, and a stop by pid."""

    def __init__(self, name, argv, log_path, env=None):
        self.name, self.argv, self.log_path, self.env = name, list(argv), log_path, env
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        finally:
            log.close()
        return self

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        """Stop the process we started (by its pid); SIGKILL if it does not go within 30 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self, tail=3000):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-tail:]
        except FileNotFoundError:
            return ""

    def check(self, what):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while waiting for {what}:\n"
                               f"{self.log()}")


def wait_until(condition, what, daemons=(), timeout=90, poll=0.2):
    """Poll ``condition`` until true; a daemon that died stops the wait with its log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for daemon in daemons:
            daemon.check(what)
        value = condition()
        if value:
            return value
        time.sleep(poll)
    logs = "\n".join(f"--- {d.name} ---\n{d.log()}" for d in daemons)
    raise RuntimeError(f"timed out waiting for {what}\n{logs}")


def port_open(port):
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def children(pid):
    """Pids of the direct children of ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rpartition(")")[2].split()
            except OSError:
                continue
            if len(fields) > 1 and int(fields[1]) == pid:
                found.append(int(name))
    return found


def descendants(pid):
    """Pids of every process below ``pid``, deepest first."""
    found = []
    for child in children(pid):
        found += descendants(child) + [child]
    return found




class Slurm:
    """munged + slurmctld + slurmd for one node (this host) with every file under ``base``.

    Clients find it through ``SLURM_CONF`` (see :attr:`env`); munged listens on its own socket, named in
    slurm.conf's AuthInfo, so a system munged (if any) is neither used nor disturbed.
    """

    def __init__(self, base, partitions=(("debug", "INFINITE", True),), cpus=8, memory=16000, quick=True):
        self.base = str(base)
        os.makedirs(self.base, exist_ok=True)
        self.conf = os.path.join(self.base, "slurm.conf")
        # a unix socket's path holds at most 107 bytes, and pytest's directories (per test, per xdist process) can
        # be longer: munged's socket and slurmd's spool (where each job step's slurmstepd makes its socket) live in
        # a short directory named after this Slurm's own (the same after a restart)
        self.run_dir = "/tmp/mp-slurm-" + hashlib.sha1(self.base.encode()).hexdigest()[:12]
        self.socket = os.path.join(self.run_dir, "munge.socket")
        self.hostname = socket.gethostname().split(".")[0]  # slurmd's own idea of its name is the short one
        # the node offers what slurm.conf says (config_overrides), not what this machine has: tests and the bench
        # get the same slots on a 2-core CI runner as on a workstation (their payloads mostly sleep)
        self.cpus, self.memory = cpus, memory
        self.partitions = partitions
        self.quick = quick  # schedule every second (tests); False: Slurm's default scheduler settings (bench)
        self.munged = self.slurmctld = self.slurmd = None

    @property
    def env(self):
        return {**os.environ, "SLURM_CONF": self.conf}

    def write_config(self):
        for folder in ("munge", "state", "spool", "log"):
            os.makedirs(os.path.join(self.base, folder), mode=0o700, exist_ok=True)
        ctld_port, slurmd_port = free_port(), free_port()
        lines = [
            "ClusterName=minipanda-test",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={self.base}/state",
            f"SlurmdSpoolDir={self.run_dir}/spool",
            f"SlurmctldPidFile={self.base}/slurmctld.pid",
            f"SlurmdPidFile={self.base}/slurmd.pid",
            f"SlurmctldLogFile={self.base}/log/slurmctld.log",
            f"SlurmdLogFile={self.base}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "SchedulerType=sched/backfill",
            *(["SchedulerParameters=sched_interval=1"] if self.quick else []),  # tests: jobs start at once
            "MinJobAge=300",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={self.hostname} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory} State=UNKNOWN",
        ]
        for name, max_time, default in self.partitions:
            lines.append(f"PartitionName={name} Nodes=ALL Default={'YES' if default else 'NO'} "
                         f"MaxTime={max_time} State=UP")
        with open(self.conf, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    def start(self):
        require("Slurm", SLURM_PROGRAMS)
        self.write_config()
        os.makedirs(os.path.join(self.run_dir, "spool"), mode=0o700, exist_ok=True)
        key = os.path.join(self.base, "munge", "munge.key")
        if not os.path.exists(key):
            with open(key, "wb") as handle:
                handle.write(os.urandom(1024))
            os.chmod(key, 0o400)
        self.munged = Daemon("munged", [program("munged"), "--foreground", "--force", f"--socket={self.socket}",
                                        f"--key-file={key}", f"--pid-file={self.base}/munge/munged.pid",
                                        f"--log-file={self.base}/log/munged.log",
                                        f"--seed-file={self.base}/munge/munged.seed"],
                             os.path.join(self.base, "log", "munged.out")).start()
        wait_until(lambda: os.path.exists(self.socket), "munged's socket", [self.munged])
        self.start_controller()
        self.slurmd = Daemon("slurmd", [program("slurmd"), "-D", "-f", self.conf, "-N", self.hostname],
                             os.path.join(self.base, "log", "slurmd.out"), self.env).start()
        wait_until(self.node_ready, "the Slurm node to be idle", [self.munged, self.slurmctld, self.slurmd])
        return self

    def start_controller(self):
        self.slurmctld = Daemon("slurmctld", [program("slurmctld"), "-D", "-f", self.conf],
                                os.path.join(self.base, "log", "slurmctld.out"), self.env).start()
        wait_until(lambda: self.run("sinfo", "-h").returncode == 0, "slurmctld to answer",
                   [self.munged, self.slurmctld])

    def stop_controller(self):
        if self.slurmctld is not None:
            self.slurmctld.stop()

    def node_ready(self):
        result = self.run("sinfo", "-h", "-N", "-o", "%T")
        states = result.stdout.split()
        return result.returncode == 0 and states and all(s.rstrip("*") in ("idle", "mixed", "allocated")
                                                         for s in states)

    def run(self, *argv, timeout=60):
        return subprocess.run([program(argv[0]), *argv[1:]], capture_output=True, text=True, env=self.env,
                              timeout=timeout)

    def stop(self):
        """Cancel every job of this Slurm and let the steps end, then stop slurmd, slurmctld and munged; last, any
        job step daemon of ours still there (slurmstepd detaches from slurmd; it is ours when it holds a file under
        our directory) and its processes. Only processes this Slurm started are touched."""
        if self.slurmctld is not None and self.slurmctld.running:
            try:
                self.run("scancel", "--full", "--user=root", timeout=30)
                wait_until(lambda: not self.run("squeue", "-h", "-t", "RUNNING,COMPLETING,SUSPENDED").stdout.strip(),
                           "the cancelled jobs to end", timeout=30)
            except (subprocess.SubprocessError, OSError, RuntimeError):
                pass
        for daemon in (self.slurmd, self.slurmctld, self.munged):
            if daemon is not None:
                daemon.stop()
        for pid in self.step_daemons():
            for victim in [*descendants(pid), pid]:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def step_daemons(self):
        found = []
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and open(f"/proc/{name}/comm").read().strip() == "slurmstepd" and any(
                        os.readlink(f"/proc/{name}/fd/{fd}").startswith((self.base + "/", self.run_dir + "/"))
                        for fd in os.listdir(f"/proc/{name}/fd")):
                    found.append(int(name))
            except OSError:
                continue
        return found

    def logs(self):
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = os.path.join(self.base, "log", name)
            if os.path.exists(path):
                with open(path, errors="replace") as handle:
                    parts.append(f"--- {name} ---\n{handle.read()[-3000:]}")
        return "\n".join(parts)


def keygen(path, comment="minipanda-test"):
    """A fresh ed25519 key pair without passphrase at ``path`` (+ .pub)."""
    subprocess.run([program("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return str(path)


class Sshd:
    """sshd on 127.0.0.1:<free port> with its own host key, one authorized user key (root login) and a known_hosts
    file for it. ``set_env`` lands in every session (sshd's SetEnv), as a login node's profile would."""

    def __init__(self, base, set_env=None):
        self.base = str(base)
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        self.port = free_port()
        self.set_env = dict(set_env or {})
        self.host_key = os.path.join(self.base, "host_key")
        self.user_key = os.path.join(self.base, "user_key")
        self.authorized = os.path.join(self.base, "authorized_keys")
        self.known_hosts = os.path.join(self.base, "known_hosts")
        self.config = os.path.join(self.base, "sshd_config")
        self.log_path = os.path.join(self.base, "sshd.log")
        self.daemon = None

    def prepare(self):
        require("sshd", SSH_PROGRAMS)
        keygen(self.host_key, "host")
        keygen(self.user_key, "harvester")
        shutil.copyfile(self.user_key + ".pub", self.authorized)
        with open(self.host_key + ".pub") as handle:
            kind, key = handle.read().split()[:2]
        with open(self.known_hosts, "w") as handle:
            handle.write(f"[127.0.0.1]:{self.port} {kind} {key}\n")
        lines = [f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
                 f"AuthorizedKeysFile {self.authorized}", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", f"PidFile {self.base}/sshd.pid",
                 "StrictModes no", "PermitRootLogin yes", "UsePAM no", "MaxStartups 100", "MaxSessions 100",
                 "LogLevel INFO", "Subsystem sftp internal-sftp"]
        if self.set_env:
            lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in self.set_env.items()))
        with open(self.config, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's compiled-in privilege separation directory
        return self

    def start(self):
        if not os.path.exists(self.config):
            self.prepare()
        self.daemon = Daemon("sshd", [program("sshd"), "-D", "-f", self.config, "-E", self.log_path],
                             os.path.join(self.base, "sshd.out")).start()
        wait_until(lambda: port_open(self.port), f"sshd on port {self.port}", [self.daemon])
        return self

    def stop(self):
        """Stop the sshd we started and the per-connection processes it forked (each in a session of its own, so
        found by parent pid before the listener goes): every kept connection is cut, as by a host reboot."""
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
        """The queue's transport section for this sshd."""
        return {"type": "ssh", "host": "127.0.0.1", "port": self.port, "user": "root", "key_file": self.user_key,
                "known_hosts": self.known_hosts, "connect_timeout": 10, "command_timeout": 60, **over}
