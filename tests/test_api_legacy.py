"""The legacy pilot family /server/panda/* over real HTTP on loopback: encodings, dispatch, updates, errors."""
import gzip
import json
import urllib.parse

import pytest
import requests

from conftest import make_job

PILOT_FORM = {"computingElement": "TEST_PQ", "prodSourceLabel": "managed", "mem": "24105.5625", "diskSpace": "0",
              "cpu": "2500.004", "node": "wn01", "allowOtherCountry": "False"}


def submit(server, jobs, token=None):
    reply = requests.post(server.url + "/api/v1/job/submit", json={"jobs": jobs}, headers=server.headers(token))
    assert reply.status_code == 200, reply.text
    return [row[0] for row in reply.json()["data"]]


def get_job(server, json_reply=True, token=None, **extra):
    form = dict(PILOT_FORM, **extra)
    reply = requests.post(server.url + "/server/panda/getJob", data=form, headers=server.headers(token, json_reply))
    return reply


def update(server, token=None, json_reply=True, **form):
    return requests.post(server.url + "/server/panda/updateJob", data=form, headers=server.headers(token, json_reply))


def history(server, pid):
    return requests.get(server.url + "/api/v1/job/get_status_log", params={"job_id": pid}).json()["data"]


def describe(server, pid):
    return requests.post(server.url + "/api/v1/job/get_description", json={"job_ids": [pid]}).json()["data"][0]


def test_getjob_form_body_urlencoded_reply(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job(jobName="enc")])
    reply = get_job(sqlite_server, json_reply=False)
    fields = dict(urllib.parse.parse_qsl(reply.text))
    assert reply.text.startswith("StatusCode=0") or fields["StatusCode"] == "0"
    assert fields["PandaID"] == str(pid) and fields["jobName"] == "enc" and fields["logFile"] == "log.tgz"


