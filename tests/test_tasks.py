"""Task submission and task commands over real HTTP: ids, replies, validation, permissions, completion states."""
import pytest
from minipanda.core import models, states
from taskhelp import task_server  # noqa: F401 (a fixture)
from taskhelp import (acquire, add_dataset, jobs_of, run_job, set_queue, submit, task_status, update, wait_for,
                      wait_jobs, wait_status)


def flat(**overrides):
    params = {"taskName": "user.alice.t1", "exec": "cat %IN > %OUT:out.txt", "inDS": "ds.in", "nFilesPerJob": 2,
              "outputs": ["out.txt"], "nScouts": 0}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def test_submit_reply_and_ids(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 3)
    body = task_server.call("task/submit", {"task_parameters": flat(), "parent_tid": None})
    assert body["success"] and body["data"] >= 10_000_000
    assert f"jediTaskID={body['data']}" in body["message"]
    second = submit(task_server, flat(taskName="user.alice.t2"))
    assert second == body["data"] + 1
    assert task_server.call("task/get_task_parameters", {"task_id": second}, method="GET")["data"]["taskName"] == \
        "user.alice.t2"
    wait_status(task_server, second, "running")
    details = task_server.call("task/get_details", {"task_id": second, "include_parameters": "True",
                                                    "include_status": "True"}, method="GET")["data"]
    assert details["reqID"] == second and details["taskParams"]["nFilesPerJob"] == 2
    assert details["outDS"] == "user.alice.t2_out.txt"


@pytest.mark.parametrize("params, message", [
    (flat(inDS="nope"), "inDS: dataset 'nope' is not registered"),
    (flat(exec="run %FOO"), "exec: unknown placeholder %FOO"),
    (flat(nEventsPerJob=5), "nFilesPerJob, nEventsPerJob: give one of them, not both"),
    (flat(nFilesPerJob=0), "nFilesPerJob: must be at least 1"),
    (flat(nFilesPerJob=None, nJobs=-2), "nJobs: must be at least 1"),
    (flat(site="NOWHERE"), "site: queue 'NOWHERE' does not exist"),
    (flat(exec="x" * 5000), "exec: 5000 characters, longer than the limit of 4000"),
    (flat(exec="echo %RNDM"), "exec: %RNDM needs a numeric base"),
    (flat(colour="blue"), "colour: unknown parameter"),
    (flat(taskName=None), "taskName: required"),
    (flat(taskName="t2\n"), "taskName: "),  # a pattern's '$' matches before a trailing newline
    (flat(prodSourceLabel="managed"), "prodSourceLabel: 'managed' tasks need the production or admin role"),
    ({"jobParameters": [{"type": "constant", "value": "x"}], "taskName": "j", "noInput": True, "nEvents": 4,
      "buildSpec": {}}, "buildSpec: build jobs are not supported"),
    ({"jobParameters": [{"type": "constant", "value": "-l ${LIB}"}], "taskName": "j", "noInput": True,
      "nEvents": 4}, "unknown placeholder ${LIB}"),
])
def test_bad_parameters_refused_and_nothing_left(task_server, params, message):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 3)
    token = task_server.token("user", "alice")
    body = task_server.call("task/submit", {"task_parameters": params}, token)
    assert body["success"] is False and body["data"] == 4 and message in body["message"], body
    assert models.Task.select().count() == 0
    assert models.Dataset.select().count() == 1  # only the input dataset


def test_duplicate_task_name_is_code_2(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 1)
    first = submit(task_server, flat())
    body = task_server.call("task/submit", {"task_parameters": flat()})
    assert body["success"] is False and body["data"] == 2 and f"jediTaskID={first}" in body["message"]


