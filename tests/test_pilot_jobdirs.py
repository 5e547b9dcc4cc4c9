"""Job directories reused from job to job (pilot.jobdirs): the same inodes for the next job, and nothing a job left
(a symlink, a hard link, another file, a subdirectory, a FIFO, a changed mode or owner) reaching the next job's
files; a payload whose processes may still run keeps its directory out of reuse. The pilot-level runs are in
test_pilot_jobdirs_run."""
import json
import os
import stat
import struct
import subprocess
import sys

from pilot import jobdirs
from pilot.jobdirs import KEPT, JobDirs, open_job_file
from test_pilot_harness import ROOT

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def job_files(job_dir, data=b"x"):
    """What a job writes in its directory: the three kept files, as the pilot opens them."""
    for name in KEPT:
        with open(open_job_file(os.path.join(job_dir, name)), "wb") as handle:
            handle.write(data + b" " + name.encode())


def inodes(job_dir):
    return [os.lstat(job_dir).st_ino] + [os.lstat(os.path.join(job_dir, name)).st_ino for name in KEPT]


def first_job(tmp_path, dirs=None):
    """A JobDirs in tmp_path whose job A has run: (dirs, A's directory, A's inodes)."""
    dirs = dirs or JobDirs(str(tmp_path))
    a = os.path.join(str(tmp_path), "PandaJob_1")
    dirs.make(a)
    job_files(a, b"secret of job A")
    return dirs, a, inodes(a)


def second_job(dirs, tmp_path):
    b = os.path.join(str(tmp_path), "PandaJob_2")
    dirs.make(b)
    job_files(b, b"secret of job B")
    return b


def test_a_finished_jobs_directory_and_files_are_reused_truncated_by_the_next_job(tmp_path):
    dirs, a, before = first_job(tmp_path)
    dirs.release(a, payload_gone=True)
    assert not os.path.exists(a)
    b = os.path.join(str(tmp_path), "PandaJob_2")
    dirs.make(b)
    assert inodes(b) == before  # no new inode: the directory renamed, its files kept
    assert {name: os.path.getsize(os.path.join(b, name)) for name in KEPT} == dict.fromkeys(KEPT, 0)
    job_files(b, b"B")
    assert inodes(b) == before
    assert (dirs.reused, dirs.fresh, dirs.refused) == (1, 1, 0)
    dirs.release(b, payload_gone=True)
    dirs.close()
    assert os.listdir(str(tmp_path)) == []  # the spares go at the pilot's end


def test_the_finished_jobs_data_is_gone_from_its_spare_at_once(tmp_path):
    dirs, a, _ = first_job(tmp_path)
    dirs.release(a, payload_gone=True)
    (spare,) = [os.path.join(str(tmp_path), name) for name in os.listdir(str(tmp_path))]
    assert sorted(os.listdir(spare)) == sorted(KEPT)
    assert all(os.path.getsize(os.path.join(spare, name)) == 0 for name in KEPT)


def test_a_symlink_left_in_place_of_a_kept_file_is_never_followed(tmp_path):
    dirs, a, before = first_job(tmp_path)
    stolen = tmp_path / "stolen"
    stolen.write_bytes(b"")
    os.unlink(os.path.join(a, "payload.stdout"))
    os.symlink(str(stolen), os.path.join(a, "payload.stdout"))
    dirs.release(a, payload_gone=True)
    b = second_job(dirs, tmp_path)
    assert stolen.read_bytes() == b""
    assert stat.S_ISREG(os.lstat(os.path.join(b, "payload.stdout")).st_mode)
    assert os.lstat(b).st_ino == before[0]  # the directory itself still reused


def test_a_symlink_planted_after_the_spare_was_emptied_is_caught_when_the_file_is_opened(tmp_path):
    dirs, a, _ = first_job(tmp_path)
    dirs.release(a, payload_gone=True)
    b = os.path.join(str(tmp_path), "PandaJob_2")
    dirs.make(b)
    stolen = tmp_path / "stolen"
    stolen.write_bytes(b"")
    os.unlink(os.path.join(b, "job_definition.json"))
    os.symlink(str(stolen), os.path.join(b, "job_definition.json"))
    job_files(b, b"secret of job B")
    assert stolen.read_bytes() == b""
    assert not os.path.islink(os.path.join(b, "job_definition.json"))


