"""harvester/transport/ssh_connection.py against a real sshd on loopback: the three connection errors kept apart
(an unreachable host, a wrong key, an unknown host key), the opt-in for unknown hosts, a changed host key always
refused, and a jump host."""
import pytest

from harvester.transport import TransportError
from harvester.transport.ssh import SSH_FAILED_RC, SshTransport
from harvester.transport.ssh_connection import AuthenticationFailed, HostKeyChanged, HostUnreachable, UnknownHostKey
from conftest import free_port
from slurmhelp import keygen
from test_harvester_ssh import settings, sshd  # noqa: F401 (sshd: the module's fixture)

pytestmark = pytest.mark.ssh


def test_an_unreachable_host(sshd):
    port = free_port()  # nothing listens there
    with SshTransport(settings(sshd, port=port, connect_timeout=5)) as transport:
        with pytest.raises(HostUnreachable, match=f"root@127.0.0.1:{port}: cannot connect"):
            transport.connect()
        result = transport.run(["true"])
        assert result.returncode == SSH_FAILED_RC and "cannot connect" in result.stderr
        with pytest.raises(TransportError, match="cannot connect"):
            transport.makedirs("/tmp/x")


def test_a_wrong_key(sshd, tmp_path):
    other = keygen(tmp_path / "other_key")
    with SshTransport(settings(sshd, key_file=other)) as transport:
        with pytest.raises(AuthenticationFailed, match=f"authentication failed with key {other}"):
            transport.connect()
    with SshTransport(settings(sshd, key_file=str(tmp_path / "nope"))) as transport:
        with pytest.raises(AuthenticationFailed, match="no such file"):
            transport.connect()


def test_an_unknown_host_key_is_refused_unless_the_queue_opts_in(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    with SshTransport(settings(sshd, known_hosts=str(empty))) as transport:
        with pytest.raises(UnknownHostKey, match="is not in .* refused.*accept_unknown_host"):
            transport.connect()
        assert "is not in" in transport.run(["true"]).stderr
    assert not empty.exists()  # refused: nothing recorded
    with SshTransport(settings(sshd, known_hosts=str(empty), accept_unknown_host=True)) as transport:
        assert transport.run(["true"]).ok
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in empty.read_text()
    with SshTransport(settings(sshd, known_hosts=str(empty))) as transport:  # now known: no opt-in needed
        assert transport.run(["true"]).ok


def test_a_changed_host_key_is_always_refused(sshd, tmp_path):
    impostor = keygen(tmp_path / "impostor")
    with open(impostor + ".pub") as handle:
        kind, key = handle.read().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    with SshTransport(settings(sshd, known_hosts=str(known), accept_unknown_host=True)) as transport:
        with pytest.raises(HostKeyChanged, match="holds another key"):
            transport.connect()


def test_through_a_jump_host(sshd):
    jump = settings(sshd, jump_host="127.0.0.1", jump_port=sshd.port, jump_user="root")
    with SshTransport(jump) as transport:
        result = transport.run(["sh", "-c", "echo $SSH_CONNECTION"])
        assert result.ok and result.stdout.startswith("127.0.0.1 ")
        assert transport._conn.jump is not None
