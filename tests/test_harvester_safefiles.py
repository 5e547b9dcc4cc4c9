"""harvester/transport/safefiles.py through both transports (in this process, and run on the far side of a real sshd on
loopback): below a root, nothing is followed through a symlink at any component, only regular files are read,
copies and moves are verified before they take a file's name, and a batch of operations is one round trip."""
import json
import os
import stat
import time

import pytest

from harvester.transport.ssh import SshSettings, SshTransport
from harvester.transport import LocalTransport, TransportError
from pilot.fileutil import adler32
from slurmhelp import Sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    daemon = Sshd(tmp_path_factory.mktemp("sshd"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.ssh)])
def transport(request):
    if request.param == "local":
        yield LocalTransport()
        return
    sshd = request.getfixturevalue("sshd")
    with SshTransport(SshSettings(host="127.0.0.1", port=sshd.port, user="root", key_file=sshd.user_key,
                                  known_hosts=sshd.known_hosts, connect_timeout=10, command_timeout=30)) as remote:
        yield remote


@pytest.fixture
def tree(tmp_path):
    """An access point as a hostile pilot leaves it, and files outside it."""
    root = tmp_path / "workers"
    ap = root / "7"
    (ap / "outbox").mkdir(parents=True)
    (ap / "user").mkdir()
    (ap / "pilot-1" / "outbox").mkdir(parents=True)
    (ap / "PanDA_Pilot-7" / "deep").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret\n")
    (ap / "worker_attributes.json").write_text('{"jobId": 1}')
    (ap / "user" / "out.dat").write_text("result\n")
    (ap / "outbox" / "final-1-0.json").write_text("{}")
    (ap / "pilot-1" / "outbox" / "heartbeat-2.json").write_text("{}")
    (ap / "PanDA_Pilot-7" / "deep" / "payload.log").write_text("x")
    os.symlink(tmp_path / "outside" / "secret", ap / "link.json")
    os.symlink(tmp_path / "outside", ap / "evilscope")
    os.mkfifo(ap / "fifo.json")
    (root / "8").mkdir()
    (root / ".batch").mkdir()
    return tmp_path


def one(transport, **op):
    [result] = transport.files([op])
    return result


def test_a_listing_of_every_access_point_in_one_call(transport, tree):
    root = str(tree / "workers")
    result = one(transport, op="scan", root=root, only=["7", "8", "9"], depth=4, descend=["outbox", "pilot-*"])
    kinds = {entry[0]: entry[1] for entry in result["entries"]}
    assert kinds["7/worker_attributes.json"] == "f" and kinds["7/link.json"] == "l" and kinds["7/fifo.json"] == "o"
    assert kinds["7/evilscope"] == "l" and not any(name.startswith("7/evilscope/") for name in kinds)
    assert kinds["7/outbox/final-1-0.json"] == "f" and kinds["7/pilot-1/outbox/heartbeat-2.json"] == "f"
    assert kinds["7/PanDA_Pilot-7"] == "d" and "7/PanDA_Pilot-7/deep" not in kinds  # a work area is not listed
    assert "7/user" in kinds and "7/user/out.dat" not in kinds and kinds["8"] == "d" and ".batch" not in kinds
    entry = next(e for e in result["entries"] if e[0] == "7/worker_attributes.json")
    assert entry[2] == len('{"jobId": 1}') and abs(entry[3] - os.stat(tree / "workers/7/worker_attributes.json")
                                                   .st_mtime) < 1e-3
    assert one(transport, op="scan", root=str(tree / "nowhere"))["entries"] == []


