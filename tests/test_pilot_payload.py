"""The payload process: argv without a shell, its environment, its process group, the transformation."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from unittest import mock

import pytest

from pilot import errors, guard, payload
from pilot.errors import PilotError
from pilot.jobdata import Job
from test_pilot_harness import ROOT, marked_sleep, processes_with


def run(argv, cwd, timeout=30):
    p = payload.Payload(argv, str(cwd), dict(os.environ))
    p.start()
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return p


def test_command_is_split_never_interpreted(tmp_path):
    argv = payload.command("/bin/echo", "a 'b c' ; $(touch pwned) `id` > x")
    assert argv == ["/bin/echo", "a", "b c", ";", "$(touch", "pwned)", "`id`", ">", "x"]
    p = run(argv, tmp_path)
    assert p.returncode == 0 and sorted(os.listdir(tmp_path)) == ["payload.stderr", "payload.stdout"]
    with pytest.raises(PilotError) as exc:
        payload.command("/bin/echo", "unbalanced 'quote")
    assert exc.value.code == errors.UNRECOGNIZEDTRFARGUMENTS


STDIN_OF_PAYLOADS = r"""
import os, sys, time
from pilot import payload
for job in sys.argv[1:]:
    p = payload.Payload(["/bin/sh", "-c", "readlink /proc/self/fd/0; cat"], job, dict(os.environ))
    p.start()
    while p.poll() is None:
        time.sleep(0.01)
    assert p.returncode == 0, p.returncode