def test_a_hard_link_made_by_the_job_never_sees_the_next_jobs_data(tmp_path):
    dirs, a, before = first_job(tmp_path)
    link = str(tmp_path / "link")
    os.link(os.path.join(a, "payload.stderr"), link)
    dirs.release(a, payload_gone=True)
    b = second_job(dirs, tmp_path)
    with open(link, "rb") as handle:
        assert b"job B" not in handle.read()
    assert os.lstat(os.path.join(b, "payload.stderr")).st_ino != before[KEPT.index("payload.stderr") + 1]
    assert os.lstat(os.path.join(b, "payload.stderr")).st_nlink == 1


def test_other_files_and_subdirectories_the_job_left_are_removed(tmp_path):
    dirs, a, before = first_job(tmp_path)
    (tmp_path / "PandaJob_1" / "extra.txt").write_bytes(b"left by A")
    os.makedirs(os.path.join(a, "sub", "deeper"))
    (tmp_path / "PandaJob_1" / "sub" / "deeper" / "f").write_bytes(b"left by A")
    os.symlink("/", os.path.join(a, "root"))
    os.mkfifo(os.path.join(a, "fifo"))
    dirs.release(a, payload_gone=True)
    b = second_job(dirs, tmp_path)
    assert sorted(os.listdir(b)) == sorted(KEPT)
    assert inodes(b) == before


def test_things_planted_in_a_spare_while_it_waits_are_removed_when_it_is_taken(tmp_path):
    dirs, a, before = first_job(tmp_path)
    dirs.release(a, payload_gone=True)
    (spare,) = [os.path.join(str(tmp_path), name) for name in os.listdir(str(tmp_path))]
    os.makedirs(os.path.join(spare, "planted"))
    os.link(os.path.join(spare, "payload.stdout"), str(tmp_path / "link"))
    b = second_job(dirs, tmp_path)
    assert sorted(os.listdir(b)) == sorted(KEPT)
    assert os.lstat(os.path.join(b, "payload.stdout")).st_nlink == 1
    assert (tmp_path / "link").read_bytes() == b""


def test_a_fifo_or_a_directory_in_place_of_a_kept_file_is_replaced_without_hanging(tmp_path):
    dirs, a, _ = first_job(tmp_path)
    os.unlink(os.path.join(a, "payload.stderr"))
    os.mkfifo(os.path.join(a, "payload.stderr"))
    os.unlink(os.path.join(a, "payload.stdout"))
    os.makedirs(os.path.join(a, "payload.stdout", "x"))
    dirs.release(a, payload_gone=True)
    b = second_job(dirs, tmp_path)
    for name in ("payload.stderr", "payload.stdout"):
        assert stat.S_ISREG(os.lstat(os.path.join(b, name)).st_mode)


def test_a_kept_file_with_another_mode_or_owner_is_made_new(tmp_path):
    dirs, a, before = first_job(tmp_path)
    os.chmod(os.path.join(a, "payload.stdout"), 0o666)
    os.chown(os.path.join(a, "job_definition.json"), 4321, -1) if os.geteuid() == 0 else None
    dirs.release(a, payload_gone=True)
    b = second_job(dirs, tmp_path)
    assert stat.S_IMODE(os.lstat(os.path.join(b, "payload.stdout")).st_mode) == jobdirs.file_mode()
    assert os.lstat(os.path.join(b, "job_definition.json")).st_uid == os.geteuid()
    assert os.lstat(os.path.join(b, "payload.stderr")).st_ino == before[KEPT.index("payload.stderr") + 1]


