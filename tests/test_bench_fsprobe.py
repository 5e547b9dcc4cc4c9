"""bench/fsprobe.py: what a new file costs where a bench works, measured without leaving anything behind, and the
file system named from the mount table."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# appended, not first: bench/harvester.py and bench/testbed.py must not hide the packages of those names
sys.path.append(os.path.join(ROOT, "bench"))
import fsprobe  # noqa: E402


def test_the_probe_times_real_creates_and_leaves_the_directory_as_it_was(tmp_path):
    (tmp_path / "kept").write_text("a bench's own file")
    cost = fsprobe.new_file_cpu_ms(str(tmp_path), files=50)
    assert cost >= 0.0
    assert sorted(os.listdir(tmp_path)) == ["kept"]


def test_the_probe_fails_loudly_where_it_cannot_create(tmp_path):
    missing = tmp_path / "absent"
    try:
        fsprobe.new_file_cpu_ms(str(missing), files=1)
    except FileNotFoundError:
        return
    raise AssertionError("a probe of a directory that does not exist returned a figure")


def test_the_file_system_is_the_longest_mount_point_above_the_directory():
    with open("/proc/self/mounts") as handle:
        mounts = [line.split()[1:3] for line in handle]
    nested = [(inner, kind) for outer, outer_kind in mounts for inner, kind in mounts
              if inner.startswith(outer.rstrip("/") + "/") and kind != outer_kind and os.path.isdir(inner)
              and os.path.realpath(inner) == inner and sum(m == inner for m, _ in mounts) == 1]
    assert nested, "no mount inside another of a different type (a Linux host has /dev/shm or /proc/sys/...)"
    for inner, kind in nested[:5]:
        assert fsprobe.fs_type(inner) == kind, inner
        assert fsprobe.fs_type(os.path.join(inner, "below")) == kind, inner
    assert fsprobe.fs_type("/") not in ("", "?")


def test_the_header_line_names_the_directory_the_cost_and_the_file_system(tmp_path):
    line = fsprobe.describe(str(tmp_path))
    assert str(tmp_path) in line and " ms CPU now (" in line and line.endswith(f"({fsprobe.fs_type(str(tmp_path))})")
