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