def test_user_comes_from_token_and_commands_need_ownership(task_server):
    set_queue("Q1")
    alice, bob = task_server.token("user", "alice"), task_server.token("user", "bob")
    add_dataset(task_server, "ds.in", 4, token=alice)
    task_id = submit(task_server, flat(), token=alice)
    assert models.Task.get_by_id(task_id).user_name == "alice"
    for action in ("kill", "finish", "pause", "resume", "retry"):
        body = task_server.call(f"task/{action}", {"task_id": task_id}, bob)
        assert body["data"] == 3 and "permission denied" in body["message"], (action, body)
    missing = task_server.call("task/kill", {"task_id": 99_999_999}, alice)
    assert missing == {"success": False, "message": "jediTaskID=99999999 not found", "data": 2}
    assert task_server.call("task/kill", {"task_id": "abc"}, alice)["data"] == 101
    assert task_server.call("task/get_status", {"task_id": 99_999_999}, alice, method="GET") == {
        "success": False, "message": "Task not found", "data": None}
    assert task_server.call("task/kill", {"task_id": task_id})["data"] == 0  # admin may command any task


def test_kill_cancels_queued_and_stops_running(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 6)
    task_id = submit(task_server, flat())
    jobs = wait_jobs(task_server, task_id, 3)
    running = acquire(task_server, "Q1")[0]
    update(task_server, running["PandaID"], "running")
    body = task_server.call("task/kill", {"task_id": task_id})
    assert body["success"] and body["data"] == 0 and "2 queued jobs cancelled, 1 running" in body["message"]
    assert task_status(task_server, task_id) == "aborting"
    reply = update(task_server, running["PandaID"], "running")
    assert reply["command"] == "tobekilled"
    update(task_server, running["PandaID"], "failed", pilot_error_code=1144, pilot_error_diag="killed")
    wait_status(task_server, task_id, "aborted")
    assert {j["jobStatus"] for j in jobs_of(task_server, task_id)} == {"cancelled", "failed"}
    again = task_server.call("task/kill", {"task_id": task_id})
    assert again["data"] == 4 and "status aborted" in again["message"]
    assert len(jobs) == 3


def test_soft_finish_drains_and_hard_finish_kills(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 8)
    soft = submit(task_server, flat(nFilesPerJob=1))
    wait_jobs(task_server, soft, 8)
    taken = acquire(task_server, "Q1", n=2)
    assert task_server.call("task/finish", {"task_id": soft, "soft": True})["data"] == 0
    for job in taken:
        run_job(task_server, job)
    assert task_status(task_server, soft) == "finishing"
    for job in acquire(task_server, "Q1", n=10):  # queued jobs still run to their end
        run_job(task_server, job)
    wait_status(task_server, soft, "done")
    hard = submit(task_server, flat(taskName="hard", nFilesPerJob=4))
    wait_jobs(task_server, hard, 2)
    first = acquire(task_server, "Q1")[0]
    run_job(task_server, first)
    assert task_server.call("task/finish", {"task_id": hard})["data"] == 0
    wait_status(task_server, hard, "finished")  # partial: one job done, one cancelled
    counts = task_server.call("task/get_details", {"task_id": hard}, method="GET")["data"]
    assert (counts["nFilesFinished"], counts["nFilesFailed"]) == (4, 4)


def test_pause_resume_and_retry_rules_of_status(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 2)
    task_id = submit(task_server, flat(nFilesPerJob=1, maxAttempt=1))
    wait_jobs(task_server, task_id, 2)
    assert task_server.call("task/pause", {"task_id": task_id})["data"] == 0
    assert task_status(task_server, task_id) == "paused"
    refused = task_server.call("task/retry", {"task_id": task_id})
    assert refused["success"] is False and refused["data"] == 4  # a refusal is never a success
    assert task_server.call("task/resume", {"task_id": task_id})["data"] == 0
    assert task_status(task_server, task_id) == "running"
    assert task_server.call("task/resume", {"task_id": task_id})["data"] == 4
    ok, bad = acquire(task_server, "Q1", n=2)
    run_job(task_server, ok)
    run_job(task_server, bad, "failed", pilot_error_code=1305, pilot_error_diag="payload failed")
    wait_status(task_server, task_id, "finished")
    retried = task_server.call("task/retry", {"task_id": task_id})
    assert retried["data"] == 0 and "1 failed inputs" in retried["message"]
    new = wait_for(lambda: [j for j in jobs_of(task_server, task_id) if j["attemptNr"] == 2], "the retried job")
    assert new[0]["Files"][0]["lfn"] == bad["inFiles"] and new[0]["parentID"] == bad["PandaID"]
    assert new[0]["maxAttempt"] == 2  # a fresh round of maxAttempt (1) attempts after attempt 1
    run_job(task_server, acquire(task_server, "Q1")[0])
    wait_status(task_server, task_id, "done")
    assert task_server.call("task/retry", {"task_id": task_id})["data"] == 4  # nothing failed any more


