"""The log tarball's own writer (pilot/tarball.py): a valid .tgz for GNU tar, gzip and tarfile (the monitor's log
view), the same members tarfile would have written, and a payload's directory read without following its links
or blocking on its FIFOs."""
import gzip
import os
import subprocess
import tarfile
import threading
import zlib

import pytest

from pilot import copytools, tarball
from pilot.errors import PilotError
from test_pilot_copytools import make_job

LONG = "n" * 150 + ".txt"


@pytest.fixture
def job_dir(tmp_path):
    """A payload's directory with what payloads leave: nested files, a long name, an empty file, a link out of it,
    a FIFO, a half-written .part, an input."""
    top = tmp_path / "PandaJob_1"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "payload.stdout").write_bytes(b"hello\n" * 1000)
    (top / "payload.stderr").write_bytes(b"")
    (top / "sub" / "deeper" / "data.bin").write_bytes(bytes(range(256)) * 41)
    (top / "sub" / LONG).write_text("long name")
    (top / "sub" / "half.part").write_text("never in a tarball")
    (top / "in.dat").write_text("an input, left out")
    os.symlink("/etc/passwd", top / "sub" / "secret")
    os.symlink("/" + "d" * 140, top / "sub" / "longlink")
    os.mkfifo(top / "sub" / "pipe")
    os.chmod(top / "payload.stdout", 0o600)
    return top


def members(path):
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: (m.type, m.size, m.mode, m.linkname,
                         tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def test_the_tarball_reads_as_tarfile_would_have_written_it(job_dir, tmp_path):
    job = make_job()  # its input in.dat stays out
    pilot_log = tmp_path / "pilotlog.txt"
    pilot_log.write_bytes(b"0123456789" * 10)
    spool = copytools.log_tarball(job, str(job_dir), str(tmp_path / "log.tgz"), [(str(pilot_log), 20, 50)])
    path, size, adler = spool.path, spool.size, spool.adler32
    data = open(path, "rb").read()
    assert (size, adler) == (len(data), f"{zlib.adler32(data) & 0xffffffff:08x}")  # taken as written
    assert gzip.decompress(data)  # a whole gzip stream, CRC and length checked
    found = members(path)
    # the same members, types, sizes, modes and contents as tarfile's own writer gives for that directory
    expected_path = tmp_path / "expected.tgz"
    with tarfile.open(expected_path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.add(job_dir, arcname="PandaJob_1",
                filter=lambda info: None if info.name.endswith(".part") or info.name == "PandaJob_1/in.dat" or
                info.isfifo() else info)
    expected = members(expected_path)
    expected["PandaJob_1/pilotlog.txt"] = (tarfile.REGTYPE, 30, 0o644, "", b"0123456789" * 3)
    assert found == expected
    assert found[f"PandaJob_1/sub/{LONG}"][4] == b"long name" and found["PandaJob_1/sub/secret"][3] == "/etc/passwd"
    # GNU tar lists and extracts it without a complaint
    listing = subprocess.run(["tar", "tzvf", path], capture_output=True, text=True, check=True)
    assert listing.stderr == "" and f"PandaJob_1/sub/{LONG}" in listing.stdout
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "xzf", path, "-C", str(out)], check=True, capture_output=True)
    assert (out / "PandaJob_1" / "sub" / "deeper" / "data.bin").read_bytes() == bytes(range(256)) * 41
    assert os.readlink(out / "PandaJob_1" / "sub" / "secret") == "/etc/passwd"


def test_the_job_outputs_stay_out_of_the_log_tarball_as_its_inputs_do(tmp_path):
    """As pilot3's create_log: inputs and outputs are staged on their own; a 1 MB output deflated into every log
    tarball would cost the pilot more CPU than the output's own upload."""
    top = tmp_path / "PandaJob_1"
    top.mkdir()
    for name in ("in.dat", "out.root", "payload.stdout"):
        (top / name).write_text(name)
    job = make_job(outFiles="out.root", scopeOut="sc", destinationDblock="ds")
    path = copytools.log_tarball(job, str(top), str(tmp_path / "log.tgz")).path
    assert sorted(members(path)) == ["PandaJob_1", "PandaJob_1/payload.stdout"]


def test_a_link_planted_for_a_member_is_never_followed(tmp_path):
    """A payload that swaps a file for a link (to a file of the pilot's user) gets nothing read through it."""
    secret = tmp_path / "secret"
    secret.write_text("the pilot's")
    with open(tmp_path / "out.tgz", "wb") as raw:
        writer = tarball.Writer(raw)
        os.symlink(secret, tmp_path / "swapped")
        writer.add_file(str(tmp_path / "swapped"), "PandaJob_1/swapped")  # as if lstat had seen a file
        writer.close()
    assert members(tmp_path / "out.tgz") == {}


