"""What a new file costs on the file system a bench works on, printed beside its figures.

A pilot creates and deletes a few files per job, so its CPU per job follows the file system's cost of a new inode.
That cost is not a constant of the machine: on an ext4 without a journal (this project's CI VMs) the inode
allocator skips every inode of the group deleted in the last minute or so (the kernel's ``recently_deleted()``), so
after a run that deleted thousands of files a new file can cost 10-25 times what it costs on a quiet file system.
Benches print :func:`new_file_cpu_ms` of their work directory before and after a run, so a reader can tell a slow
run from a slow file system.
"""
import os
import shutil
import tempfile
import time

FILES = 200


def new_file_cpu_ms(directory, files=FILES):
    """CPU ms (user + system) of creating one empty file in a new directory under ``directory``: the mean over
    ``files`` creates. The probe's directory is removed afterwards."""
    probe = tempfile.mkdtemp(prefix=".fsprobe-", dir=directory)
    try:
        start = time.process_time()
        for i in range(files):
            os.close(os.open(os.path.join(probe, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return 1000 * (time.process_time() - start) / files
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def describe(directory):
    """One line for a bench's header: the file system and what a new file costs there now."""
    return f"a new file under {directory} costs {new_file_cpu_ms(directory):.3f} ms CPU now ({fs_type(directory)})"


def fs_type(directory):
    """The type of the file system holding ``directory`` (ext4, tmpfs, ...), from /proc/self/mounts; "?" elsewhere."""
    try:
        with open("/proc/self/mounts") as handle:
            mounts = [line.split() for line in handle]
    except OSError:
        return "?"
    path, best = os.path.realpath(directory), ("", "?")
    for fields in mounts:
        point = fields[1].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, fields[2])
    return best[1]
