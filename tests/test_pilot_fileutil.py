"""File helpers: name validation (names come from the network), atomic writes, checksums."""
import os
import zlib

import pytest

from pilot import fileutil


def test_safe_names():
    for good in ("out.dat", "EVNT.01._000001.pool.root.1", "log.tgz", "a-b_c+d=e", "user:file"):
        assert fileutil.safe_name(good), good
    for bad in ("", ".", "..", "../x", "a/b", "/etc/passwd", "-rf", "x..y", "a\nb", "out.dat\n", "a b", "x" * 256, None, 3):
        assert not fileutil.safe_name(bad), bad


def test_atomic_write_leaves_no_temporary(tmp_path):
    path = tmp_path / "data.json"
    fileutil.atomic_write_json(str(path), {"a": 1})
    fileutil.atomic_write_json(str(path), {"a": 2})
    assert fileutil.read_json(str(path)) == {"a": 2}
    assert os.listdir(tmp_path) == ["data.json"]
    assert fileutil.read_json(str(tmp_path / "missing")) is None


def test_an_atomic_write_never_goes_through_a_link_planted_at_its_temporary_name(tmp_path):
    """The temporary's name is predictable (process and counter): whatever is planted there is never written
    through nor replaced; the next number is taken, and the file gets its whole content and mode."""
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    target = tmp_path / "worker_attributes.json"
    counter = next(fileutil._temporaries) + 1
    for n in range(counter, counter + 5):
        os.symlink(victim, tmp_path / f".worker_attributes.json.{os.getpid()}-{n}.tmp")
    os.umask(0o077)
    try:
        fileutil.atomic_write_json(str(target), {"jobId": 1}, durable=False)
    finally:
        os.umask(0o022)
    assert victim.read_text() == "untouched" and fileutil.read_json(str(target)) == {"jobId": 1}
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o644)
    assert sum(name.endswith(".tmp") for name in os.listdir(tmp_path)) == 5  # the planted links, nothing of ours


def test_checksums(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello world\n" * 100000)
    assert fileutil.adler32(str(path)) == f"{zlib.adler32(path.read_bytes()) & 0xffffffff:08x}"
    assert fileutil.parse_checksum("ad:0ABCDEF1") == ("adler32", "0abcdef1")
    assert fileutil.parse_checksum("ad:1") == ("adler32", "00000001")
    assert fileutil.parse_checksum("md5:ABC") == ("md5", "abc")
    assert fileutil.parse_checksum("") == (None, None)
    assert fileutil.parse_checksum("sha9:x") == (None, None)


def test_a_digest_taken_block_by_block_is_the_files_checksum(tmp_path):
    import hashlib

    data = os.urandom(3 * fileutil.CHUNK + 11)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert fileutil.adler32(str(path)) == f"{zlib.adler32(data):08x}"
    assert fileutil.md5(str(path)) == hashlib.md5(data).hexdigest()
    for kind, expected in (("adler32", f"{zlib.adler32(data):08x}"), ("md5", hashlib.md5(data).hexdigest())):
        digest = fileutil.Digest(kind)
        with open(path, "rb") as handle:
            for block in fileutil.blocks(handle, 4096):
                digest.update(block)
        assert (digest.size, digest.hexdigest()) == (len(data), expected)
    sized = fileutil.Digest(None)
    sized.update(data)
    assert sized.size == len(data)


def test_create_exclusive_never_writes_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"kept")
    os.symlink(victim, tmp_path / "new.part")
    with fileutil.create_exclusive(str(tmp_path / "new.part")) as handle:
        handle.write(b"new")
    assert victim.read_bytes() == b"kept" and not os.path.islink(tmp_path / "new.part")
    assert (tmp_path / "new.part").read_bytes() == b"new"


def test_sizes_and_mtimes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 1000)
    os.symlink("/etc/hostname", tmp_path / "d" / "link")
    assert fileutil.tree_size(str(tmp_path)) == 1000
    os.utime(tmp_path / "d" / "f", (5000, 5000))
    assert fileutil.newest_mtime(str(tmp_path)) > 5000
    assert fileutil.free_mb(str(tmp_path)) > 0


def test_a_files_adler32_is_zlibs_whichever_implementation_takes_it(tmp_path, monkeypatch):
    """zlib-ng's adler32 is used when the pilot's Python has it (a SIMD one, ~8x zlib's speed), zlib's otherwise:
    for any split of the bytes, a digest, a download's or a copy's, and a file's checksum give zlib's value."""
    pytest.importorskip("zlib_ng")  # a dependency of minipanda: the fast path is the one the testbed's pilots take
    data = os.urandom(5 * fileutil.CHUNK + 7) + b"\xff" * 70000  # long runs of high bytes overflow a naive sum
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = f"{zlib.adler32(data):08x}"
    for chosen in ("zlib_ng", "zlib"):
        monkeypatch.setattr(fileutil, "_adler32", [] if chosen == "zlib_ng" else [zlib.adler32])
        assert fileutil.adler32_function().__module__.startswith(chosen)
        assert fileutil.adler32(str(path)) == expected
        for size in (1, 4093, 65536, len(data)):
            digest = fileutil.Digest("adler32")
            for start in range(0, len(data), size):
                digest.update(memoryview(data)[start:start + size])
            assert (digest.size, digest.hexdigest()) == (len(data), expected), (chosen, size)
        empty = fileutil.Digest("adler32")
        assert empty.hexdigest() == "00000001"


def inodes_of(path, writes, rewriter):
    seen = set()
    for n in range(writes):
        rewriter.write(b'{"n": %d}' % n)
        seen.add(os.stat(path).st_ino)
        assert open(path, "rb").read() == b'{"n": %d}' % n
    return seen