def test_a_retry_of_another_users_task_is_refused_not_a_success(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 1)
    task_id = submit(task_server, flat())
    body = task_server.call("task/retry", {"task_id": task_id}, token=task_server.token("user", "eve"))
    assert (body["success"], body["data"]) == (False, 3) and "permission denied" in body["message"].lower()


def test_completion_failed_refuses_retry(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 1)
    task_id = submit(task_server, flat(maxAttempt=1))
    wait_jobs(task_server, task_id, 1)
    job = acquire(task_server, "Q1")[0]
    run_job(task_server, job, "failed", pilot_error_code=1305, pilot_error_diag="boom")
    wait_status(task_server, task_id, "failed")
    body = task_server.call("task/retry", {"task_id": task_id})
    assert body["data"] == 4 and "a failed task cannot be retried" in body["message"]


def test_two_users_may_use_the_same_task_name_and_errors_name_no_other_users_task(database):
    from minipanda.core.auth import Identity
    from minipanda.errors import TaskParamError
    from minipanda.tasks import service
    from taskhelp import set_queue

    set_queue("Q1")
    params = {"taskName": "same.name", "exec": "echo %RNDM:1 > %OUT:out.txt", "nJobs": 1, "outputs": ["out.txt"]}
    first = service.submit_task(dict(params), Identity("user1", "user"))
    second = service.submit_task(dict(params), Identity("user2", "user"))
    names = {d.name: d.task_id for d in models.Dataset.select()}
    assert names == {"user.user1.same.name_out.txt": first, "user.user1.same.name.log": first,
                     "user.user2.same.name_out.txt": second, "user.user2.same.name.log": second}
    with pytest.raises(TaskParamError) as again:
        service.submit_task(dict(params), Identity("user1", "user"))
    assert again.value.code == 2 and f"jediTaskID={first}" in str(again.value)
    models.Dataset.create(name="user.user3.same.name.log", user_name="user2", task_id=second, creation_time=states
                          .utcnow(), modification_time=states.utcnow())
    with pytest.raises(TaskParamError) as clash:
        service.submit_task(dict(params), Identity("user3", "user"))
    assert "another user" in str(clash.value) and str(second) not in str(clash.value)


def test_a_users_jedi_form_datasets_go_to_their_scope_and_a_managers_user_scope_is_kept(database):
    from minipanda.core.auth import Identity
    from minipanda.tasks import service
    from taskhelp import set_queue

    set_queue("Q1")

    def jedi(name):
        return {"taskName": name, "noInput": True, "nEvents": 2, "nEventsPerJob": 2, "skipScout": True,
                "prodSourceLabel": "user", "site": "Q1", "transPath": "/usr/bin/env",
                "log": {"type": "template", "param_type": "log", "dataset": f"{name}.log/",
                        "value": "x.$JEDITASKID.${SN}.log.tgz"},
                "jobParameters": [{"type": "constant", "value": "echo"},
                                  {"type": "template", "param_type": "output", "hidden": True,
                                   "dataset": f"{name}_out/", "value": "$JEDITASKID._${SN/P}.out.txt"}]}

    mine = service.submit_task(jedi("same.name"), Identity("alice", "user"))
    theirs = service.submit_task(jedi("user.bob.kept"), Identity("admin", "admin"))
    names = {d.name: d.task_id for d in models.Dataset.select()}
    assert names == {"user.alice.same.name.log/": mine, "user.alice.same.name_out/": mine,
                     "user.bob.kept.log/": theirs, "user.bob.kept_out/": theirs}