def test_a_fifo_left_by_a_payload_does_not_block_the_tarball(tmp_path):
    top = tmp_path / "PandaJob_2"
    top.mkdir()
    os.mkfifo(top / "pipe")
    done = []
    thread = threading.Thread(target=lambda: done.append(copytools.log_tarball(
        make_job(), str(top), str(tmp_path / "log.tgz"))), daemon=True)
    thread.start()
    thread.join(30)
    assert done and list(members(tmp_path / "log.tgz")) == ["PandaJob_1"]  # named by the job
    # a FIFO put where a file was listed (after the lstat) is not read either
    with open(tmp_path / "out.tgz", "wb") as raw:
        writer = tarball.Writer(raw)
        thread = threading.Thread(target=writer.add_file, args=(str(top / "pipe"), "pipe"), daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive()
        writer.close()
    assert members(tmp_path / "out.tgz") == {}


def test_a_file_that_shrinks_while_it_is_read_keeps_the_archive_whole(tmp_path, monkeypatch):
    path = tmp_path / "log"
    path.write_bytes(b"x" * 10000)
    real_fstat = os.fstat

    def shrinking(fd):
        st = real_fstat(fd)
        os.truncate(path, 100)  # right after its size was taken
        return st

    monkeypatch.setattr(tarball.os, "fstat", shrinking)
    with open(tmp_path / "out.tgz", "wb") as raw:
        writer = tarball.Writer(raw)
        writer.add_file(str(path), "a")
        monkeypatch.undo()
        writer.add_file(str(path), "b")
        writer.close()
    found = members(tmp_path / "out.tgz")
    assert found["a"][1] == 10000 and found["a"][4] == b"x" * 100 + bytes(9900) and found["b"][4] == b"x" * 100


def test_sizes_and_ids_beyond_octal_fields_use_gnu_base_256():
    header = tarball._header(b"big", 0o644, 3_000_000_000, 0, 9 * 8 ** 11, 0, b"0", b"")
    info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    assert (info.size, info.uid, info.name) == (9 * 8 ** 11, 3_000_000_000, "big")


def test_a_tarball_that_cannot_be_written_leaves_nothing(tmp_path, monkeypatch):
    top = tmp_path / "PandaJob_3"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_text("x" * 1000)
    real = os.listdir

    def listdir(path):
        if path.endswith("sub"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(tarball.os, "listdir", listdir)
    with pytest.raises(PilotError) as caught:
        copytools.log_tarball(make_job(), str(top), str(tmp_path / "log.tgz"))
    assert caught.value.code == 1320 and "Permission denied" in caught.value.diag
    assert not (tmp_path / "log.tgz").exists()  # no part of it passes for a whole one


def incompressible_job_dir(tmp_path, size):
    top = tmp_path / "PandaJob_1"
    top.mkdir(parents=True)
    (top / "payload.stdout").write_bytes(os.urandom(size))
    return top


def test_a_small_tarball_stays_in_memory_and_a_large_one_spills_to_its_file_whole(tmp_path):
    small = copytools.log_tarball(make_job(), str(incompressible_job_dir(tmp_path / "a", 10_000)),
                                  str(tmp_path / "small.tgz"), memory_limit=64 << 10)
    assert not small.on_disk and not (tmp_path / "small.tgz").exists()
    assert (small.size, small.adler32) == (len(small.data), f"{zlib.adler32(small.data) & 0xffffffff:08x}")
    assert gzip.decompress(small.data)
    large = copytools.log_tarball(make_job(), str(incompressible_job_dir(tmp_path / "b", 200_000)),
                                  str(tmp_path / "large.tgz"), memory_limit=64 << 10)
    assert large.on_disk and large.data is None and large.path == str(tmp_path / "large.tgz")
    data = (tmp_path / "large.tgz").read_bytes()  # what memory held first, then the rest
    assert (large.size, large.adler32) == (len(data), f"{zlib.adler32(data) & 0xffffffff:08x}")
    assert len(members(large.path)["PandaJob_1/payload.stdout"][4]) == 200_000


def test_tarballs_in_memory_together_stay_under_the_process_bound(tmp_path, monkeypatch):
    """The wrap-up holds up to a hundred jobs' logs before they go: past MEMORY_HELD_MAX in all, a tarball is a
    file; a tarball let go (the server holds it), or written to its file, or gone, gives its bytes back."""
    monkeypatch.setattr(tarball, "MEMORY_HELD_MAX", tarball.Spool.held() + 50_000)
    top = str(incompressible_job_dir(tmp_path, 20_000))
    first, second = (copytools.log_tarball(make_job(), top, str(tmp_path / f"{n}.tgz"), memory_limit=1 << 20)
                     for n in (1, 2))
    assert not first.on_disk and not second.on_disk
    third = copytools.log_tarball(make_job(), top, str(tmp_path / "3.tgz"), memory_limit=1 << 20)
    assert third.on_disk  # 3 x ~20 kB over the 50 kB left
    first.drop()
    assert not copytools.log_tarball(make_job(), top, str(tmp_path / "4.tgz"), memory_limit=1 << 20).on_disk
    data = second.data
    assert second.keep() == str(tmp_path / "2.tgz") and (tmp_path / "2.tgz").read_bytes() == data
    assert second.data is None
    held = tarball.Spool.held()
    del third, second
    assert tarball.Spool.held() == held  # neither held memory any more
    assert not copytools.log_tarball(make_job(), top, str(tmp_path / "5.tgz"), memory_limit=1 << 20).on_disk
