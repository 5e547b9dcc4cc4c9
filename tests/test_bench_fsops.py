"""bench/fsops.py: file-system operations counted from real strace output, a call split by another process's
joined again, failed calls and reads left out, the pilot's directories told apart."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# appended, not first: bench/harvester.py and bench/testbed.py must not hide the packages of those names
sys.path.append(os.path.join(ROOT, "bench"))
import fsops  # noqa: E402

SAMPLE = """\
3198  mkdir("/w/PanDA_Pilot-1_2/PandaJob_7", 0770) = 0
12345 openat(AT_FDCWD, "/w/PanDA_Pilot-1_2/PandaJob_7/payload.stdout", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666 <unfinished ...>
3199  openat(AT_FDCWD, "/srv/files/.upload-1.part", O_WRONLY|O_CREAT|O_EXCL, 0600) = 5
12345 <... openat resumed>) = 4
3198  openat(AT_FDCWD, "/w/PanDA_Pilot-1_2/PandaJob_7/job_definition.json", O_RDONLY|O_CLOEXEC) = 6
3198  openat(AT_FDCWD, "/w/PanDA_Pilot-1_2/PandaJob_8", O_WRONLY|O_CREAT|O_EXCL, 0666) = -1 EEXIST (File exists)
3198  unlinkat(8, "payload.stderr", 0)  = 0
3198  unlinkat(7, "PandaJob_7", AT_REMOVEDIR) = 0
3198  rename("/w/PanDA_Pilot-1_2/PandaJob_7", "/w/PanDA_Pilot-1_2/spare_jobdir_1") = 0
3199  unlink("/srv/files/.upload-1.part") = 0
"""


def test_calls_are_counted_per_kind_split_calls_joined_failed_ones_left_out():
    every, pilot = fsops.count(SAMPLE.splitlines(keepends=True))
    assert dict(every) == {"mkdir": 1, "creates": 2, "unlink": 2, "rmdir": 1, "rename": 1}
    assert dict(pilot) == {"mkdir": 1, "creates": 1, "unlink": 1, "rmdir": 1, "rename": 1}


@pytest.mark.skipif(shutil.which("strace") is None and not os.environ.get("CI"), reason="no strace")
def test_real_strace_output_of_a_process_that_makes_and_removes_a_job_directory(tmp_path):
    script = ("import os, shutil; d = os.path.join(os.getcwd(), 'PandaJob_1'); os.mkdir(d); "
              "open(os.path.join(d, 'payload.stdout'), 'w').close(); shutil.rmtree(d)")
    trace = tmp_path / "st.txt"
    subprocess.run(["strace", "-f", "-qq", "-e", f"trace={fsops.CALLS}", "-o", str(trace), sys.executable, "-c",
                    script], cwd=tmp_path, check=True)
    every, pilot = fsops.count(trace.read_text().splitlines(keepends=True))
    assert (pilot["mkdir"], pilot["creates"], pilot["unlink"], pilot["rmdir"]) == (1, 1, 1, 1)
