"""The /api/v1 family over real HTTP: pilot calls, job submission (ours and panda-client's layout), kill."""
import json

import pytest
import requests
from conftest import make_job
from minipanda.core import jobspec


def call(server, path, payload=None, token=None, method="POST"):
    url = f"{server.url}/api/v1/{path}"
    if method == "GET":
        return requests.get(url, params=payload, headers=server.headers(token))
    return requests.post(url, json=payload or {}, headers=server.headers(token))


def submit(server, jobs, token=None):
    reply = call(server, "job/submit", {"jobs": jobs}, token)
    assert reply.status_code == 200, reply.text
    return [row[0] for row in reply.json()["data"]]


def test_is_alive(live_server):
    assert call(live_server, "system/is_alive", method="GET").json() == {"success": True, "message": "alive",
                                                                         "data": None}


def test_acquire_update_status_cycle(live_server):
    pids = submit(live_server, [make_job(), make_job()])
    reply = call(live_server, "pilot/acquire_jobs", {"site_name": "TEST_PQ", "computing_element": "TEST_PQ",
                                                    "prod_source_label": "managed", "node": "wn", "memory": 4000,
                                                    "n_jobs": 5, "worker_id": 3, "harvester_id": "h"}).json()
    assert reply["success"] and [j["PandaID"] for j in reply["data"]] == pids
    none = call(live_server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ"}).json()
    assert none["success"] and none["data"] == [] and "no jobs" in none["message"]
    reply = call(live_server, "pilot/update_job", {"job_id": pids[0], "job_status": "running", "pilot_id": "p"})
    assert reply.json()["data"]["command"] == "NULL"
    bulk = call(live_server, "pilot/update_jobs_bulk", {"job_list": [
        {"job_id": pids[0], "job_status": "finished", "pilot_id": "p"},
        {"job_id": pids[1], "job_status": "failed", "pilot_error_code": 1305}]}).json()["data"]
    assert [r["StatusCode"] for r in bulk] == [0, 0]
    status = call(live_server, "job/get_status", {"job_ids": pids + [77777]}).json()["data"]
    assert [(s["job_id"], s["status"]) for s in status] == [(pids[0], "finished"), (pids[1], "failed"), (77777, None)]
    status = call(live_server, "job/get_status", {"job_ids": f"{pids[0]}"}, method="GET").json()["data"]
    assert status[0]["status"] == "finished"
    assert call(live_server, "pilot/update_worker_node", {"node": "wn"}).json()["success"]


def test_submit_as_json_string_and_describe(live_server):
    pids = submit(live_server, json.dumps([make_job(jobName="s1", cloud="WORLD", processingType="x",
                                                    Files=[{"type": "input", "lfn": "in.dat", "GUID": "G",
                                                            "fsize": "10", "checksum": "ad:00000001",
                                                            "scope": "sc", "dataset": "ds"}])]))
    desc = call(live_server, "job/get_description", {"job_ids": pids + [123456]}).json()["data"]
    assert desc[1] is None
    job = desc[0]
    assert set(jobspec.JOBSPEC_ATTRIBUTES) <= set(job)
    assert (job["jobName"], job["jobStatus"], job["cloud"], job["processingType"]) == ("s1", "activated", "WORLD", "x")
    assert job["Files"][0]["lfn"] == "in.dat" and job["Files"][0]["fsize"] == 10
    pilot_view = call(live_server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ"}).json()["data"][0]
    assert (pilot_view["inFiles"], pilot_view["GUID"], pilot_view["checksum"], pilot_view["scopeIn"]) == (
        "in.dat", "G", "ad:00000001", "sc")


def test_submit_panda_client_positional_layout(live_server):
    values = ["NULL"] * len(jobspec.JOBSPEC_ATTRIBUTES)
    index = {name: i for i, name in enumerate(jobspec.JOBSPEC_ATTRIBUTES)}
    values[index["jobName"]] = "positional"
    values[index["computingSite"]] = "TEST_PQ"
    values[index["transformation"]] = "/bin/echo"
    values[index["prodSourceLabel"]] = "user"
    values[index["coreCount"]] = "1"
    values[index["creationTime"]] = {"_datetime_object": "2026-01-01 00:00:00.000000"}
    file_state = ["NULL"] * len(jobspec.FILESPEC_ATTRIBUTES) + [None]
    file_state[jobspec.FILESPEC_ATTRIBUTES.index("lfn")] = "x.log.tgz"
    file_state[jobspec.FILESPEC_ATTRIBUTES.index("type")] = "log"
    (pid,) = submit(live_server, json.dumps([values + [[file_state]]]))
    desc = call(live_server, "job/get_description", {"job_ids": [pid]}).json()["data"][0]
    assert (desc["jobName"], desc["prodSourceLabel"], desc["Files"][0]["lfn"]) == ("positional", "user", "x.log.tgz")
    bad = call(live_server, "job/submit", {"jobs": [["too", "short", []]]})
    assert bad.status_code == 400 and "126 JobSpec values" in bad.json()["message"]


@pytest.mark.parametrize("spec, message", [
    ({"transformation": "/bin/true"}, "jobs[0].computingSite: required"),
    ({"computingSite": "Q"}, "jobs[0].transformation: required"),
    ({"computingSite": "Q", "transformation": "x", "coreCount": "many"}, "jobs[0].coreCount: expected an integer"),
    ({"computingSite": "Q", "transformation": "x", "minRamCount": -1}, "jobs[0].minRamCount: must not be negative"),
    ({"computingSite": "Q", "transformation": "x", "Files": [{"type": "log", "lfn": "../etc/passwd"}]},
     "jobs[0].Files[0].lfn: expected a plain file name"),
    ({"computingSite": "Q", "transformation": "x", "Files": [{"type": "weird", "lfn": "a"}]},
     "jobs[0].Files[0].type"),
    ({"computingSite": "Q", "transformation": "x", "Files": [{"type": "log", "lfn": "a", "scope": ".."}]},
     "jobs[0].Files[0].scope"),
])
def test_bad_specs_refused_whole_batch(live_server, spec, message):
    reply = call(live_server, "job/submit", {"jobs": [make_job(), spec]})
    text = reply.json()["message"].replace("jobs[1]", "jobs[0]")
    assert reply.status_code == 400 and message in text
    assert call(live_server, "job/list", method="GET").json()["data"] == []  # the valid job was not stored either


def test_submit_limits_and_shapes(live_server):
    assert "at most 5000" in call(live_server, "job/submit", {"jobs": [{}] * 5001}).json()["message"]
    assert call(live_server, "job/submit", {"jobs": "{broken"}).status_code == 400
    assert call(live_server, "job/submit", {}).status_code == 400
    assert call(live_server, "job/submit", {"jobs": []}).status_code == 400


def test_kill_queued_and_running(live_server):
    queued, running, done = submit(live_server, [make_job(currentPriority=1), make_job(currentPriority=9),
                                                 make_job(currentPriority=5)])
    call(live_server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "n_jobs": 2})
    call(live_server, "pilot/update_job", {"job_id": done, "job_status": "finished"})
    killed = call(live_server, "job/kill", {"job_ids": [queued, running, done, 999999], "code": 9}).json()["data"]
    assert killed == [True, True, False, False]
    status = {s["job_id"]: s for s in call(live_server, "job/get_status", {"job_ids": [queued, running]}).json()["data"]}
    assert status[queued]["status"] == "cancelled"
    assert status[running]["status"] == "sent" and status[running]["command"] == "tobekilled"


def test_users_kill_only_their_own_jobs(live_server):
    alice, bob = live_server.token("user", "alice"), live_server.token("user", "bob")
    (pid,) = submit(live_server, [make_job(prodSourceLabel="user")], token=alice)
    assert call(live_server, "job/kill", {"job_ids": [pid]}, token=bob).json()["data"] == [False]
    assert call(live_server, "job/kill", {"job_ids": [pid]}, token=alice).json()["data"] == [True]
    desc = call(live_server, "job/get_description", {"job_ids": [pid]}).json()["data"][0]
    assert desc["prodUserName"] == "alice" and desc["jobStatus"] == "cancelled"


def test_list_and_status_log(live_server):
    pids = submit(live_server, [make_job(), make_job(queue="OTHER")])
    rows = call(live_server, "job/list", {"queue": "OTHER"}, method="GET").json()["data"]
    assert [r["PandaID"] for r in rows] == [pids[1]]
    log = call(live_server, "job/get_status_log", {"job_id": pids[0]}, method="GET").json()["data"]
    assert log[0]["to"] == "activated" and "submitted by admin" in log[0]["reason"]
    assert call(live_server, "job/list", {"limit": "x"}, method="GET").status_code == 400
