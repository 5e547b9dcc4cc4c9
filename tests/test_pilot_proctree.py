"""Process-tree membership and usage, with /proc and (when importable) psutil."""
import importlib.util
import os
import subprocess
import sys
import time

import pytest

from pilot import proctree
from test_pilot_harness import marked_sleep, processes_with


@pytest.fixture(params=["proc", "psutil"])
def backend(request, monkeypatch):
    if request.param == "psutil":
        psutil = pytest.importorskip("psutil")
        monkeypatch.setattr(proctree, "_psutil", psutil)
    else:
        monkeypatch.setattr(proctree, "_psutil", None)
    return request.param


def test_members_include_descendants_and_group_orphans(backend, tmp_path):
    marker = f"pt-{backend}-{time.time_ns()}"
    sleep = marked_sleep(tmp_path, marker)
    script = f"({sleep} 300 &) ; {sleep} 301 & wait"
    proc = subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True, stdout=subprocess.DEVNULL)
    tree = proctree.ProcessTree(proc.pid)
    deadline = time.monotonic() + 30
    while len(processes_with(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    members = tree.members()
    assert members[0] == proc.pid
    assert set(processes_with(marker)) <= set(members)  # the orphan re-parented to init shares the group
    usage = tree.usage()
    assert usage.nprocs >= 3 and usage.rss_kb > 0 and usage.pss_kb > 0 and usage.vmem_kb > 0
    assert tree.kill(5, reap=proc.poll)
    proc.wait()
    assert processes_with(marker) == []


def test_usage_sees_memory(backend):
    proc = subprocess.Popen(["python3", "-c", "import time; x = b'x' * (80 << 20); print(1, flush=True); "
                                              "time.sleep(60)"], start_new_session=True, stdout=subprocess.PIPE)
    proc.stdout.readline()
    try:
        usage = proctree.ProcessTree(proc.pid).usage()
        assert usage.rss_kb > 80 * 1024 and usage.pss_kb > 70 * 1024
    finally:
        proc.kill()
        proc.wait()


def test_cpu_time_is_counted(backend):
    proc = subprocess.Popen(["python3", "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t "
                                              "< 0.3: pass\nprint(1, flush=True)\ntime.sleep(60)"],
                            start_new_session=True, stdout=subprocess.PIPE)
    proc.stdout.readline()
    try:
        assert proctree.ProcessTree(proc.pid).usage().cpu_s >= 0.25
    finally:
        proc.kill()
        proc.wait()


def test_psutil_is_loaded_only_when_a_payload_is_looked_at():
    code = ("import sys\nimport pilot.cli, pilot.worker\nassert 'psutil' not in sys.modules\n"
            "from pilot import proctree\nproctree.process_table()\nprint('psutil' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == str(importlib.util.find_spec("psutil") is not None)


def test_a_pilot_loads_no_module_its_run_does_not_need():
    code = ("import sys\nimport pilot.cli, pilot.worker\n"
            "print(sorted({'dataclasses', 'inspect', 'uuid', 'psutil', 'ctypes'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


SUBREAPER_SCRIPT = r"""
import os, subprocess, sys, time
from pilot import guard, node, proctree
assert node.become_subreaper()
pilot_guard = guard.Guard.start()  # the pilot's own child: never one of the payload's, never killed with it
walks = []
real_table = proctree.process_table
proctree.process_table = lambda: walks.append(1) or real_table()
sleep = sys.argv[1]
# the payload starts a process in a session and group of its own, then exits: only the subreaper still sees it
payload = subprocess.Popen(["/bin/sh", "-c", f"setsid {sleep} 300 & exit 0"], start_new_session=True)
payload.wait()
deadline = time.monotonic() + 30
while not proctree._children(os.getpid()) and time.monotonic() < deadline:
    time.sleep(0.02)
tree = proctree.ProcessTree(payload.pid, os.getpid(), ignore=(pilot_guard.pid,))
escaped = tree.alive()
print("escaped", len(escaped), "walks", len(walks), "guard", pilot_guard.pid in tree.members())
tree.kill(5, reap=lambda: [os.waitpid(p, os.WNOHANG) for p in escaped])
walks.clear()
print("after", len(tree.alive()), "walks", len(walks), "guard", pilot_guard.proc.poll())
"""


def test_a_subreaper_pilot_sees_an_escaped_process_and_skips_the_walk_once_nothing_is_left(tmp_path):
    """An escaped process is found (a full walk) and killed; once nothing is left the pilot knows it without a
    walk; its guard, also its child, is never a member, never killed, and does not keep the walk going."""
    marker = f"pt-reaper-{time.time_ns()}"
    sleep = marked_sleep(tmp_path, marker)
    out = subprocess.run([sys.executable, "-c", SUBREAPER_SCRIPT, sleep], capture_output=True, text=True,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    # found through the full walk, as the pilot's child; the pilot's guard, its other child, is not the payload's
    assert lines[0] == "escaped 1 walks 1 guard False", out.stdout
    assert lines[1] == "after 0 walks 0 guard None", out.stdout  # nothing left: known without reading every process
    assert processes_with(marker) == []
