"""harvester.transport: argv-only commands with timeouts that kill the whole group, safe decoding, exit code 127
for a missing program, and atomic file placement (hard link on one file system, copy across)."""
import os
import signal
import stat
import time

import pytest

from harvester.context import transport_for
from harvester.transport import LocalTransport, TransportError
from queueconfig import Queue


@pytest.fixture
def transport():
    with LocalTransport() as local:
        yield local


def gone(pid):
    """True when ``pid`` has ended (a zombie waiting for its reaper counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_run_passes_argv_literally(transport):
    result = transport.run(["printf", "%s|%s", "$(echo no) `echo no`", "a b;c"])
    assert result.ok and result.returncode == 0 and not result.timed_out
    assert result.stdout == "$(echo no) `echo no`|a b;c" and result.stderr == ""
    assert result.argv == ("printf", "%s|%s", "$(echo no) `echo no`", "a b;c")


def test_a_shell_line_is_refused(transport):
    with pytest.raises(TypeError, match="never a shell line"):
        transport.run("echo hello")
    with pytest.raises(TypeError):
        transport.run([])


def test_missing_executable_is_127_not_an_exception(transport, tmp_path):
    result = transport.run(["no-such-program-minipanda", "x"])
    assert result.returncode == 127 and not result.ok
    assert "no-such-program-minipanda: command not found" in result.stderr
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    assert transport.run([str(plain)]).returncode == 126
    missing_dir = transport.run(["true"], cwd=str(tmp_path / "nowhere"))
    assert missing_dir.returncode == 127 and str(tmp_path / "nowhere") in missing_dir.stderr


def test_exit_status_and_stderr_are_kept(transport):
    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert "exit status 3" in result.describe() and "err" in result.describe()


def test_output_is_decoded_safely(transport):
    result = transport.run(["printf", "\\377ok\\n"])
    assert result.ok and result.stdout == "\ufffdok\n"


def test_input_env_and_cwd(transport, tmp_path):
    assert transport.run(["cat"], input="text in").stdout == "text in"
    assert transport.run(["cat"], input=b"\x00bytes").stdout == "\x00bytes"
    result = transport.run(["sh", "-c", 'printf "%s %s" "$MINIPANDA_T" "${PATH:+path}"'], env={"MINIPANDA_T": "v"})
    assert result.stdout == "v path"  # env is added to the environment, not a replacement
    assert transport.run(["pwd"], cwd=str(tmp_path)).stdout.strip() == str(tmp_path)


def test_timeout_kills_the_whole_process_group(transport, tmp_path):
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    result = transport.run(["sh", "-c", f'sleep 60 & echo $! > {pid_file}; echo started; wait'], timeout=1)
    child = int(pid_file.read_text())
    try:
        assert result.timed_out and not result.ok and result.returncode == -signal.SIGKILL
        assert result.stdout == "started\n" and "timed out" in result.describe()
        deadline = time.monotonic() + 5
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child)  # the grandchild went with its group
        assert time.monotonic() - started < 30
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_write_file_is_atomic_with_its_mode(transport, tmp_path):
    target = tmp_path / "sub" / "f.txt"
    transport.makedirs(str(target.parent), 0o750)
    transport.makedirs(str(target.parent))  # existing is fine
    transport.write_file(str(target), "first", 0o600)
    transport.write_file(str(target), b"second", 0o640)
    assert target.read_bytes() == b"second" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(target.parent) == ["f.txt"]  # no temporary file left behind
    with pytest.raises(TransportError, match="absolute paths"):
        transport.write_file("relative.txt", "x")
    with pytest.raises(TransportError, match="cannot write"):
        transport.write_file(str(tmp_path / "missing" / "f"), "x")


def test_put_file_links_on_one_file_system_and_copies_otherwise(transport, tmp_path):
    source = tmp_path / "pilot.pyz"
    source.write_bytes(b"zip")
    source.chmod(0o644)
    linked = tmp_path / "linked.pyz"
    transport.put_file(str(source), str(linked))
    assert linked.stat().st_ino == source.stat().st_ino and linked.read_bytes() == b"zip"
    copied = tmp_path / "copied.pyz"
    transport.put_file(str(source), str(copied), mode=0o600)  # another mode: a link would change the source's
    assert copied.stat().st_ino != source.stat().st_ino
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600 and stat.S_IMODE(source.stat().st_mode) == 0o644
    transport.put_file(str(source), str(linked))  # replacing is fine
    with pytest.raises(TransportError, match="cannot put"):
        transport.put_file(str(tmp_path / "nothing"), str(tmp_path / "x"))


def test_put_file_across_file_systems(transport, tmp_path):
    other = "/dev/shm"
    if not os.path.isdir(other) or os.stat(other).st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to copy across")
    source = tmp_path / "pilot.pyz"
    source.write_bytes(b"zip")
    target = os.path.join(other, f"minipanda-test-{os.getpid()}.pyz")
    try:
        transport.put_file(str(source), target)
        assert open(target, "rb").read() == b"zip"
    finally:
        transport.remove_tree(target)


def test_read_exists_remove(transport, tmp_path):
    tree = tmp_path / "worker"
    (tree / "deep").mkdir(parents=True)
    (tree / "deep" / "f").write_text("x")
    assert transport.read_file(str(tree / "deep" / "f")) == b"x"
    assert transport.read_file(str(tree / "none")) is None
    assert transport.read_file(str(tree / "deep" / "f" / "below")) is None
    assert transport.read_file(f"/proc/{os.getpid()}/stat").startswith(str(os.getpid()).encode())
    assert transport.exists(str(tree)) and not transport.exists(str(tree / "none"))
    assert transport.listdir(str(tree)) == ["deep"] and transport.listdir(str(tree / "none")) == []
    transport.remove_tree(str(tree))
    transport.remove_tree(str(tree))  # missing is fine
    assert not tree.exists()
    with pytest.raises(TransportError, match="refusing"):
        transport.remove_tree("/")


def test_transport_for_a_queue():
    local = Queue.model_validate({"name": "LOCALQ"})
    assert isinstance(transport_for(local), LocalTransport)
    ssh = Queue.model_validate({"name": "SSHQ", "transport": {"type": "ssh", "host": "login.example.org"}})
    from harvester.transport.ssh import SshTransport

    with transport_for(ssh) as remote:  # nothing connects before the first command
        assert isinstance(remote, SshTransport) and remote.settings.host == "login.example.org"