def test_getjob_gzipped_json_body_json_reply(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    body = gzip.compress(json.dumps(PILOT_FORM).encode())
    headers = dict(sqlite_server.headers(), **{"Content-Type": "application/json", "Content-Encoding": "gzip"})
    reply = requests.post(sqlite_server.url + "/server/panda/getJob", data=body, headers=headers).json()
    assert reply["StatusCode"] == 0 and reply["PandaID"] == pid
    for key in ("jobPars", "transformation", "inFiles", "outFiles", "scopeOut", "logGUID", "coreCount",
                "minRamCount", "maxWalltime", "attemptNr", "taskID", "jobsetID", "prodSourceLabel"):
        assert key in reply


def test_getjob_bulk_returns_jobs_list(sqlite_server):
    pids = submit(sqlite_server, [make_job() for _ in range(5)])
    reply = get_job(sqlite_server, nJobs="3").json()
    assert reply["StatusCode"] == 0 and [j["PandaID"] for j in reply["jobs"]] == pids[:3]
    reply = get_job(sqlite_server, nJobs="10").json()
    assert [j["PandaID"] for j in reply["jobs"]] == pids[3:]
    reply = get_job(sqlite_server, nJobs="10").json()
    assert reply["StatusCode"] == 20 and reply["jobs"] == []


def test_no_job_is_statuscode_20(sqlite_server):
    assert get_job(sqlite_server).json()["StatusCode"] == 20


def test_priority_then_oldest(sqlite_server):
    low, high1, high2 = submit(sqlite_server, [make_job(currentPriority=10), make_job(currentPriority=500),
                                               make_job(currentPriority=500)])
    order = [get_job(sqlite_server).json()["PandaID"] for _ in range(3)]
    assert order == [high1, high2, low]


def test_resource_fit(sqlite_server):
    big_mem, multi_core, long_job, big_disk = submit(sqlite_server, [
        make_job(minRamCount=8000), make_job(coreCount=8), make_job(maxWalltime=7200), make_job(maxDiskCount=5000)])
    offer = dict(mem="4000", coreCount="4", remainingTime="3600", diskSpace="1000")
    assert get_job(sqlite_server, **offer).json()["StatusCode"] == 20
    assert get_job(sqlite_server, **dict(offer, mem="9000")).json()["PandaID"] == big_mem
    assert get_job(sqlite_server, **dict(offer, coreCount="8")).json()["PandaID"] == multi_core
    assert get_job(sqlite_server, **dict(offer, remainingTime="8000")).json()["PandaID"] == long_job
    # diskSpace=0 (pilot3 with no maxwdir) means "unknown", not "full"
    assert get_job(sqlite_server, **dict(offer, diskSpace="0")).json()["PandaID"] == big_disk


def test_queue_corecount_limits_pilots_that_do_not_say(sqlite_server):
    submit(sqlite_server, [make_job(coreCount=8)])  # default queuedata: corecount 1
    assert get_job(sqlite_server).json()["StatusCode"] == 20


def test_label_and_queue_matching(sqlite_server):
    user_job, other_queue = submit(sqlite_server, [make_job(prodSourceLabel="user"), make_job(queue="OTHER")])
    assert get_job(sqlite_server).json()["StatusCode"] == 20  # managed pilot, user job
    assert get_job(sqlite_server, prodSourceLabel="user").json()["PandaID"] == user_job
    form = dict(PILOT_FORM, siteName="OTHER")
    del form["computingElement"]
    reply = requests.post(sqlite_server.url + "/server/panda/getJob", data=form, headers=sqlite_server.headers())
    assert reply.json()["PandaID"] == other_queue


def test_dispatch_stamps_pilot_node_batch(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server, pilotID="pilot-7", batchID="slurm.99", harvester_id="h1", worker_id="12")
    desc = describe(sqlite_server, pid)
    assert (desc["jobStatus"], desc["pilotID"], desc["batchID"], desc["modificationHost"]) == (
        "sent", "pilot-7", "slurm.99", "wn01")
    assert desc["startTime"] is not None


def run_to(server, pid, *steps, pilot="p1"):
    for state in steps:
        reply = update(server, jobId=str(pid), state=state, pilotID=pilot, attemptNr="0").json()
        assert reply["StatusCode"] == 0 and reply["command"] == "NULL", reply
    return reply


def test_full_lifecycle_with_metrics_and_files(sqlite_server):
    job = make_job(Files=[{"type": "output", "lfn": "out.txt", "scope": "s"}, {"type": "log", "lfn": "l.tgz"}])
    (pid,) = submit(sqlite_server, [job])
    get_job(sqlite_server)
    run_to(sqlite_server, pid, "starting", "running", "running")
    xml = json.dumps({"out.txt": {"guid": "g-1", "fsize": "42", "adler32": "0a0b0c0d", "surl": "/data/out.txt"},
                      "l.tgz": {"guid": "g-2", "fsize": 99, "adler32": "01020304"}})
    reply = update(sqlite_server, jobId=str(pid), state="finished", pilotID="p1", transExitCode="0",
                   pilotErrorCode="0", exeErrorCode="0", cpuConsumptionTime="12.5", maxRSS="1234", maxPSS="1000",
                   nEvents="7", node="wn01", xml=xml, metaData='{"exitCode": 0}', pilotTiming="1|2|3|4|5").json()
    assert reply == {"StatusCode": 0, "command": "NULL"}
    desc = describe(sqlite_server, pid)
    assert desc["jobStatus"] == "finished" and desc["endTime"] is not None
    assert (desc["cpuConsumptionTime"], desc["maxRSS"], desc["nEvents"], desc["transExitCode"]) == (12, 1234, 7, 0)
    files = {f["lfn"]: f for f in desc["Files"]}
    assert files["out.txt"]["fsize"] == 42 and files["out.txt"]["checksum"] == "ad:0a0b0c0d"
    assert files["out.txt"]["GUID"] == "g-1" and files["out.txt"]["status"] == "finished"
    assert [h["to"] for h in history(sqlite_server, pid)] == ["activated", "sent", "starting", "running", "finished"]


def test_job_report_kept_whole_or_refused(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server)
    report = json.dumps({"exitCode": 0, "blob": "x" * 10000})
    assert update(sqlite_server, jobId=str(pid), state="running", pilotID="p", metaData=report).json()["StatusCode"] == 0
    assert json.loads(describe(sqlite_server, pid)["metadata"]) == json.loads(report)
    huge = update(sqlite_server, jobId=str(pid), state="running", pilotID="p", metaData="y" * (1024 * 1024 + 1))
    assert huge.status_code == 400 and "metaData" in huge.json()["ErrorDiag"]


def test_failed_with_diagnostics(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server)
    reply = update(sqlite_server, jobId=str(pid), state="failed", pilotID="p1", pilotErrorCode="1305",
                   pilotErrorDiag="payload failed", transExitCode="3", exeErrorCode="3", exeErrorDiag="x" * 9000)
    assert reply.json()["StatusCode"] == 0
    desc = describe(sqlite_server, pid)
    assert (desc["jobStatus"], desc["pilotErrorCode"], desc["transExitCode"]) == ("failed", 1305, 3)
    assert len(desc["exeErrorDiag"]) == 4000


def test_repeated_final_update_is_already_done(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server)
    run_to(sqlite_server, pid, "running", "finished")
    before = history(sqlite_server, pid)
    reply = update(sqlite_server, jobId=str(pid), state="finished", pilotID="p1", transExitCode="5").json()
    assert reply["StatusCode"] == 0 and reply.get("alreadyDone") is True and "alreadydone" in reply["ErrorDiag"]
    assert history(sqlite_server, pid) == before
    assert describe(sqlite_server, pid)["transExitCode"] is None


def test_transition_regression_refused_and_nothing_written(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server)
    run_to(sqlite_server, pid, "running", "transferring")
    reply = update(sqlite_server, jobId=str(pid), state="running", pilotID="p1", maxRSS="5")
    assert reply.status_code == 409 and reply.json()["StatusCode"] == 50
    assert "transferring -> running" in reply.json()["ErrorDiag"]
    desc = describe(sqlite_server, pid)
    assert desc["jobStatus"] == "transferring" and desc["maxRSS"] is None


def test_tobekilled_unknown_job(sqlite_server):
    reply = update(sqlite_server, jobId="999999", state="running").json()
    assert reply["command"] == "tobekilled"


def test_tobekilled_other_attempt_and_other_pilot(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server, pilotID="pilot-A", batchID="b1")
    assert update(sqlite_server, jobId=str(pid), state="running", attemptNr="2",
                  pilotID="pilot-A").json()["command"] == "tobekilled"
    assert update(sqlite_server, jobId=str(pid), state="running", pilotID="pilot-B").json()["command"] == "tobekilled"
    assert update(sqlite_server, jobId=str(pid), state="running", pilotID="pilot-A",
                  batchID="b2").json()["command"] == "tobekilled"
    assert describe(sqlite_server, pid)["jobStatus"] == "sent"
    assert update(sqlite_server, jobId=str(pid), state="running", pilotID="pilot-A",
                  batchID="b1").json()["command"] == "NULL"


def test_first_reporting_pilot_owns_a_job_dispatched_without_pilot_id(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server)  # pilot3 sends no pilotID with getJob
    assert update(sqlite_server, jobId=str(pid), state="starting", pilotID="pilot3|PR|1").json()["command"] == "NULL"
    assert update(sqlite_server, jobId=str(pid), state="running", pilotID="other").json()["command"] == "tobekilled"


def test_tobekilled_after_kill_then_failed_accepted(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server)
    run_to(sqlite_server, pid, "running")
    killed = requests.post(sqlite_server.url + "/api/v1/job/kill", json={"job_ids": [pid]},
                           headers=sqlite_server.headers()).json()
    assert killed["data"] == [True]
    assert update(sqlite_server, jobId=str(pid), state="running", pilotID="p1").json()["command"] == "tobekilled"
    reply = update(sqlite_server, jobId=str(pid), state="failed", pilotID="p1", pilotErrorCode="1144").json()
    assert reply["StatusCode"] == 0
    desc = describe(sqlite_server, pid)
    assert desc["jobStatus"] == "failed" and desc["pilotErrorCode"] == 1144
    assert update(sqlite_server, jobId=str(pid), state="running", pilotID="p1").json()["command"] == "tobekilled"


@pytest.mark.parametrize("form, message", [
    ({"state": "running"}, "jobId: required"),
    ({"jobId": "12abc", "state": "running"}, "jobId: expected an integer"),
    ({"jobId": "1", "state": "exploded"}, "state: expected one of"),
    ({"jobId": "1", "state": "running", "maxRSS": "lots"}, "maxRSS: expected an integer"),
    ({"jobId": "1", "state": "finished", "xml": "<xml/>"}, "xml: expected JSON"),
])
def test_bad_update_input_named_and_nothing_written(sqlite_server, form, message):
    (pid,) = submit(sqlite_server, [make_job()])
    get_job(sqlite_server)
    form = dict(form, jobId=form["jobId"].replace("1", str(pid), 1)) if "jobId" in form and form["jobId"] == "1" \
        else form
    reply = update(sqlite_server, **form)
    assert 400 <= reply.status_code < 500
    assert message in reply.json()["ErrorDiag"]
    assert describe(sqlite_server, pid)["jobStatus"] == "sent"
    assert len(history(sqlite_server, pid)) == 2


def test_update_on_never_dispatched_job_refused(sqlite_server):
    (pid,) = submit(sqlite_server, [make_job()])
    reply = update(sqlite_server, jobId=str(pid), state="running")
    assert reply.status_code == 409 and "never dispatched" in reply.json()["ErrorDiag"]


def test_getjob_bad_numbers_named(sqlite_server):
    reply = get_job(sqlite_server, mem="plenty")
    assert reply.status_code == 400 and "mem: expected an integer" in reply.json()["ErrorDiag"]
    form = dict(PILOT_FORM)
    del form["computingElement"]
    reply = requests.post(sqlite_server.url + "/server/panda/getJob", data=form, headers=sqlite_server.headers())
    assert reply.status_code == 400 and reply.json()["StatusCode"] == 80


def test_malformed_bodies(sqlite_server):
    headers = dict(sqlite_server.headers(), **{"Content-Type": "application/json"})
    reply = requests.post(sqlite_server.url + "/server/panda/getJob", data=b"{not json", headers=headers)
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["ErrorDiag"]
    reply = requests.post(sqlite_server.url + "/server/panda/getJob", data=b"\x1f\x8b garbage",
                          headers=dict(headers, **{"Content-Encoding": "gzip"}))
    assert reply.status_code == 400 and "gzip" in reply.json()["ErrorDiag"]
    reply = requests.post(sqlite_server.url + "/server/panda/getJob", data=b"[1,2]", headers=headers)
    assert reply.status_code == 400 and "JSON object" in reply.json()["ErrorDiag"]


def test_oversized_body_refused(tmp_path):
    from conftest import LiveServer

    class SmallBodies(LiveServer):
        def argv(self):
            return super().argv() + ["--max-body-mb", "0.01"]

    server = SmallBodies(tmp_path / "h", "sqlite:///" + str(tmp_path / "h" / "m.db"))
    try:
        big = {"jobId": "1", "state": "running", "pilotErrorDiag": "x" * 20000}
        reply = requests.post(server.url + "/server/panda/updateJob", data=big, headers=server.headers())
        assert reply.status_code == 413 and "larger than" in reply.json()["ErrorDiag"]
        bomb = gzip.compress(json.dumps({"jobId": "1", "x": "y" * 1_000_000}).encode())
        reply = requests.post(server.url + "/server/panda/updateJob", data=bomb,
                              headers=dict(server.headers(), **{"Content-Encoding": "gzip"}))
        assert reply.status_code == 413
    finally:
        server.stop()


def test_get_status_bulk_worker_resource_types_alive(sqlite_server):
    a, b = submit(sqlite_server, [make_job(), make_job()])
    reply = requests.post(sqlite_server.url + "/server/panda/getStatus", data={"ids": f"{a},{b},424242"},
                          headers={"Accept": "application/json"}).json()
    assert reply["status"] == ["activated", "activated", None]
    get_job(sqlite_server, nJobs="2")
    job_list = json.dumps([{"jobId": a, "state": "running", "pilotID": "p"}, {"jobId": b, "state": "bogus"},
                           {"jobId": "x"}])
    reply = requests.post(sqlite_server.url + "/server/panda/updateJobsInBulk", data={"jobList": job_list},
                          headers=sqlite_server.headers()).json()
    codes = [r["StatusCode"] for r in reply["results"]]
    assert codes[0] == 0 and codes[1] == 50 and codes[2] == 50 and "jobList[2]" in reply["results"][2]["ErrorDiag"]
    reply = requests.post(sqlite_server.url + "/server/panda/updateWorkerPilotStatus", headers=sqlite_server.headers(),
                          data={"workerID": "7", "harvesterID": "h1", "status": "started", "site": "TEST_PQ"})
    assert reply.json() == {"StatusCode": 0}
    reply = requests.post(sqlite_server.url + "/server/panda/updateWorkerPilotStatus", headers=sqlite_server.headers(),
                          data={"workerID": "7", "harvesterID": "h1", "status": "sleeping"})
    assert reply.status_code == 400 and "status: expected" in reply.json()["ErrorDiag"]
    types = requests.get(sqlite_server.url + "/server/panda/getResourceTypes", headers={"Accept": "application/json"})
    assert {t["resource_name"] for t in types.json()["ResourceTypes"]} >= {"SCORE", "MCORE"}
    assert requests.get(sqlite_server.url + "/server/panda/isAlive").text == "alive=yes"


def test_unknown_method_is_json_404(sqlite_server):
    reply = requests.post(sqlite_server.url + "/server/panda/noSuchMethod")
    assert reply.status_code == 404 and reply.json()["success"] is False


def test_queuedata_and_trf(sqlite_server):
    submit(sqlite_server, [make_job()])
    data = requests.get(sqlite_server.url + "/cache/schedconfig/TEST_PQ.all.json").json()
    assert data["nickname"] == "TEST_PQ" and data["state"] == "ACTIVE" and data["atlas_site"]
    assert "TEST_PQ" in requests.get(sqlite_server.url + "/cache/schedconfig.json").json()
    fresh = requests.get(sqlite_server.url + "/cache/schedconfig/NEW_Q.all.json")  # no queue file: defaults
    assert fresh.status_code == 200 and fresh.json()["nickname"] == "NEW_Q"
    assert requests.get(sqlite_server.url + "/cache/schedconfig/bad%20name.all.json").status_code == 400
    assert requests.get(sqlite_server.url + "/cache/schedconfig/TEST_PQ%0A.all.json").status_code == 400
    import os

    with open(os.path.join(sqlite_server.home, "trf", "runme.sh"), "w") as handle:
        handle.write("#!/bin/sh\necho hi\n")
    assert requests.get(sqlite_server.url + "/trf/user/runme.sh").text == "#!/bin/sh\necho hi\n"
    for bad in ("..%2Fminipanda.db", "%2E%2E", ".hidden", "secret.key%00"):
        assert requests.get(sqlite_server.url + "/trf/user/" + bad).status_code in (400, 404)