def test_reads_refuse_symlinks_fifos_directories_and_size(transport, tree):
    root = str(tree / "workers")
    files = one(transport, op="read", root=root, limit=20,
                paths=["7/worker_attributes.json", "7/link.json", "7/fifo.json", "7/evilscope/secret", "7/user",
                       "7/none.json", "7/../8", "7/PanDA_Pilot-7/deep/payload.log"])["files"]
    assert files["7/worker_attributes.json"]["data"] == b'{"jobId": 1}'
    codes = {path: entry.get("code") for path, entry in files.items()}
    assert codes == {"7/worker_attributes.json": None, "7/link.json": "symlink", "7/fifo.json": "not_regular",
                     "7/evilscope/secret": "symlink", "7/user": "not_regular", "7/none.json": "missing",
                     "7/../8": "invalid", "7/PanDA_Pilot-7/deep/payload.log": None}
    assert "never followed" in files["7/evilscope/secret"]["error"] and "evilscope" in files["7/evilscope/secret"][
        "error"]
    big = one(transport, op="read", root=root, paths=["7/worker_attributes.json"], limit=5)["files"]
    assert big["7/worker_attributes.json"]["code"] == "too_large" and "12 bytes" in big[
        "7/worker_attributes.json"]["error"]


def test_writes_are_atomic_keep_their_mode_and_never_go_through_a_symlink(transport, tree):
    root = str(tree / "workers")
    results = transport.files([
        {"op": "write", "root": root, "path": "7/pilot.token", "data": b"tok", "mode": 0o600},
        {"op": "write", "root": root, "path": "7/evilscope/planted", "data": b"x"},
        {"op": "write", "root": root, "path": "7/link.json", "data": b"{}"},  # replaces the link, not its target
        {"op": "write", "root": root, "path": "7/worker_attributes.json", "data": b"new", "exclusive": True},
        {"op": "write", "root": root, "path": "9/a/b.json", "data": b"made", "makedirs": True},
    ])
    assert [r["ok"] for r in results] == [True, False, True, False, True]
    assert stat.S_IMODE(os.stat(tree / "workers/7/pilot.token").st_mode) == 0o600
    assert results[1]["code"] == "symlink" and not (tree / "outside" / "planted").exists()
    assert (tree / "outside" / "secret").read_text() == "secret\n" and not os.path.islink(tree / "workers/7/link.json")
    assert results[3]["code"] == "exists" and (tree / "workers/7/worker_attributes.json").read_text() == '{"jobId": 1}'
    assert (tree / "workers/9/a/b.json").read_text() == "made"
    assert not [n for n in os.listdir(tree / "workers/7") if n.endswith(".tmp")]


def test_copies_and_moves_are_verified_and_never_leave_a_part(transport, tree):
    root, out = str(tree / "workers"), str(tree / "out")
    good = adler32(str(tree / "workers/7/user/out.dat"))
    wrong = one(transport, op="copy", src_root=root, src="7/user/out.dat", dst_root=out, dst="user/out.dat",
                adler32="00000001", move=True)
    assert wrong["code"] == "mismatch" and (tree / "workers/7/user/out.dat").exists()
    assert not os.path.exists(tree / "out")  # nothing is made at the destination before the source passed
    moved = one(transport, op="copy", src_root=root, src="7/user/out.dat", dst_root=out, dst="user/out.dat",
                adler32="ad:" + good, move=True)
    assert moved["ok"] and moved["adler32"] == good and moved["size"] == 7
    assert (tree / "out/user/out.dat").read_text() == "result\n" and not (tree / "workers/7/user/out.dat").exists()
    again = one(transport, op="copy", src_root=root, src="7/user/out.dat", dst_root=out, dst="user/out.dat",
                adler32=good, move=True)
    assert again["ok"] and again["how"] == "already there"  # a repeat after a crash finds it done
    for src in ("7/evilscope/secret", "7/link.json", "7/fifo.json"):
        refused = one(transport, op="copy", src_root=root, src=src, dst_root=out, dst="x/y", move=True)
        assert refused["code"] in ("symlink", "not_regular"), refused
    assert (tree / "outside" / "secret").exists() and not os.path.exists(tree / "out/x/y")
    copied = one(transport, op="copy", src_root=out, src="user/out.dat", dst_root=root, dst="7/in.dat", size=7)
    assert copied["ok"] and (tree / "workers/7/in.dat").read_text() == "result\n"


