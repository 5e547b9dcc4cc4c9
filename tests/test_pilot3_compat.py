"""PanDA's own pilot3 (PyPI panda-pilot 3.7.0.36) as the real client of the legacy family.

pilot3 kills every orphan process of its user at job end, so it runs only through tests/pilot3/harness.py:
PILOT_NOKILL=1 inside its own PID namespace (unshare -pf --mount-proc --kill-child).
"""
import os
import time

import pytest
import requests

from pilot3.harness import pilot3_or_skip, start_pilot3

pytestmark = pytest.mark.pilot3

TRF_URL = "http://pandaserver-doma.cern.ch:25080/trf/user/runme.sh"
RUNME = ("#!/bin/sh\necho \"payload args: $*\"\necho 'a line on stderr' >&2\necho result > out.txt\n"
         "exit \"$1\"\n")


@pytest.fixture(scope="module")
def pilot3():
    return pilot3_or_skip()


def prepare(server, job_pars, queue="TEST_PQ", files=()):
    with open(os.path.join(server.home, "trf", "runme.sh"), "w") as handle:
        handle.write(RUNME)
    job = {"jobName": "pilot3.probe", "computingSite": queue, "prodSourceLabel": "managed",
           "transformation": TRF_URL, "jobParameters": job_pars, "coreCount": 1, "minRamCount": 100,
           "Files": list(files)}
    reply = requests.post(server.url + "/api/v1/job/submit", json={"jobs": [job]}, headers=server.headers())
    return reply.json()["data"][0][0]


def pilot_env(server, tmp_path):
    """pilot3 sends a bearer token when PANDA_AUTH_TOKEN (a file name) and PANDA_AUTH_ORIGIN are both set."""
    token_dir = tmp_path / "auth"
    token_dir.mkdir()
    (token_dir / "pilot.token").write_text(server.token("pilot", "pilot3"))
    return {"PANDA_AUTH_TOKEN": "pilot.token", "PANDA_AUTH_DIR": str(token_dir / "anything"),
            "PANDA_AUTH_ORIGIN": "minipanda"}


def wait_final(server, pid, run, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = requests.post(server.url + "/api/v1/job/get_status", json={"job_ids": [pid]}).json()["data"][0]
        if status["status"] in ("finished", "failed"):
            return status["status"]
        if run.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"job {pid} not final; pilot rc={run.poll()}\n{run.result().stdout[-4000:]}\n"
                f"server log:\n{server.read_log()[-3000:]}")


def describe(server, pid):
    return requests.post(server.url + "/api/v1/job/get_description", json={"job_ids": [pid]}).json()["data"][0]


def transitions(server, pid):
    log = requests.get(server.url + "/api/v1/job/get_status_log", params={"job_id": pid}).json()["data"]
    return [h["to"] for h in log]


def test_pilot3_runs_a_job_to_finished(sqlite_server, pilot3, tmp_path):
    pid = prepare(sqlite_server, "0")
    with start_pilot3(pilot3, sqlite_server.url, "TEST_PQ", tmp_path / "pilot",
                      extra_env=pilot_env(sqlite_server, tmp_path)) as run:
        assert wait_final(sqlite_server, pid, run) == "finished"
    job = describe(sqlite_server, pid)
    assert job["transExitCode"] == 0 and job["pilotErrorCode"] == 0
    assert "PR|3.7.0.36" in job["pilotID"] and job["modificationHost"]
    assert transitions(sqlite_server, pid) == ["activated", "sent", "starting", "running", "finished"]
    log = sqlite_server.read_log()
    assert "GET /cache/schedconfig/TEST_PQ.all.json 200" in log and "GET /trf/user/runme.sh 200" in log
    payload_out = list((tmp_path / "pilot").glob("PanDA_Pilot3_*/PanDA_Pilot-*/payload.stdout"))
    assert payload_out and "payload args: 0" in payload_out[0].read_text()


def test_pilot3_reports_a_failing_payload(sqlite_server, pilot3, tmp_path):
    pid = prepare(sqlite_server, "3")
    # fast_fail cuts pilot3's fixed 115 s wait after a failed job (see tests/pilot3/NOTES.md); the reports are the same
    with start_pilot3(pilot3, sqlite_server.url, "TEST_PQ", tmp_path / "pilot", fast_fail=True,
                      extra_env=pilot_env(sqlite_server, tmp_path)) as run:
        assert wait_final(sqlite_server, pid, run) == "failed"
    job = describe(sqlite_server, pid)
    assert (job["pilotErrorCode"], job["transExitCode"]) == (1305, 3)
    assert transitions(sqlite_server, pid)[-1] == "failed"


def test_pilot3_without_token_is_refused(sqlite_server, pilot3, tmp_path):
    pid = prepare(sqlite_server, "0")
    with start_pilot3(pilot3, sqlite_server.url, "TEST_PQ", tmp_path / "pilot") as run:
        deadline = time.time() + 60
        while "POST /server/panda/getJob 401" not in sqlite_server.read_log() and time.time() < deadline:
            time.sleep(0.5)
        run.kill()
    assert "POST /server/panda/getJob 401" in sqlite_server.read_log()
    assert describe(sqlite_server, pid)["jobStatus"] == "activated"


def test_pilot3_stages_out_to_a_configured_queue(tmp_path, pilot3):
    """Queuedata from a queue configuration file is what pilot3 needs to stage a log and an output out."""
    from conftest import LiveServer

    outdir = tmp_path / "storage"
    outdir.mkdir()
    queues = tmp_path / "queues.yaml"
    queues.write_text("queues:\n  SHARED_Q:\n    storage:\n      output: {type: shared, path: %s}\n" % outdir)

    class Server(LiveServer):
        def argv(self):
            return super().argv() + ["--queues", str(queues)]

    server = Server(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "minipanda.db"))
    try:
        files = [{"type": "output", "lfn": "out.txt", "scope": "test"},
                 {"type": "log", "lfn": "probe.log.tgz", "scope": "test"}]
        pid = prepare(server, "0", queue="SHARED_Q", files=files)
        with start_pilot3(pilot3, server.url, "SHARED_Q", tmp_path / "pilot", extra_args=["--output-dir", str(outdir)],
                          extra_env=pilot_env(server, tmp_path)) as run:
            assert wait_final(server, pid, run) == "finished"
        stored = {f["lfn"]: f for f in describe(server, pid)["Files"]}
        for lfn in ("out.txt", "probe.log.tgz"):
            assert stored[lfn]["status"] == "finished" and stored[lfn]["fsize"] > 0
            assert stored[lfn]["checksum"].startswith("ad:")
        landed = {path.name for path in outdir.rglob("*") if path.is_file()}
        assert {"out.txt", "probe.log.tgz"} <= landed
    finally:
        server.stop()
