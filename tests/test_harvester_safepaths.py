"""harvester/transport/safepaths.py: the walk below a root the safe file operations stand on: a path is relative
with no '.' or '..' component, a symlink at any component is refused by name (never followed), and only a regular
file under the size limit is opened, a FIFO without blocking."""
import os

import pytest

from harvester.transport.safepaths import Refused, open_file, open_root, split


@pytest.mark.parametrize("rel", ["/etc/passwd", "", "a//b", "a/./b", "a/../b", "..", "a\0b", 7])
def test_only_plain_relative_paths_are_walked(rel):
    with pytest.raises(Refused) as refused:
        split(rel)
    assert refused.value.code == "invalid"


def opened(root, rel, limit=None):
    root_fd = open_root(str(root))
    try:
        fd, info = open_file(root_fd, str(root), rel, limit)
        os.close(fd)
        return info.st_size
    except Refused as exc:
        return exc.code, str(exc)
    finally:
        os.close(root_fd)


def test_symlinks_fifos_directories_and_large_files_are_refused_by_name(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "file").write_text("12345")
    os.symlink(tmp_path / "outside", root / "hop")
    os.symlink(tmp_path / "outside" / "secret", root / "dir" / "link")
    os.mkfifo(root / "dir" / "fifo")
    assert opened(root, "dir/file") == 5
    assert opened(root, "hop/secret") == ("symlink", f"{root}/hop/secret: {root}/hop is a symlink: never followed")
    assert opened(root, "dir/link")[0] == "symlink"
    assert opened(root, "dir/fifo") == ("not_regular", f"{root}/dir/fifo is not a regular file")
    assert opened(root, "dir")[0] == "not_regular"
    assert opened(root, "dir/file", limit=4)[0] == "too_large"
    assert opened(root, "dir/none")[0] == "missing"