def test_renames_and_removes_stay_below_the_root(transport, tree):
    root = str(tree / "workers")
    results = transport.files([
        {"op": "rename", "root": root, "src": "7/outbox/final-1-0.json", "dst": "7/outbox/final-1-0.json.h.claimed"},
        {"op": "rename", "root": root, "src": "7/outbox/final-1-0.json", "dst": "7/outbox/x"},  # lost the race
        {"op": "rename", "root": root, "src": "7/evilscope/secret", "dst": "7/stolen"},
        {"op": "remove", "root": root, "paths": ["7/outbox/final-1-0.json.h.claimed", "7/evilscope/secret",
                                                 "7/link.json", "7/gone"]},
    ])
    assert [r["ok"] for r in results] == [True, False, False, True]
    assert results[1]["code"] == "missing" and results[2]["code"] == "symlink"
    assert results[3]["removed"] == {"7/outbox/final-1-0.json.h.claimed": "ok", "7/evilscope/secret": "symlink",
                                     "7/link.json": "ok", "7/gone": "ok"}
    assert (tree / "outside" / "secret").exists() and not os.path.lexists(tree / "workers/7/link.json")


def test_whole_files_to_and_from_the_submit_host(transport, tree):
    root = str(tree / "workers")
    local = tree / "edge" / "out.dat"
    local.parent.mkdir()
    assert transport.fetch(root, "7/user/out.dat", str(local)) == {"size": 7, "adler32": adler32(str(local))}
    for path, code in (("7/evilscope/secret", "symlink"), ("7/fifo.json", "not_regular"), ("7/none", "missing")):
        with pytest.raises(TransportError) as refused:
            transport.fetch(root, path, str(tree / "edge" / "x"))
        assert refused.value.code == code and path in str(refused.value)
    with pytest.raises(TransportError, match="over the limit") as big:
        transport.fetch(root, "7/user/out.dat", str(tree / "edge" / "x"), limit=3)
    assert big.value.code == "too_large"
    assert sorted(os.listdir(tree / "edge")) == ["out.dat"]  # nothing half-written left behind
    sent = transport.send(str(local), root, "8/in/out.dat", 0o600)
    assert sent["adler32"] == adler32(str(local)) and (tree / "workers/8/in/out.dat").read_text() == "result\n"
    assert stat.S_IMODE(os.stat(tree / "workers/8/in/out.dat").st_mode) == 0o600
    with pytest.raises(TransportError) as refused:
        transport.send(str(local), root, "7/evilscope/planted")
    assert refused.value.code == "symlink" and not (tree / "outside" / "planted").exists()


def test_a_malformed_batch_is_refused_per_operation(transport, tree):
    results = transport.files([{"op": "launch", "root": "/"}, {"op": "read", "root": "relative", "paths": []},
                               {"op": "read", "root": str(tree), "paths": ["/etc/passwd"]}])
    assert [r.get("code") for r in results] == ["invalid", "invalid", None]
    assert results[2]["files"]["/etc/passwd"]["code"] == "invalid"
    assert json.dumps(results)  # everything said in plain data


@pytest.mark.ssh
def test_over_ssh_batches_go_to_one_kept_helper(sshd, tree, monkeypatch):
    with SshTransport(SshSettings(host="127.0.0.1", port=sshd.port, user="root", key_file=sshd.user_key,
                                  known_hosts=sshd.known_hosts)) as remote:
        opened, real = [], remote._channel
        monkeypatch.setattr(remote, "_channel", lambda: opened.append(1) or real())
        monkeypatch.setattr(remote, "run", lambda *a, **k: pytest.fail(f"a batch ran a command: {a}"))
        root = str(tree / "workers")
        for n in range(3):
            remote.files([{"op": "scan", "root": root},
                          {"op": "read", "root": root, "paths": ["7/worker_attributes.json"]},
                          {"op": "write", "root": root, "path": f"8/x{n}", "data": b"\0\xff"}])
        assert len(opened) == 1  # one helper started, three batches answered by it
        assert (tree / "workers/8/x2").read_bytes() == b"\0\xff"
        helper = remote._conn.helper
        os.kill(helper.pid(), 9)  # the helper dies between two batches (its host killed it)
        deadline = time.monotonic() + 30
        while helper.usable() and time.monotonic() < deadline:
            time.sleep(0.05)
        [result] = remote.files([{"op": "read", "root": root, "paths": ["8/x0"]}])
        assert result["files"]["8/x0"]["data"] == b"\0\xff" and len(opened) == 2  # a new one, nothing lost
