"""The payload process: argv without a shell, its environment, its process group, the transformation."""
import os
import subprocess
import sys
import time

import pytest

from pilot import errors, payload
from pilot.errors import PilotError
from pilot.jobdata import Job
from test_pilot_harness import marked_sleep, processes_with


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


@pytest.mark.parametrize("setpriv", [True, False], ids=["through setpriv", "fork and prctl"])
def test_the_payload_dies_with_a_pilot_killed_by_sigkill(tmp_path, setpriv):
    if setpriv and payload._setpriv() is None:
        pytest.skip("no setpriv with --pdeathsig (util-linux 2.33) here")
    marker = f"orphan-{os.getpid()}-{time.time_ns()}"
    sleep = marked_sleep(tmp_path, marker)
    env = {k: v for k, v in os.environ.items() if k != "PILOT_NO_SETPRIV"}
    if not setpriv:
        env["PILOT_NO_SETPRIV"] = "1"
    # A stand-in pilot: a process that starts the payload through pilot.payload and then waits.
    pilot = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time; from pilot import payload\n"
        f"p = payload.Payload([{sleep!r}, '600'], {str(tmp_path)!r}, dict(os.environ)); p.start()\n"
        "print(p.pid, flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        payload_pid = int(pilot.stdout.readline())
        assert processes_with(marker) == [payload_pid]
    finally:
        pilot.kill()
        pilot.wait()
    deadline = time.monotonic() + 30  # the kernel's signal is prompt; the bound only keeps a failure from hanging
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


def test_a_program_exec_runs_as_it_is_goes_through_setpriv_and_anything_else_through_the_fork(tmp_path):
    if payload._setpriv() is None:
        pytest.skip("no setpriv with --pdeathsig (util-linux 2.33) here")
    env = dict(os.environ)
    script, plain = tmp_path / "script", tmp_path / "plain"
    script.write_text("#!/bin/sh\necho hi\n")
    plain.write_text("echo hi\n")
    for path in (script, plain):
        path.chmod(0o755)
    assert payload.guard_argv(["true", "x"], str(tmp_path), env)[-5:] == ["--pdeathsig", "KILL", "--", "true", "x"]
    assert payload.guard_argv(["./script"], str(tmp_path), env)[-1] == "./script"
    for argv in (["./plain"], ["/no/such/program"], [str(tmp_path)], ["no-such-program-on-path"]):
        assert payload.guard_argv(argv, str(tmp_path), env) is None, argv


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