def test_a_rewritten_file_keeps_its_inodes_and_one_spare(tmp_path):
    """Rewrites trade places with a kept spare (renameat2 RENAME_EXCHANGE): two inodes for twenty rewrites, where
    a temporary file renamed into place takes a new one each time; the spare goes with close()."""
    path = str(tmp_path / "worker_attributes.json")
    rewriter = fileutil.Rewriter(path)
    assert len(inodes_of(path, 20, rewriter)) <= 2 and rewriter.exchanging and rewriter.created == 2
    assert sorted(os.listdir(tmp_path)) == sorted(["worker_attributes.json", os.path.basename(rewriter.spare)])
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    rewriter.close()
    assert os.listdir(tmp_path) == ["worker_attributes.json"]


READER = r'''
import json, os, sys, time
path, stop = sys.argv[1], sys.argv[2]
good = bad = 0
while not os.path.exists(stop):
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        continue
    chunks = []
    while True:  # slowly, a few bytes at a time: the writer rewrites meanwhile
        chunk = os.read(fd, 64)
        if not chunk:
            break
        chunks.append(chunk)
        time.sleep(0.0002)
    os.close(fd)
    try:
        data = json.loads(b"".join(chunks))
        good += len(data["pad"]) == data["n"] % 500
    except ValueError:
        bad += 1
print(good, bad)
'''


def test_a_concurrent_reader_never_sees_a_rewrite_half_written(tmp_path):
    """A reader in another process, reading slowly while the file is rewritten as fast as it goes: every read is
    one whole version. The file it holds is never written over (no write lease while it is open): the rewrite
    takes a new spare instead."""
    import json
    import subprocess
    import sys

    path, stop = str(tmp_path / "worker_attributes.json"), str(tmp_path / "stop")
    rewriter = fileutil.Rewriter(path)
    rewriter.write(json.dumps({"n": 0, "pad": ""}).encode())
    reader = subprocess.Popen([sys.executable, "-c", READER, path, stop], stdout=subprocess.PIPE, text=True)
    try:
        for n in range(1, 3000):
            rewriter.write(json.dumps({"n": n, "pad": "x" * (n % 500)}).encode())
    finally:
        open(stop, "w").close()
        good, bad = map(int, reader.communicate(timeout=60)[0].split())
    assert bad == 0 and good > 0, (good, bad)
    assert rewriter.exchanging and rewriter.created < 2999  # spares were written over while no one held them


@pytest.mark.parametrize("refusal", ["no renameat2", "ENOSYS", "EINVAL from the lease"])
def test_where_exchange_is_not_supported_each_rewrite_is_a_new_file_renamed_into_place(tmp_path, monkeypatch,
                                                                                        refusal):
    import errno

    if refusal == "no renameat2":
        monkeypatch.setattr(fileutil, "_exchanges", [None])
    elif refusal == "ENOSYS":
        def refused(old, new):
            raise OSError(errno.ENOSYS, "Function not implemented")
        monkeypatch.setattr(fileutil, "_exchanges", [refused])
    else:
        def no_lease(fd):
            raise OSError(errno.EINVAL, "Invalid argument")
        monkeypatch.setattr(fileutil, "_alone", no_lease)
    path = str(tmp_path / "worker_attributes.json")
    rewriter = fileutil.Rewriter(path)
    written = []
    real = fileutil.atomic_write_bytes
    monkeypatch.setattr(fileutil, "atomic_write_bytes", lambda *args, **kwargs: written.append(args[0]) or
                        real(*args, **kwargs))
    inodes_of(path, 6, rewriter)  # each read back whole
    # a new file each time (and the spare of the one try of the exchange, removed)
    assert not rewriter.exchanging and written == [path] * 6 and rewriter.created == 6 + (refusal != "no renameat2")
    assert os.listdir(tmp_path) == ["worker_attributes.json"]  # no spare, no temporary left


def test_a_rewrite_never_goes_through_a_link_nor_moves_a_directory_away(tmp_path):
    """A link planted at the spare's name is replaced, never written through; a directory where the file goes
    makes the rewrite fail as a rename onto it did, and stays where it is."""
    path = str(tmp_path / "worker_attributes.json")
    rewriter = fileutil.Rewriter(path)
    target = tmp_path / "target"
    target.write_bytes(b"untouched")
    os.symlink(target, rewriter.spare)
    rewriter.write(b"one")
    rewriter.write(b"two")
    assert target.read_bytes() == b"untouched" and open(path, "rb").read() == b"two"
    os.unlink(path)
    os.mkdir(path)
    with pytest.raises(IsADirectoryError):
        rewriter.write(b"three")
    assert os.path.isdir(path) and rewriter.exchanging


LEASE_HOLDER = r'''
import os, subprocess, sys, time
from pilot import fileutil
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY)
assert fileutil._alone(fd)  # the lease a rewrite holds while it writes the spare
reader = subprocess.Popen([sys.executable, "-c", "import sys; open(sys.argv[1]).read()", path])
time.sleep(0.5)  # the reader's open breaks the lease: the kernel signals this process
import fcntl
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
os.close(fd)
sys.exit(reader.wait(30))
'''


def test_someone_opening_the_spare_during_a_rewrite_does_not_end_the_pilot(tmp_path):
    """A lease's break is signalled to its holder, by default with SIGIO, whose default action ends the process:
    the pilot asks for SIGURG (ignored by default) instead; the reader's open waits for the rewrite to end."""
    import subprocess
    import sys

    path = tmp_path / ".worker_attributes.json.1.spare"
    path.write_bytes(b"{}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fileutil.__file__)))
    holder = subprocess.run([sys.executable, "-c", LEASE_HOLDER, str(path)], cwd=root, timeout=60)
    assert holder.returncode == 0
