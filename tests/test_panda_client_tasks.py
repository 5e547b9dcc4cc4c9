"""PanDA's own panda-client 2.2 against ``minipanda serve``: task submit, status, details, job ids, commands,
and pbook's task listing (panda_api.get_tasks), all through pandaclient's code in a subprocess."""
import pytest

from conftest import run_panda_client
from taskhelp import TaskServer, open_db, set_queue

pytest.importorskip("pandaclient", reason="panda-client is a test dependency: pip install -e '.[test]'")

SCRIPT = r"""
import json, re, sys, time
from pandaclient import Client, panda_api

out = {}
params = {"taskName": "user.tester.pc.001/", "vo": "wlcg", "prodSourceLabel": "user", "site": "TEST_PQ",
          "noInput": True, "nEvents": 3, "nEventsPerJob": 1, "skipScout": True, "transPath": "/bin/echo",
          "processingType": "panda-client-2.2.0-jedi-run", "cliParams": "prun --exec echo",
          "log": {"type": "template", "param_type": "log", "dataset": "user.tester.pc.001.log/",
                  "value": "user.tester.pc.001.log.$JEDITASKID.${SN}.log.tgz"},
          "jobParameters": [{"type": "constant", "value": "event ${FIRSTEVENT}"}]}
status, (code, message) = Client.insertTaskParams(params)
out["submit"] = [status, code, message]
task_id = int(re.search(r"jediTaskID=(\d+)", message).group(1))
out["bad"] = list(Client.insertTaskParams(dict(params, taskName="x", nEvents=-1)))
deadline = time.time() + 30
while time.time() < deadline:
    status, ids = Client.getPandaIDsWithTaskID(task_id)
    if ids and len(ids) == 3:
        break
    time.sleep(0.1)
out["ids"] = [status, ids]
out["status"] = list(Client.getTaskStatus(task_id))
out["missing"] = list(Client.getTaskStatus(99999999))
status, details = Client.getJediTaskDetails({"jediTaskID": task_id}, True, True)
out["details"] = [status, details["status"], details["nFiles"], details["taskParams"]["taskName"]]
status, jobs = Client.getJobStatus(ids)
out["jobs"] = [status, [[j.PandaID, j.jobStatus, j.jediTaskID, j.jobParameters] for j in jobs]]
out["since"] = list(Client.getJobIDsJediTasksInTimeRange("2000-01-01 00:00:00"))
out["pause"] = list(Client.pauseTask(task_id))
out["resume"] = list(Client.resumeTask(task_id))
tasks = panda_api.get_api().get_tasks()
out["pbook"] = [[t["jediTaskID"], t["status"], t["taskName"], t["superStatus"]] for t in tasks]
out["pbook_one"] = [t["jediTaskID"] for t in panda_api.get_api().get_tasks(task_ids=[task_id])]
out["kill"] = list(Client.killTask(task_id))
out["kill_other"] = list(Client.killTask(99999999))
out["after"] = list(Client.getTaskStatus(task_id))
out["retry"] = list(Client.retryTask(task_id))
out["finish"] = list(Client.finishTask(task_id, soft=True))
print("RESULT " + json.dumps(out, default=str))
"""


def run_client(server, token, tmp_path):
    return run_panda_client(server, token, tmp_path, SCRIPT, timeout=180)


def test_panda_client_task_calls(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url)
    try:
        open_db(server)
        set_queue("TEST_PQ")
        out = run_client(server, server.token("user", "tester"), tmp_path)
    finally:
        server.stop()
    status, code, message = out["submit"]
    assert (status, code) == (0, 0) and message.startswith("succeeded. new jediTaskID=")
    task_id = int(message.rsplit("=", 1)[1])
    assert task_id >= 10_000_000
    assert out["bad"][0] == 0 and out["bad"][1][0] == 4 and "nEvents: must be at least 1" in out["bad"][1][1]
    status, ids = out["ids"]
    assert status == 0 and len(ids) == 3
    assert out["status"] == [0, "running"] and out["missing"] == [255, None]
    assert out["details"] == [0, "running", 3, "user.tester.pc.001/"]
    status, jobs = out["jobs"]
    assert status == 0 and [j[3] for j in jobs] == ["event 1", "event 2", "event 3"]
    assert {j[1] for j in jobs} == {"activated"} and {j[2] for j in jobs} == {task_id}
    assert out["since"] == [0, {str(task_id): ids}]
    assert out["pause"] == [0, [True, 0]] and out["resume"] == [0, [True, 0]]
    assert out["pbook"] == [[task_id, "running", "user.tester.pc.001/", "running"]]
    assert out["pbook_one"] == [task_id]
    assert out["kill"] == [0, [True, 0]]
    assert out["kill_other"] == [0, [False, "jediTaskID=99999999 not found"]]
    assert out["after"][1] in ("aborting", "aborted")
    assert out["retry"][0] == 0 and out["retry"][1][0] == 4  # retry of an aborted task: irrelevant status
    assert out["finish"][0] == 0 and out["finish"][1][0] is False
