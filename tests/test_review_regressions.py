"""Regressions for defects found in review: each test failed before its fix."""
import json

import pytest
import requests
from minipanda import errors
from minipanda.core import models, states
from minipanda.core.auth import Identity
from minipanda.errors import TaskParamError
from minipanda.tasks import generator, service
from minipanda.tasks.settings import Settings
from taskhelp import TaskServer, open_db, set_queue, submit, wait_for

ALICE = Identity("alice", "user")


def test_generator_stops_when_the_task_is_paused_mid_cycle(database):
    set_queue("Q1")
    service.submit_task({"taskName": "guard", "exec": "x", "nJobs": 4, "nScouts": 0}, ALICE)
    tid = models.Task.select().where(models.Task.task_name == "guard").get().jedi_task_id
    task = models.Task.get_by_id(tid)
    spec, now = json.loads(task.spec), states.utcnow()
    assert generator.define(task, spec, now)
    with database.atomic():
        states.change_task_status([tid], states.TaskStatus.RUNNING, "test", from_states=["ready"])
    stale = models.Task.get_by_id(tid)  # what a generator cycle read before the pause
    assert service.command(tid, ALICE, "pause")[0] == 0
    with pytest.raises(errors.TaskChanged):
        generator.generate(stale, spec, Settings(), now)
    assert models.Job.select().where(models.Job.task_id == tid).count() == 0


def test_killed_running_task_job_is_not_retried(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url)
    try:
        open_db(server)
        set_queue("Q1")
        tid = submit(server, {"taskName": "killone", "exec": "x", "nJobs": 1, "nScouts": 0, "maxAttempt": 3,
                              "prodSourceLabel": "managed"})
        pid = wait_for(lambda: [j.panda_id for j in models.Job.select().where(models.Job.task_id == tid)], "job")[0]
        headers = server.headers()
        requests.post(server.url + "/server/panda/getJob", data={"computingElement": "Q1", "node": "n"},
                      headers=headers)
        requests.post(server.url + "/server/panda/updateJob", data={"jobId": pid, "state": "running"},
                      headers=headers)
        assert server.call("job/kill", {"job_ids": [pid]})["data"] == [True]
        requests.post(server.url + "/server/panda/updateJob", data={"jobId": pid, "state": "failed",
                                                                     "pilotErrorCode": 1144}, headers=headers)
        wait_for(lambda: models.Job.get_by_id(pid).settled, "the killed job settled")
        assert models.Job.select().where(models.Job.task_id == tid).count() == 1
    finally:
        server.stop()


def test_queue_label_groups_agree_between_brokerage_and_dispatch(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url)
    try:
        open_db(server)
        set_queue("QU", prodsourcelabels=["user"])
        tid = submit(server, {"taskName": "panda.label", "exec": "x", "nJobs": 1, "nScouts": 0,
                              "prodSourceLabel": "panda"})
        pid = wait_for(lambda: [j.panda_id for j in models.Job.select().where(models.Job.task_id == tid)], "job")[0]
        wait_for(lambda: models.Job.get_by_id(pid).status == "activated", "brokered to QU")
        reply = requests.post(server.url + "/server/panda/getJob", headers=server.headers(),
                              data={"computingElement": "QU", "prodSourceLabel": "user", "node": "n"}).json()
        assert reply.get("PandaID") == pid, reply
    finally:
        server.stop()


@pytest.mark.parametrize("log, outputs, message", [
    ({"type": "template", "value": "x.${SN}.log.tgz", "dataset": ["a"]}, [], "log.dataset: dataset name"),
    ({"type": "template", "value": "x.${SN}.log.tgz", "dataset": "same"},
     [{"type": "template", "param_type": "output", "value": "o.${SN}.txt", "dataset": "same"}],
     "named twice in this task"),
])
def test_bad_task_dataset_names_are_refused(database, log, outputs, message):
    set_queue("Q1")
    params = {"taskName": "jedi.ds", "vo": "wlcg", "prodSourceLabel": "user", "site": "Q1", "noInput": True,
              "nEvents": 1, "nEventsPerJob": 1, "log": log,
              "jobParameters": [{"type": "constant", "value": "run"}] + outputs}
    with pytest.raises(TaskParamError, match=message):
        service.submit_task(params, ALICE)
    assert models.Task.select().count() == 0


def test_include_patterns_are_wildcards_not_regexes(database):
    set_queue("Q1")
    params = {"taskName": "re.dos", "vo": "wlcg", "prodSourceLabel": "user", "site": "Q1",
              "log": {"type": "template", "value": "x.${SN}.log.tgz", "dataset": "re.dos.log"},
              "jobParameters": [{"type": "template", "param_type": "input", "value": "${IN}", "dataset": "in",
                                 "include": "(a+)+$"}]}
    with pytest.raises(TaskParamError, match="shell-style wildcards"):
        service.submit_task(params, ALICE)
