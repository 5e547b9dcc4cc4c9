"""harvester.transport.ssh against a real sshd on loopback (throw-away host and user keys, started and stopped here): argv
passed literally, exit codes, timeouts, SFTP files placed atomically, one shared connection per host, and
reconnection after sshd restarts (the connection's own errors: test_harvester_ssh_connection.py)."""
import concurrent.futures
import os
import signal
import stat
import time

import pytest

from harvester.transport.ssh import SSH_FAILED_RC, SshTransport
from harvester.transport.ssh_connection import SshSettings
from harvester.context import transport_for
from harvester.transport import TransportError
from queueconfig import Queue
from slurmhelp import Sshd

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    daemon = Sshd(tmp_path_factory.mktemp("sshd"), {"MINIPANDA_SSH_TEST": "login-node"})
    daemon.start()
    yield daemon
    daemon.stop()


def settings(sshd, **over):
    values = dict(host="127.0.0.1", port=sshd.port, user="root", key_file=sshd.user_key,
                  known_hosts=sshd.known_hosts, connect_timeout=10, command_timeout=30)
    values.update(over)
    return SshSettings(**values)


@pytest.fixture
def remote(sshd):
    with SshTransport(settings(sshd)) as transport:
        yield transport


def test_argv_arrives_literally_with_env_cwd_and_input(remote, tmp_path):
    result = remote.run(["printf", "%s|%s|%s", "$(echo no) `echo no`", "a b;c", "'\"\\"])
    assert result.ok and result.stdout == "$(echo no) `echo no`|a b;c|'\"\\"
    result = remote.run(["sh", "-c", 'printf "%s|%s|%s|" "$X" "$(pwd)" "$MINIPANDA_SSH_TEST"; cat'],
                        env={"X": "$(hostname) 'q'"}, cwd=str(tmp_path), input="from stdin")
    assert result.stdout == f"$(hostname) 'q'|{tmp_path}|login-node|from stdin"


def test_exit_codes_stderr_and_missing_programs(remote):
    result = remote.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert remote.run(["no-such-program-minipanda"]).returncode == 127
    assert remote.run(["true"], cwd="/no/such/dir").returncode == 127
    assert "\ufffd" in remote.run(["printf", "\\377ok"]).stdout  # undecodable bytes replaced, never raised


def sleeping(mark):
    """Pids of live processes whose command line is ``sleep <mark>``."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                if handle.read().split(b"\0")[:2] == [b"sleep", mark.encode()]:
                    found.append(int(name))
        except OSError:
            pass
    return found


def test_a_command_that_outlives_its_timeout_is_killed_there(remote):
    mark = "29.123"
    result = remote.run(["sh", "-c", f"sleep {mark}; echo never"], timeout=1)
    assert result.timed_out and not result.ok and "never" not in result.stdout
    assert "harvester-pid" not in result.stderr
    deadline = time.time() + 30  # a safety net: the kill has already been sent
    while sleeping(mark) and time.time() < deadline:
        time.sleep(0.1)
    assert not sleeping(mark)  # the whole remote process group, not only the channel
    assert remote.run(["true"]).ok  # the connection is still good


def test_files_over_sftp(remote, tmp_path):
    folder = tmp_path / "a" / "b"
    remote.makedirs(str(folder), 0o750)
    assert folder.is_dir()
    remote.write_file(str(folder / "f.txt"), "hello", 0o600)
    assert (folder / "f.txt").read_text() == "hello" and stat.S_IMODE((folder / "f.txt").stat().st_mode) == 0o600
    assert remote.read_file(str(folder / "f.txt")) == b"hello"
    assert remote.read_file(str(folder / "missing")) is None
    assert remote.exists(str(folder / "f.txt")) and not remote.exists(str(folder / "missing"))
    source = tmp_path / "pilot.pyz"
    source.write_bytes(os.urandom(300000))
    source.chmod(0o755)
    remote.put_file(str(source), str(folder / "pilot.pyz"))
    assert (folder / "pilot.pyz").read_bytes() == source.read_bytes()
    assert stat.S_IMODE((folder / "pilot.pyz").stat().st_mode) == 0o755
    assert sorted(os.listdir(folder)) == ["f.txt", "pilot.pyz"]  # no temporary names left
    assert sorted(remote.listdir(str(folder))) == ["f.txt", "pilot.pyz"] and remote.listdir(str(folder / "x")) == []
    assert remote.read_file("/proc/self/stat") is not None  # what the local batch plugin reads works too
    remote.remove_tree(str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    with pytest.raises(TransportError, match="absolute"):
        remote.write_file("relative/path", "x")
    with pytest.raises(TransportError, match="refusing"):
        remote.remove_tree("/")


def test_one_connection_per_host_shared_by_queues(sshd):
    queue = {"batch": {"system": "slurm"}, "transport": sshd.queue_transport()}
    first = transport_for(Queue.model_validate({"name": "Q1", **queue}))
    second = transport_for(Queue.model_validate({"name": "Q2", **queue}))
    try:
        assert first.run(["true"]).ok and second.run(["true"]).ok
        assert first._conn is second._conn
        first.close()
        assert second.run(["true"]).ok  # still open for the other queue
    finally:
        first.close()
        second.close()


def test_reconnects_after_sshd_restarts(tmp_path):
    daemon = Sshd(tmp_path / "sshd").start()
    try:
        with SshTransport(settings(daemon)) as transport:
            assert transport.run(["true"]).ok
            transport.write_file(str(tmp_path / "before"), "1")
            daemon.stop()  # the listener and every session it forked: the kept connection is cut
            daemon.start()
            assert transport.run(["echo", "again"]).stdout == "again\n"
            daemon.stop()
            daemon.start()
            transport.write_file(str(tmp_path / "after"), "2")  # SFTP reconnects as well
            assert (tmp_path / "after").read_text() == "2"
    finally:
        daemon.stop()


def test_a_connection_cut_while_a_command_runs_is_lost_not_failed(tmp_path):
    """A command whose connection dropped may have run: the result says so (``lost``), so a plugin looks the job up
    before it submits again; a command that never started is not lost."""
    daemon, mark, started = Sshd(tmp_path / "sshd").start(), "28.321", tmp_path / "started"
    try:
        with SshTransport(settings(daemon)) as transport, concurrent.futures.ThreadPoolExecutor(1) as pool:
            killed = transport.run(["sh", "-c", "kill -s KILL $$"])  # no exit status either, but the link is up
            assert not killed.ok and not killed.lost
            running = pool.submit(transport.run, ["sh", "-c", f"touch {started}; sleep {mark}"])
            deadline = time.time() + 30
            while not started.exists() and time.time() < deadline:
                time.sleep(0.05)
            daemon.stop()
            result = running.result(timeout=60)
            assert result.lost and result.returncode == SSH_FAILED_RC and not result.ok
            assert "connection lost while the command ran" in result.stderr
            refused = transport.run(["true"])
            assert refused.returncode == SSH_FAILED_RC and not refused.lost
    finally:
        daemon.stop()
        for pid in sleeping(mark):  # the remote command this test started, if the cut left it running
            os.kill(pid, signal.SIGKILL)
