"""The retry module over real HTTP: new attempts, maxAttempt, each rule action, and the retry-rule CLI."""
import json
import subprocess
import sys
import types

import pytest
import requests
from minipanda.tasks import retry
from taskhelp import task_server  # noqa: F401 (a fixture)
from taskhelp import acquire, jobs_of, run_job, set_queue, submit, wait_for, wait_jobs, wait_status


def attempts(server, task_id, n):
    return wait_for(lambda: [j for j in jobs_of(server, task_id) if j["attemptNr"] == n] or None,
                    f"attempt {n} of task {task_id}")


def fail_next(server, queue, **errors):
    (job,) = acquire(server, queue)
    run_job(server, job, "failed", **errors)
    return job


def one_job_task(server, name, **params):
    return submit(server, dict({"taskName": name, "exec": "true", "nJobs": 1, "nScouts": 0}, **params))


def test_new_attempt_until_max_attempt(task_server):
    set_queue("Q1")
    tid = one_job_task(task_server, "max", maxAttempt=2)
    wait_jobs(task_server, tid, 1)
    first = fail_next(task_server, "Q1", pilot_error_code=1305, pilot_error_diag="payload failed")
    (second,) = attempts(task_server, tid, 2)
    assert second["PandaID"] != first["PandaID"] and second["parentID"] == first["PandaID"]
    assert second["jobName"] != first["jobName"]  # new serial, new output names
    fail_next(task_server, "Q1", pilot_error_code=1305, pilot_error_diag="payload failed")
    wait_status(task_server, tid, "failed")
    assert len(jobs_of(task_server, tid)) == 2
    why = task_server.call("job/why", {"job_id": second["PandaID"]}, method="GET")["data"]["lines"]
    assert "retry module: no retry: attempt 2 of at most 2" in why


def test_missing_input_is_not_retried(task_server):
    set_queue("Q1")
    tid = one_job_task(task_server, "missing", maxAttempt=5)
    wait_jobs(task_server, tid, 1)
    job = fail_next(task_server, "Q1", pilot_error_code=1331, pilot_error_diag="input x not found")
    wait_status(task_server, tid, "failed")
    assert len(jobs_of(task_server, tid)) == 1
    why = task_server.call("job/why", {"job_id": job["PandaID"]}, method="GET")["data"]["lines"]
    assert any(line.startswith("retry module: no retry: rule #") and "missing input file" in line for line in why)


def test_increase_memory_and_walltime(task_server):
    set_queue("Q1", maxrss=10000, maxtime=100000)
    tid = one_job_task(task_server, "mem", ramCount=2000, walltime=1000, maxAttempt=5)
    wait_jobs(task_server, tid, 1)
    fail_next(task_server, "Q1", pilot_error_code=1235, pilot_error_diag="Payload exceeded maximum allowed memory")
    (second,) = attempts(task_server, tid, 2)
    assert (second["minRamCount"], second["maxWalltime"]) == (3000, 1000)
    fail_next(task_server, "Q1", pilot_error_code=1213, pilot_error_diag="Reached maximum time limit")
    (third,) = attempts(task_server, tid, 3)
    assert (third["minRamCount"], third["maxWalltime"]) == (3000, 1500)


def test_limit_retry_rule_added_by_admin(task_server):
    set_queue("Q1")
    user = task_server.token("user", "alice")
    denied = requests.post(task_server.url + "/api/v1/retry_rule/add", headers=task_server.headers(user),
                           json={"source": "exe", "code": 7, "action": "limit_retry", "parameter": 2})
    assert denied.status_code == 403
    rule = task_server.call("retry_rule/add", {"source": "exe", "code": 7, "action": "limit_retry", "parameter": 2,
                                               "description": "exit 7 is flaky twice at most"})["data"]
    tid = one_job_task(task_server, "limit", maxAttempt=5)
    wait_jobs(task_server, tid, 1)
    fail_next(task_server, "Q1", exeErrorCode=7, exeErrorDiag="exit 7")
    attempts(task_server, tid, 2)
    fail_next(task_server, "Q1", exeErrorCode=7, exeErrorDiag="exit 7")
    wait_status(task_server, tid, "failed")
    assert len(jobs_of(task_server, tid)) == 2
    assert any(r["id"] == rule["id"] for r in task_server.call("retry_rule/list", method="GET")["data"])


def test_retry_rule_cli(task_server):
    def cli(*args, check=True):
        proc = subprocess.run([sys.executable, "-m", "minipanda", "retry-rule", *args, "--url", task_server.url,
                               "--home", task_server.home], capture_output=True, text=True, timeout=60)
        assert not check or proc.returncode == 0, proc.stderr
        return proc

    listing = cli("list").stdout
    assert "lost heartbeat" in listing and "increase_memory" in listing and "1331" in listing
    added = json.loads(cli("add", "--source", "pilot", "--code", "1099", "--action", "no_retry", "--json").stdout)
    assert "1099" in cli("list").stdout
    cli("remove", str(added["id"]))
    assert "1099" not in cli("list").stdout
    bad = cli("add", "--action", "increase_memory", "--parameter", "0.5", check=False)
    assert bad.returncode == 1 and "increase_memory needs a factor above 1" in bad.stderr


@pytest.mark.parametrize("errors, expected", [
    ({"pilot_error_code": 1305}, (True, None)),
    ({"pilot_error_code": 1331}, (False, None)),
    ({"pilot_error_code": 1212}, (True, 3000)),
    ({"sup_error_code": 100, "sup_error_diag": "lost heartbeat"}, (True, None)),
    ({"exe_error_code": 1, "exe_error_diag": "input file x is missing"}, (False, None)),
])
def test_decide_unit(database, errors, expected):
    retry.ensure_defaults()
    job = types.SimpleNamespace(attempt_nr=1, max_attempt=3, min_ram_count=2000, max_pss=None, max_rss=None,
                                max_walltime=0, start_time=None, end_time=None, pilot_error_code=None,
                                pilot_error_diag=None, exe_error_code=None, exe_error_diag=None, sup_error_code=None,
                                sup_error_diag=None)
    for key, value in errors.items():
        setattr(job, key, value)
    verdict = retry.decide(job, retry.active_rules())
    assert (verdict.retry, verdict.ram) == expected
    job.attempt_nr = 5  # lost heartbeat: limit_retry(5) caps, maxAttempt 3 caps first
    assert not retry.decide(job, retry.active_rules()).retry
