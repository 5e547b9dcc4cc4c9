"""PanDA's own panda-client 2.2 (pip install panda-client) talking to minipanda: submit, status, kill."""
import pytest

from conftest import run_panda_client

pytest.importorskip("pandaclient", reason="panda-client is a test dependency: pip install -e '.[test]'")

SCRIPT = r"""
import json, sys
from pandaclient import Client
from pandaclient.JobSpec import JobSpec
from pandaclient.FileSpec import FileSpec

out = {"hello": Client.hello()}
job = JobSpec()
job.jobName = "pc.test.1"
job.transformation = "http://pandaserver-doma.cern.ch:25080/trf/user/runme.sh"
job.jobParameters = "--n 3"
job.computingSite = "TEST_PQ"
job.prodSourceLabel = "user"
job.currentPriority = 1000
job.coreCount = 1
log = FileSpec()
log.lfn = "pc.test.1.log.tgz"
log.type = "log"
log.scope = "user.tester"
log.dataset = "user.tester.log/"
job.addFile(log)
status, data = Client.submitJobs([job])
out["submit"] = [status, data]
ids = [row[0] for row in data]
status, jobs = Client.getJobStatus(ids + [987654])
out["status"] = [status, [None if j is None else [j.PandaID, j.jobStatus, j.jobName, j.Files[0].lfn] for j in jobs]]
out["kill"] = list(Client.killJobs(ids))
status, jobs = Client.getJobStatus(ids)
out["after_kill"] = [j.jobStatus for j in jobs]
print("RESULT " + json.dumps(out, default=str))
"""


def run_client(server, token, tmp_path):
    return run_panda_client(server, token, tmp_path, SCRIPT, timeout=120)


def test_panda_client_submits_queries_and_kills(sqlite_server, tmp_path):
    token = sqlite_server.token("user", "tester")
    out = run_client(sqlite_server, token, tmp_path)
    assert out["hello"][0] == 0
    status, rows = out["submit"]
    assert status == 0 and len(rows) == 1 and rows[0][2] == "pc.test.1"
    pid = rows[0][0]
    assert out["status"] == [0, [[pid, "activated", "pc.test.1", "pc.test.1.log.tgz"], None]]
    assert out["kill"] == [0, [True]]
    assert out["after_kill"] == ["cancelled"]
    assert "job/submit 200" in sqlite_server.read_log().replace("/api/v1/", "")