def test_a_directory_whose_mode_was_changed_is_not_reused(tmp_path):
    dirs, a, before = first_job(tmp_path)
    made = stat.S_IMODE(os.lstat(a).st_mode)
    os.chmod(a, 0o777)
    dirs.release(a, payload_gone=True)
    b = second_job(dirs, tmp_path)
    assert stat.S_IMODE(os.lstat(b).st_mode) == made
    assert (dirs.reused, dirs.fresh, dirs.refused) == (0, 2, 1)
    assert sorted(os.listdir(str(tmp_path))) == ["PandaJob_2"]


def posix_acl(entries):
    """A POSIX ACL as the kernel stores it in system.posix_acl_* (version 2; tag, permissions, id per entry)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in entries)


ANY = 0xFFFFFFFF
# owner rwx, user 4321 rwx, group r-x, mask rwx, others nothing
GRANT_4321 = posix_acl([(1, 7, ANY), (2, 7, 4321), (4, 5, ANY), (0x10, 7, ANY), (0x20, 0, ANY)])


def test_an_acl_the_job_set_on_its_directory_or_a_kept_file_never_reaches_the_next_job(tmp_path):
    dirs, a, before = first_job(tmp_path)
    mode = jobdirs.file_mode()  # an ACL that leaves the mode bits as they were: only the ACL check sees it
    same_mode = posix_acl([(1, mode >> 6 & 7, ANY), (2, mode >> 3 & 7, 4321), (4, mode >> 3 & 7, ANY),
                           (0x10, mode >> 3 & 7, ANY), (0x20, mode & 7, ANY)])
    os.setxattr(os.path.join(a, "payload.stdout"), "system.posix_acl_access", same_mode)
    assert stat.S_IMODE(os.lstat(os.path.join(a, "payload.stdout")).st_mode) == mode
    dirs.release(a, payload_gone=True)
    b = second_job(dirs, tmp_path)
    assert os.listxattr(os.path.join(b, "payload.stdout")) == [] and os.lstat(b).st_ino == before[0]
    os.setxattr(b, "system.posix_acl_default", GRANT_4321)  # files made in it later would grant user 4321
    dirs.release(b, payload_gone=True)
    c = os.path.join(str(tmp_path), "PandaJob_3")
    dirs.make(c)
    assert os.listxattr(c) == [] and (dirs.reused, dirs.refused) == (1, 1)


def test_job_directories_that_inherit_an_acl_are_never_reused(tmp_path):
    pilot_dir = tmp_path / "pilot"
    pilot_dir.mkdir()
    os.setxattr(str(pilot_dir), "system.posix_acl_default", GRANT_4321)
    dirs, a, before = first_job(pilot_dir)
    dirs.release(a, payload_gone=True)
    second_job(dirs, pilot_dir)
    assert (dirs.reused, dirs.fresh, dirs.refused) == (0, 2, 0)  # made new each time, quietly


def test_a_spare_changed_while_it_waits_is_not_reused(tmp_path):
    dirs, a, before = first_job(tmp_path)
    dirs.release(a, payload_gone=True)
    (spare,) = [os.path.join(str(tmp_path), name) for name in os.listdir(str(tmp_path))]
    os.chmod(spare, 0o2770)
    b = second_job(dirs, tmp_path)
    assert (dirs.reused, dirs.fresh, dirs.refused) == (0, 2, 1)
    assert sorted(os.listdir(str(tmp_path))) == ["PandaJob_2"] and sorted(os.listdir(b)) == sorted(KEPT)


def test_a_spare_replaced_by_a_symlink_is_not_followed(tmp_path):
    dirs, a, before = first_job(tmp_path)
    dirs.release(a, payload_gone=True)
    (spare,) = [os.path.join(str(tmp_path), name) for name in os.listdir(str(tmp_path))]
    elsewhere = tmp_path / "elsewhere"
    os.rename(spare, str(elsewhere))
    os.symlink(str(elsewhere), spare)
    b = second_job(dirs, tmp_path)
    assert not os.path.islink(b) and os.lstat(b).st_ino != before[0]
    assert sorted(os.listdir(str(elsewhere))) == sorted(KEPT)  # never emptied nor written through the link
    assert all(os.path.getsize(str(elsewhere / name)) == 0 for name in KEPT)


def test_a_directory_whose_payload_may_still_run_is_removed_not_reused(tmp_path):
    dirs, a, before = first_job(tmp_path)
    dirs.release(a, payload_gone=False)
    assert os.listdir(str(tmp_path)) == []
    second_job(dirs, tmp_path)
    assert (dirs.reused, dirs.fresh) == (0, 2)


def test_without_reuse_every_directory_is_made_and_removed_as_before(tmp_path):
    dirs, a, before = first_job(tmp_path, JobDirs(str(tmp_path), reuse=False))
    dirs.release(a, payload_gone=True)
    assert os.listdir(str(tmp_path)) == []
    second_job(dirs, tmp_path)
    assert (dirs.reused, dirs.fresh) == (0, 2)


def test_a_job_directory_that_exists_already_is_not_taken_over(tmp_path):
    dirs, a, before = first_job(tmp_path)
    dirs.release(a, payload_gone=True)
    b = os.path.join(str(tmp_path), "PandaJob_2")
    os.makedirs(b)
    try:
        dirs.make(b)
    except FileExistsError:
        pass
    else:
        raise AssertionError("an existing job directory was taken over")
    assert len(dirs.spares) == 1


SURVIVOR = r"""
import json, os, sys, time, types
from pilot import node, payload
from pilot.jobdirs import JobDirs
from pilot.staging import Staging

