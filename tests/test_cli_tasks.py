"""The user CLI over HTTP: dataset add/list/show, task submit (file and prun-like), list, show, commands."""
import json
import subprocess
import sys

from taskhelp import set_queue, wait_jobs, wait_status
from taskhelp import task_server  # noqa: F401 (a fixture)


def run(server, *args, token_file=None, check=True):
    argv = [sys.executable, "-m", "minipanda", *args, "--url", server.url, "--home", server.home]
    if token_file:
        argv += ["--token-file", str(token_file)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_dataset_and_task_commands(task_server, tmp_path):
    set_queue("Q1")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"in{i}.txt").write_text(f"line {i}\n")
    alice = tmp_path / "alice.token"
    alice.write_text(task_server.token("user", "alice"))
    out = run(task_server, "dataset", "add", "user.alice.in", str(data), token_file=alice).stdout
    assert "5 files added, 0 already there, 5 in total" in out
    listing = run(task_server, "dataset", "list", token_file=alice).stdout
    assert listing.split()[0] == "name" and "user.alice.in" in listing
    shown = json.loads(run(task_server, "dataset", "show", "user.alice.in", "--json", token_file=alice).stdout)
    assert [f["lfn"] for f in shown["files"]][:2] == ["in0.txt", "in1.txt"] and shown["files"][0]["fsize"] == 7

    out = run(task_server, "task", "submit", "--exec", "cat %IN > %OUT:out.txt", "--inDS", "user.alice.in",
              "--nFilesPerJob", "2", "--outputs", "out.txt", "--site", "Q1", "--nScouts", "0", "--taskName",
              "user.alice.cli", token_file=alice).stdout
    task_id = int(out.strip().split("jediTaskID=")[1])
    jobs = wait_jobs(task_server, task_id, 3)
    assert {j["computingSite"] for j in jobs} == {"Q1"} and jobs[0]["prodUserName"] == "alice"

    params = tmp_path / "task.json"
    params.write_text(json.dumps({"taskName": "user.alice.file", "exec": "echo %RNDM:5", "nJobs": 2}))
    second = json.loads(run(task_server, "task", "submit", str(params), "--json", token_file=alice).stdout)
    assert second["jediTaskID"] == task_id + 1

    table = run(task_server, "task", "list", token_file=alice).stdout.splitlines()
    assert table[0].split()[:2] == ["jediTaskID", "status"] and len(table) == 3
    named = json.loads(run(task_server, "task", "list", "--name", "*cli", "--json", token_file=alice).stdout)
    assert [t["jediTaskID"] for t in named] == [task_id]
    assert json.loads(run(task_server, "task", "list", "--status", "done", "--json", token_file=alice).stdout) == []
    show = run(task_server, "task", "show", str(task_id), token_file=alice).stdout
    assert "user.alice.cli" in show and "history:" in show and "input split into 3 jobs" in show
    jobs = json.loads(run(task_server, "job", "list", "--task", str(task_id), "--json", token_file=alice).stdout)
    assert len(jobs) == 3

    bob = tmp_path / "bob.token"
    bob.write_text(task_server.token("user", "bob"))
    refused = run(task_server, "task", "kill", str(task_id), token_file=bob, check=False)
    assert refused.returncode == 1 and "refused (code 3): permission denied" in refused.stdout
    assert json.loads(run(task_server, "task", "list", "--json", token_file=bob).stdout) == []  # scoped to bob
    killed = run(task_server, "task", "kill", str(task_id), token_file=alice)
    assert "command=kill is registered" in killed.stdout
    wait_status(task_server, task_id, "aborted")
    again = run(task_server, "task", "kill", str(task_id), token_file=alice, check=False)
    assert again.returncode == 1 and "code 4" in again.stdout


def test_cli_errors_are_clear(task_server, tmp_path):
    proc = run(task_server, "task", "submit", "--exec", "run %NOPE", "--nJobs", "1", check=False)
    assert proc.returncode == 1 and "exec: unknown placeholder %NOPE" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(task_server, "task", "submit", check=False)
    assert proc.returncode == 1 and "give a parameter file or --exec" in proc.stderr
    proc = run(task_server, "dataset", "add", "x", str(tmp_path / "missing"), check=False)
    assert proc.returncode == 1 and "no such file or directory" in proc.stderr
    proc = run(task_server, "why", "424242", check=False)
    assert proc.returncode == 1 and "job 424242 not found" in proc.stderr
