"""The pilot zipapps kept between harvesters (harvester.handoff.zipcache through pilots.zipapp_path): a second
home gets a copy of the build of the same sources, never a build of other sources, nor a damaged or foreign file.

Each test builds from its own copy of the pilot package (``zipapp.package_dir`` pointed at it), so it can edit the
sources as a developer would."""
import logging
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import pytest

from harvester.handoff import pilots, zipcache
from pilot import zipapp

PACKAGE = zipapp.package_dir()


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """A copy of the pilot package that zipapp_path builds from, and a cache directory of this test's own."""
    copy = tmp_path / "src" / "pilot"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(zipapp, "package_dir", lambda: str(copy))
    monkeypatch.setenv(zipcache.ENV, str(tmp_path / "cache"))
    pilots._source_digest.cache_clear()
    yield copy
    pilots._source_digest.cache_clear()


def no_build(*args, **kwargs):
    raise AssertionError("the zipapp was built although the cache holds it")


def member(path, name):
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def runs(path, tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # only the archive itself
    out = subprocess.run([sys.executable, path, "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    return out.returncode == 0 and "minipanda pilot" in out.stdout


def entries(tmp_path):
    return sorted(os.listdir(tmp_path / "cache"))


def test_a_second_home_gets_the_kept_build_without_building(sources, tmp_path, monkeypatch):
    first = pilots.zipapp_path(str(tmp_path / "home1"))
    digest = zipapp.digest()
    assert entries(tmp_path) == [zipcache.entry_name(digest)]
    assert oct(os.stat(tmp_path / "cache").st_mode & 0o777) == "0o700"
    monkeypatch.setattr(zipapp, "build", no_build)
    second = pilots.zipapp_path(str(tmp_path / "home2"))
    assert os.path.dirname(second) == str(tmp_path / "home2" / "pilot")
    assert open(second, "rb").read() == open(first, "rb").read()
    assert os.stat(second).st_mode & 0o777 == 0o755 and runs(second, tmp_path)
    assert zipapp.archive_digest(second) == digest


def test_edited_sources_are_built_anew_never_taken_from_the_cache(sources, tmp_path):
    before = pilots.zipapp_path(str(tmp_path / "home1"))
    old = zipapp.digest()
    edited = (sources / "cli.py").read_bytes() + b"\n# an edit\n"
    (sources / "cli.py").write_bytes(edited)
    pilots._source_digest.cache_clear()  # a new harvester process
    after = pilots.zipapp_path(str(tmp_path / "home2"))
    new = zipapp.digest()
    assert new != old and after != before.replace("home1", "home2")
    assert member(after, "pilot/cli.py") == edited and member(before, "pilot/cli.py") != edited
    assert zipapp.archive_digest(after) == new and runs(after, tmp_path)
    assert entries(tmp_path) == sorted([zipcache.entry_name(old), zipcache.entry_name(new)])
    # a file that is not Python source counts too: build() packs it
    (sources / "notes.txt").write_text("packed")
    pilots._source_digest.cache_clear()
    third = pilots.zipapp_path(str(tmp_path / "home3"))
    assert zipapp.digest() != new and member(third, "pilot/notes.txt") == b"packed"


def kept(tmp_path, digest):
    return tmp_path / "cache" / zipcache.entry_name(digest)


def spoil_with_other_sources(tmp_path, sources, digest):
    """The entry of ``digest`` replaced by a build of other sources (as a rename or a bug would leave it)."""
    other = tmp_path / "other" / "pilot"
    shutil.copytree(sources, other)
    (other / "cli.py").write_bytes(b"raise SystemExit('stale pilot')\n")
    ours, zipapp.package_dir = zipapp.package_dir, lambda: str(other)
    try:
        zipapp.build(str(tmp_path / "stale.pyz"))
    finally:
        zipapp.package_dir = ours
    shutil.copyfile(tmp_path / "stale.pyz", kept(tmp_path, digest))


def truncate(tmp_path, sources, digest):
    data = kept(tmp_path, digest).read_bytes()
    kept(tmp_path, digest).write_bytes(data[: len(data) // 2])


def flip_a_byte_of_a_member(tmp_path, sources, digest):
    """One byte of the stored worker.pyc changed: the archive still opens and names the right digest."""
    path = kept(tmp_path, digest)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("pilot/worker.pyc")
    data = bytearray(path.read_bytes())
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_a_compressed_member(tmp_path, sources, digest):
    """The deflated cli.py's first block marked of the reserved type: reading it fails in zlib, not on its CRC."""
    path = kept(tmp_path, digest)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("pilot/cli.py")
        archive.fp.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", archive.fp.read(4))
        start = archive.fp.tell() + name_length + extra_length  # the member's data (the archive knows its prefix)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    data = bytearray(path.read_bytes())
    data[start] |= 0b110  # BTYPE 11: "invalid block type"
    path.write_bytes(bytes(data))


def writable_by_the_group(tmp_path, sources, digest):
    os.chmod(kept(tmp_path, digest), 0o664)


def a_link(tmp_path, sources, digest):
    target = tmp_path / "elsewhere.pyz"
    shutil.move(kept(tmp_path, digest), target)
    os.symlink(target, kept(tmp_path, digest))


def directory_writable_by_others(tmp_path, sources, digest):
    os.chmod(tmp_path / "cache", 0o777)


@pytest.mark.parametrize("spoil", [spoil_with_other_sources, truncate, flip_a_byte_of_a_member,
                                   damage_a_compressed_member, writable_by_the_group, a_link,
                                   directory_writable_by_others])
def test_a_kept_build_that_is_not_sound_and_private_is_not_used(sources, tmp_path, spoil, caplog):
    pilots.zipapp_path(str(tmp_path / "home1"))
    digest = zipapp.digest()
    spoil(tmp_path, sources, digest)
    with caplog.at_level(logging.INFO, logger="harvester.handoff"):
        path = pilots.zipapp_path(str(tmp_path / "home2"))
    assert "built the pilot zipapp" in caplog.text and "from the cache" not in caplog.text
    assert zipapp.archive_digest(path) == digest and runs(path, tmp_path)
    assert member(path, "pilot/cli.py") == (sources / "cli.py").read_bytes()


def test_a_kept_build_removed_while_it_is_taken_is_built_instead(sources, tmp_path, monkeypatch, caplog):
    """Another harvester's prune (or anyone) removes the entry between its checks and its copy: the zipapp is
    built, the harvester does not fail."""
    pilots.zipapp_path(str(tmp_path / "home1"))
    real = zipapp.archive_digest

    def checked_then_removed(path):
        digest = real(path)
        if os.path.dirname(str(path)) == str(tmp_path / "cache"):
            os.unlink(path)
        return digest

    monkeypatch.setattr(zipapp, "archive_digest", checked_then_removed)
    with caplog.at_level(logging.INFO, logger="harvester.handoff"):
        path = pilots.zipapp_path(str(tmp_path / "home2"))
    assert "built the pilot zipapp" in caplog.text and runs(path, tmp_path)
    assert not os.path.exists(path + ".tmp")


def test_an_empty_setting_turns_the_cache_off(sources, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(zipcache.ENV, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert zipcache.directory() is None
    with caplog.at_level(logging.INFO, logger="harvester.handoff"):
        for home in ("home1", "home2"):
            assert runs(pilots.zipapp_path(str(tmp_path / home)), tmp_path)
    assert caplog.text.count("built the pilot zipapp") == 2 and "from the cache" not in caplog.text
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "user").exists() and not (tmp_path / "cache").exists()


def test_the_default_place_is_the_users_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(zipcache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zipcache.directory() == str(tmp_path / "xdg" / "minipanda")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert zipcache.directory() == str(tmp_path / "user" / ".cache" / "minipanda")
    # a setting no shell expanded (a systemd unit's Environment=, a YAML file): '~' is the home, not a folder '~'
    monkeypatch.setenv(zipcache.ENV, "~/pilots")
    assert zipcache.directory() == str(tmp_path / "user" / "pilots")


def test_only_the_newest_builds_are_kept(sources, tmp_path):
    for n in range(zipcache.KEEP + 3):
        (sources / "notes.txt").write_text(str(n))
        pilots._source_digest.cache_clear()
        pilots.zipapp_path(str(tmp_path / f"home{n}"))
        os.utime(kept(tmp_path, zipapp.digest()), (1_000_000 + n, 1_000_000 + n))  # mtimes apart, in order
    names = entries(tmp_path)
    assert len(names) == zipcache.KEEP and zipcache.entry_name(zipapp.digest()) in names
    (sources / "notes.txt").write_text("0")  # the oldest build's sources again: that build was removed
    pilots._source_digest.cache_clear()
    assert not kept(tmp_path, zipapp.digest()).exists()