assert node.become_subreaper()
base = sys.argv[1]
dirs = JobDirs(base)
seen = {}
for name, script in (("survivor", "sleep 60 & exit 0"), ("clean", "exit 0")):
    job_dir = os.path.join(base, name)
    dirs.make(job_dir)
    run = payload.Payload(["/bin/sh", "-c", script], job_dir, dict(os.environ), adopter_pid=os.getpid())
    run.start()
    while run.poll() is None:
        time.sleep(0.01)
    run.tree.alive()  # as JobRun.ensure_payload_gone looks, without killing (a kill that failed)
    gone = Staging.payload_gone(types.SimpleNamespace(payload=run))
    dirs.release(job_dir, gone)
    seen[name] = {"gone": gone, "spares": len(dirs.spares)}
    run.kill(1)
print(json.dumps(seen))
"""


def test_a_payload_process_still_running_keeps_its_directory_out_of_reuse(tmp_path):
    """A real subreaper (a child process, never the test runner): the payload leaves a process running; its
    directory is removed, not kept; a payload whose tree is gone gives a spare."""
    out = subprocess.run([sys.executable, "-c", SURVIVOR, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {"survivor": {"gone": False, "spares": 0}, "clean": {"gone": True, "spares": 1}}


# ---- the pilot (zipapp) running several jobs ------------------------------------------------------------------
def snoop(base, plant=""):
    """A payload that records its directory's inodes and listing, writes a secret to stdout and stderr, and runs
    ``plant`` (what a job may leave for the next one); it lasts long enough for the previous job's wrap-up (on its
    thread) to give back its directory before the next job's is made, however loaded the machine."""
    return (f"-c 'stat -c %i . payload.stdout job_definition.json > {base}/ino-$PandaID; ls -A > {base}/ls-$PandaID; "
            f"echo secret-$PandaID; echo secret-$PandaID >&2; {plant + '; ' if plant else ''}sleep 0.2'")


def run_jobs(site, plant, *extra, jobs=5):
    base = site.base
    ids = [site.submit(transformation="/bin/sh", jobParameters=snoop(base, plant if n == 0 else ""),
                       Files=[{"type": "log", "lfn": f"log{n}.tgz"}]) for n in range(jobs)]
    code, log = site.run(*extra, qd=site.queuedata(timefloor=10))
    assert code == 0, log
    assert [site.job(pid)["jobStatus"] for pid in ids] == ["finished"] * jobs, log
    read = lambda name: open(os.path.join(base, name)).read().split()  # noqa: E731
    return ids, {pid: read(f"ino-{pid}") for pid in ids}, {pid: read(f"ls-{pid}") for pid in ids}, log