"""


def test_each_payloads_stdin_is_dev_null_though_the_pilots_is_not(tmp_path):
    """/dev/null is opened once per pilot for every payload's stdin: each payload (the second too, after the
    first ended) reads /dev/null, never the pilot's own stdin (here a pipe with data in it)."""
    jobs = [tmp_path / "1", tmp_path / "2"]
    for job in jobs:
        job.mkdir()
    proc = subprocess.run([sys.executable, "-c", STDIN_OF_PAYLOADS, *map(str, jobs)], input=b"the pilot's stdin\n",
                          capture_output=True, cwd=str(ROOT), timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job in jobs:
        assert (job / "payload.stdout").read_text() == "/dev/null\n"


def test_exit_codes_script_without_shebang_and_missing_program(tmp_path):
    assert run(["/bin/sh", "-c", "exit 7"], tmp_path).returncode == 7
    assert run(["/bin/sh", "-c", "kill -9 $$"], tmp_path).returncode == -9
    script = tmp_path / "noshebang"
    script.write_text("echo from-sh\n")
    script.chmod(0o755)
    p = run([str(script)], tmp_path)
    assert p.returncode == 0 and open(p.stdout).read() == "from-sh\n"
    with pytest.raises(PilotError) as exc:
        payload.Payload(["/no/such/program"], str(tmp_path), {}).start()
    assert exc.value.code == errors.TRANSFORMNOTFOUND


def test_own_process_group_and_kill_of_the_whole_tree(tmp_path):
    marker = f"tree-{os.getpid()}-{time.time_ns()}"
    sleep = marked_sleep(tmp_path, marker)
    p = payload.Payload(["/bin/sh", "-c", f"{sleep} 300 & sh -c '{sleep} 301' & wait"],
                        str(tmp_path), dict(os.environ))
    p.start()
    assert os.getpgid(p.pid) == p.pid and os.getsid(p.pid) == p.pid
    deadline = time.monotonic() + 30
    while len(processes_with(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    p.kill(5)
    assert p.returncode is not None and processes_with(marker) == []


# Runs as PID 1 of a PID namespace of its own (unshare -pf --mount-proc): a stand-in pilot starts a payload of
# three processes (a shell and two sleeps in its group) through pilot.payload, with or without a guard, and is then
# killed by SIGKILL. Whatever a broken guard would kill, it can only reach processes of this namespace.
PILOT_KILLED = r"""
import json, os, signal, subprocess, sys, time
marker, sleep, guarded, root, job_dir = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4], sys.argv[5]

def marked():
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")[0]
            state = open(f"/proc/{entry}/stat", "rb").read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmd and state != b"Z":
            found.append(int(entry))
    return sorted(found)

pilot = subprocess.Popen([sys.executable, "-c", (
    "import os, sys, time\n"
    "from pilot import guard, payload\n"
    f"g = guard.Guard.start() if {guarded} else None\n"
    f"p = payload.Payload(['/bin/sh', '-c', '{sleep} 600 & {sleep} 601 & wait'], {job_dir!r}, dict(os.environ),"
    " None, g)\n"
    "p.start()\n"
    "print(p.pid, g.pid if g else 0, flush=True)\n"
    "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True, cwd=root)
payload_pid, guard_pid = map(int, pilot.stdout.readline().split())
deadline = time.monotonic() + 60  # bounds only keep a failure from hanging
while len(marked()) < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
before = marked()
leader = os.path.exists(f"/proc/{payload_pid}")
os.kill(pilot.pid, signal.SIGKILL)
pilot.wait()
def leader_left():
    try:
        return open(f"/proc/{payload_pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.monotonic() + 30
while (leader_left() or guarded and marked()) and time.monotonic() < deadline:
    time.sleep(0.05)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:  # PID 1 reaps the orphans
            pass
    except ChildProcessError:
        pass
print(json.dumps({"before": before, "leader": leader, "after": marked(), "leader_left": leader_left()}), flush=True)
"""


def in_own_pid_namespace(argv, timeout=120):
    """Run ``argv`` as PID 1 of a new PID namespace (everything in it dies with it); its stdout."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-pf", "--mount-proc", "true"], capture_output=True).returncode:
        if os.environ.get("CI") == "true":
            pytest.fail("this test needs unshare -pf --mount-proc (util-linux, root)")
        pytest.skip("needs unshare -pf --mount-proc (util-linux, root) for a PID namespace of its own")
    out = subprocess.run([unshare, "-pf", "--mount-proc", "--kill-child"] + argv, capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("guarded", [True, False], ids=["guard", "fork and prctl"])
def test_a_pilot_killed_by_sigkill_leaves_no_payload_running(tmp_path, guarded):
    """The guard kills the payload's whole group when the pilot dies; without one the kernel's parent-death
    signal kills the payload's leader (its children in the group are then left to the sweeper)."""
    marker = f"orphan-{os.getpid()}-{time.time_ns()}"
    sleep = marked_sleep(tmp_path, marker)
    result = json.loads(in_own_pid_namespace([sys.executable, "-c", PILOT_KILLED, marker, sleep,
                                              "1" if guarded else "0", ROOT, str(tmp_path)]))
    assert len(result["before"]) == 2 and result["leader"], result  # the payload ran, all three processes
    assert not result["leader_left"], result
    if guarded:
        assert result["after"] == [], result


def test_the_guard_kills_only_a_group_it_holds_and_nothing_once_released(tmp_path):
    """Released (the payload gone), the guard kills nothing when the pilot ends; ``-1`` or garbage are never
    taken for a group."""
    marker = f"guard-{os.getpid()}-{time.time_ns()}"
    sleep = marked_sleep(tmp_path, marker)
    kept = subprocess.Popen([sleep, "600"], start_new_session=True)
    try:
        g = guard.Guard.start()
        assert g.hold(kept.pid)
        g.release()
        g.close()
        assert g.proc.returncode == 0 and kept.poll() is None and processes_with(marker) == [kept.pid]
        g = guard.Guard.start()
        assert g.hold(kept.pid)
        g.close()  # the pilot's end with the group held: the guard kills it
        assert kept.wait(30) == -signal.SIGKILL
    finally:
        if kept.poll() is None:
            kept.kill()
        kept.wait()


# PID 1 of a namespace of its own: a guard handed what is not a payload's group (1 and -1 would be every process
# it may signal, here only this namespace's) kills nothing when the pilot ends.
GARBAGE = r"""
import os, subprocess, sys
from pilot import guard
sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
g = guard.Guard.start()
os.write(g.fd, b"-1\nnot-a-number\n0x10\n\n1\n")
g.close()
print(g.proc.returncode, sleeper.poll(), flush=True)
sleeper.kill()
"""


def test_the_guard_takes_no_garbage_nor_every_process_for_a_group():
    assert in_own_pid_namespace([sys.executable, "-c", GARBAGE]).split() == ["0", "None"]


def test_a_payload_started_with_a_guard_is_held_then_released_and_not_forked_through_python(tmp_path):
    g = guard.Guard.start()
    try:
        p = payload.Payload(["/bin/sh", "-c", "exit 3"], str(tmp_path), dict(os.environ), None, g)
        with mock.patch.object(payload, "die_with_pilot", side_effect=AssertionError("fork + prctl used")):
            p.start()
        assert g.group == p.pid
        assert p.wait(600) == 3  # back at the exit (its pidfd), not after the 600 s
        p.release()
        assert g.group == 0
    finally:
        g.close()


def test_the_wait_ends_at_the_payload_exit(tmp_path):
    """Payload.wait returns when the payload exits, without a signal handler (its pidfd), and reports a payload
    killed by a signal as minus that signal."""
    p = payload.Payload(["/bin/sh", "-c", "sleep 0.5; kill -TERM $$"], str(tmp_path), dict(os.environ))
    p.start()
    done = []
    waiter = threading.Thread(target=lambda: done.append(p.wait(600)))
    waiter.start()
    waiter.join(60)  # the bound only keeps a failure from hanging: a missed exit waits the whole 600 s
    assert done == [-signal.SIGTERM]
    assert p.pidfd is None  # closed once reaped


def test_environment():
    job = Job({"PandaID": 9, "taskID": 4, "attemptNr": 2, "transformation": "x"})
    env = payload.environment(job, "Q", "/jd", 8, base={"PATH": "/bin"})
    assert (env["PandaID"], env["PanDA_TaskID"], env["PanDA_AttemptNr"], env["PANDA_RESOURCE"]) == ("9", "4", "2", "Q")
    assert env["ATHENA_CORE_NUMBER"] == "8" and env["PILOT_HOME"] == "/jd" and env["PATH"] == "/bin"


def test_transformation_sources(tmp_path):
    job = Job({"PandaID": 1, "transformation": "/bin/true"})
    assert payload.transformation(job, str(tmp_path), None, [], []) == "/bin/true"
    fetched = []

    def download(source, dest):
        fetched.append(source)
        open(dest, "w").write("#!/bin/sh\n")

    job = Job({"PandaID": 1, "transformation": "http://pandaserver-doma.cern.ch:25080/trf/user/run.sh"})
    path = payload.transformation(job, str(tmp_path), download, [], [])
    assert fetched == ["/trf/user/run.sh"] and os.access(path, os.X_OK)
    other = Job({"PandaID": 1, "transformation": "https://example.org/tools/run2.sh"})
    with pytest.raises(PilotError) as refused:
        payload.transformation(other, str(tmp_path), download, [], [])
    assert refused.value.code == errors.TRFDOWNLOADFAILURE
    payload.transformation(other, str(tmp_path), download, [], ["https://example.org/tools/"])
    assert fetched[-1] == "https://example.org/tools/run2.sh"
    local = tmp_path / "local"
    local.mkdir()
    (local / "run.sh").write_text("#!/bin/sh\necho local\n")
    jd = tmp_path / "jd"
    jd.mkdir()
    assert open(payload.transformation(job, str(jd), None, [str(local)], [])).read().endswith("local\n")
    for bad in ("http://h/trf/user/", "http://h/trf/user/..", "http://h/x/-rf"):
        with pytest.raises(PilotError):
            payload.transformation(Job({"PandaID": 1, "transformation": bad}), str(jd), download, [], [])


def test_a_shell_that_would_only_start_one_program_is_left_out():
    assert payload.command("/bin/sh", "-c 'sleep 0.1'") == ["sleep", "0.1"]
    assert payload.command("/bin/sh", "-c true") == ["true"]
    for kept in ("-c 'tr a-z A-Z < in > out'", "-c 'exit 3'", "-c 'FOO=1 env'", "-c 'sleep $T'", "-c 'ls *.txt'",
                 "-c 'a; b'", "-c 'no-such-program-here 1'", "-x -c 'sleep 1'"):
        assert payload.command("/bin/sh", kept)[0] == "/bin/sh", kept
    assert payload.command("/usr/bin/python3", "-c 'sleep 1'")[0] == "/usr/bin/python3"  # not a shell


def test_a_program_found_on_path_is_not_looked_up_again_until_it_no_longer_runs(tmp_path, monkeypatch):
    """without_shell's lookup (payload.on_path) walks PATH once per program, not before every job; a program that
    was removed or lost its execute bit since is looked up again, and the shell is kept as before."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "myprog"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    walks = []
    real = shutil.which
    monkeypatch.setattr(payload.shutil, "which", lambda name: walks.append(name) or real(name))
    for _ in range(3):
        assert payload.command("/bin/sh", "-c 'myprog 1'") == ["myprog", "1"]
    assert walks == ["myprog"]
    program.chmod(0o644)  # no longer executable: looked up again, not found, the shell kept
    assert payload.command("/bin/sh", "-c 'myprog 1'")[0] == "/bin/sh"
    program.chmod(0o755)
    assert payload.command("/bin/sh", "-c 'myprog 1'") == ["myprog", "1"]
    program.unlink()  # removed
    assert payload.command("/bin/sh", "-c 'myprog 1'")[0] == "/bin/sh"
    assert walks == ["myprog"] * 4
    monkeypatch.setenv("PATH", "/nonexistent-dir")  # another PATH: its own lookup
    assert payload.command("/bin/sh", "-c 'true'")[0] == "/bin/sh"


def test_a_program_looked_up_before_is_execd_where_it_was_found_and_searched_again_once_it_is_gone(tmp_path,
                                                                                                   monkeypatch):
    """Payload._spawn passes on_path's answer as Popen's executable (no exec tried in each PATH directory); a program
    removed since is searched on PATH as before (a copy further on PATH runs)."""
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
        program = directory / "myprog"
        program.write_text(f"#!/bin/sh\necho from {directory.name}\n")
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{first}:{second}:{os.environ['PATH']}")
    argv = payload.command("/bin/sh", "-c myprog")
    assert argv == ["myprog"] and payload.found_before("myprog", dict(os.environ)) == str(first / "myprog")
    spawned = []
    real = subprocess.Popen
    monkeypatch.setattr(payload.subprocess, "Popen",
                        lambda *a, **kw: spawned.append(kw.get("executable")) or real(*a, **kw))
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    p = run(argv, job_dir)
    assert p.returncode == 0 and (job_dir / "payload.stdout").read_text() == "from first\n"
    assert spawned == [str(first / "myprog")]
    (first / "myprog").unlink()  # gone between the lookup and the start
    spawned.clear()
    p = run(argv, job_dir)
    assert p.returncode == 0 and (job_dir / "payload.stdout").read_text() == "from second\n"
    assert spawned == [str(first / "myprog"), None]
    assert payload.found_before("/bin/true", None) is None and payload.found_before("myprog", {"PATH": "/x"}) is None