PLANT = ("echo left > extra.txt; mkdir -p sub/deeper; echo left > sub/deeper/f; ln job_definition.json {base}/hl; "
         "rm payload.stdout; ln -s {base}/stolen payload.stdout; chmod 666 payload.stderr")


def test_a_pilot_reuses_job_directories_and_nothing_a_job_left_reaches_the_next_ones(site):
    import tarfile

    open(os.path.join(site.base, "stolen"), "w").close()
    ids, ino, listing, log = run_jobs(site, PLANT.format(base=site.base))
    first_dirs = {ino[pid][0] for pid in ids[:2]}
    assert any(ino[pid][0] in first_dirs for pid in ids[2:]), (ino, log)  # a later job in an earlier one's dir
    assert "job directories: " in log and " reused" in log
    for pid in ids[1:]:
        assert sorted(listing[pid]) == sorted(KEPT), listing  # nothing of job 1: no extra.txt, no sub/
    assert open(os.path.join(site.base, "stolen")).read() == ""  # the symlink was never followed
    with open(os.path.join(site.base, "hl")) as handle:  # the hard link holds job 1's definition, never a later
        assert json.loads(handle.read())["PandaID"] == ids[0]
    for n, pid in enumerate(ids[1:], 1):  # each log tarball holds its own job's files, nothing job 1 left
        with tarfile.open(os.path.join(site.outputs(), f"log{n}.tgz")) as tar:
            names = {os.path.basename(name) for name in tar.getnames()}
            assert not names & {"extra.txt", "sub", "deeper", "f"}, names
            stdout = [m for m in tar.getmembers() if m.name.endswith("payload.stdout")]
            assert tar.extractfile(stdout[0]).read() == f"secret-{pid}\n".encode()
    pilot_dirs = [d for d in os.listdir(site.workdir) if d.startswith("PanDA_Pilot-")]
    assert [n for d in pilot_dirs for n in os.listdir(os.path.join(site.workdir, d)) if "jobdir" in n or
            n.startswith("PandaJob_")] == []  # no spare left behind


def test_a_pilot_without_subreaper_makes_every_job_directory_new(site):
    ids, ino, listing, log = run_jobs(site, "echo left > extra.txt", "--no-subreaper", jobs=3)
    assert " reused" not in log
    assert all(sorted(listing[pid]) == sorted(KEPT) for pid in ids[1:])


def test_a_pilot_with_no_cleanup_keeps_every_job_directory_and_reuses_none(site):
    ids, ino, listing, log = run_jobs(site, "echo left > extra.txt", "--no-cleanup", jobs=3)
    (pilot_dir,) = [os.path.join(site.workdir, d) for d in os.listdir(site.workdir) if d.startswith("PanDA_Pilot-")]
    assert sorted(n for n in os.listdir(pilot_dir) if "Job" in n or "jobdir" in n) == \
        sorted(f"PandaJob_{pid}" for pid in ids)
    assert "extra.txt" in os.listdir(os.path.join(pilot_dir, f"PandaJob_{ids[0]}"))
    assert len({ino[pid][0] for pid in ids}) == 3


def test_only_a_directory_made_for_a_job_becomes_a_spare(tmp_path):
    dirs, a, before = first_job(tmp_path)
    os.rename(a, str(tmp_path / "moved"))
    os.makedirs(a, mode=0o770)  # another directory in its place, as the pilot would make it
    dirs.release(a, payload_gone=True)
    foreign = os.path.join(str(tmp_path), "PandaJob_7")
    os.makedirs(foreign, mode=0o770)  # one the pilot never made (a payload's guess at the next job's name)
    dirs.release(foreign, payload_gone=True)
    assert not dirs.spares and sorted(os.listdir(str(tmp_path))) == ["moved"]


def test_a_job_ending_after_the_pilots_end_leaves_no_spare(tmp_path):
    dirs, a, before = first_job(tmp_path)
    dirs.close()
    dirs.release(a, payload_gone=True)
    assert os.listdir(str(tmp_path)) == []
