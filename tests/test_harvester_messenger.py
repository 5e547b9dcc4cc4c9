"""The harvester side of the shared-file handoff, against the real pilot zipapp (file mode and pull mode)."""
import json
import os
import subprocess
import sys
import time

import pytest

from harvester.messenger import PILOT3_TRF_BASE, SCHEDCONFIG_FILE, Messenger, MessengerError
from pilot.comm import ServerClient
from pilot.fileutil import adler32
from pilot.outbox import Outbox
from test_pilot_harness import FAST_QUEUEDATA, QUEUE

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures

SCRIPT = b"#!/bin/sh\ncat in.dat > out.dat\necho \"$PandaID\" >> out.dat\n"


def queuedata(**overrides):
    return dict(FAST_QUEUEDATA, nickname=QUEUE, name=QUEUE, atlas_site="SITE", state="ACTIVE", status="online",
                **overrides)


def storage(tmp_path):
    return {"input": {"type": "shared", "path": str(tmp_path / "in")},
            "output": {"type": "shared", "path": str(tmp_path / "out")}}


def file_job(panda_id=4242, **overrides):
    (job := {"PandaID": panda_id, "attemptNr": 1, "transformation": "https://panda.example.org/trf/user/make.sh",
             "jobPars": "", "inFiles": "in.dat", "scopeIn": "data", "GUID": "g-in", "fsize": "6",
             "checksum": "", "outFiles": "out.dat,log.tgz", "scopeOut": "user", "logFile": "log.tgz",
             "scopeLog": "user", "coreCount": 1, "maxWalltime": 600}).update(overrides)
    return job


def run_pilot(zipapp, ap, qd_path, *extra, timeout=120):
    # No reachable server: port 9 has no listener, and -z makes no HTTP call anyway.
    argv = [sys.executable, zipapp, "-q", QUEUE, "-z", "--harvester-workdir", str(ap), "--harvester-submit-mode",
            "PUSH", "-a", str(ap), "--queuedata", qd_path, "--url", "http://127.0.0.1:9", "-l", "600", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=str(ap))
    return proc.returncode, proc.stderr


def test_file_mode_round_trip_with_the_real_pilot(zipapp_path, tmp_path):
    ap, store = tmp_path / "ap", storage(tmp_path)
    (tmp_path / "in" / "data").mkdir(parents=True)
    (tmp_path / "in" / "data" / "in.dat").write_text("input\n")
    m = Messenger(str(ap), {"job": "pandaJobData.out"})
    qd_path = m.setup(queuedata())
    assert json.load(open(qd_path))["nickname"] == QUEUE
    assert json.load(open(ap / SCHEDCONFIG_FILE))[QUEUE]["atlas_site"] == "SITE"
    job = file_job()
    fetched = []
    trf = m.put_transformation(job, lambda path: fetched.append(path) or SCRIPT)
    assert fetched == ["/trf/user/make.sh"] and trf == str(ap / "make.sh") and os.access(trf, os.X_OK)
    assert m.stage_in(job, store, "symlink") == [str(ap / "in.dat")]
    assert os.readlink(ap / "in.dat") == str(tmp_path / "in" / "data" / "in.dat")
    assert m.feed_jobs([job]) is True
    fed = json.loads((ap / "pandaJobData.out").read_text())
    assert fed["4242"]["transformation"] == PILOT3_TRF_BASE + "make.sh"  # pilot3's whitelist; ours ignores hosts
    assert job["transformation"].startswith("https://panda.example.org")  # the caller's dict is untouched
    assert m.feed_jobs([file_job(4243)]) is False  # the pilot has not taken the first one
    assert json.loads((ap / "pandaJobData.out").read_text()) == fed
    assert m.panda_ids() == [4242]

    code, log = run_pilot(zipapp_path, ap, qd_path)
    assert code == 0, log
    assert not (ap / "pandaJobData.out").exists() and m.job_requested() == 0
    assert m.kill_worker_requested() and m.last_heartbeat() is not None
    attributes = m.read_attributes()
    assert attributes["jobStatus"] == "finished" and attributes["jobId"] == 4242
    assert m.read_job_report()["exitCode"] == 0
    assert {e["type"] for e in m.read_event_status()["4242"]} == {"output", "log"}

    reports = m.final_reports(store)
    assert len(reports) == 1
    report = reports[0]
    assert (report["jobId"], report["state"], report["attemptNr"], report["pilotErrorCode"]) == (
        4242, "finished", 1, 0)
    assert "jobStatus" not in report and report["transExitCode"] == 0 and "pilotTiming" in report
    files = json.loads(report["xml"])
    out = tmp_path / "out" / "user" / "out.dat"
    assert files["out.dat"]["surl"] == str(out) and out.read_text() == "input\n4242\n"
    assert files["out.dat"]["adler32"] == adler32(str(out)) and files["out.dat"]["fsize"] == out.stat().st_size
    assert files["log.tgz"]["surl"] == str(tmp_path / "out" / "user" / "log.tgz")
    assert not (ap / "user" / "out.dat").exists()  # moved, not copied
    assert m.final_reports(store) == reports  # a repeat (harvester restarted) finds them where they went


def test_multi_job_pilot_keeps_each_jobs_final_attributes(zipapp_path, tmp_path):
    ap = tmp_path / "ap"
    m = Messenger(str(ap))
    qd_path = m.setup(queuedata(timefloor=10, pilot_handoff_wait=0.5))
    jobs = [{"PandaID": i, "transformation": "/bin/sh", "jobPars": f"-c 'exit {i - 1}'"} for i in (1, 2)]
    assert m.feed_jobs(jobs)
    code, log = run_pilot(zipapp_path, ap, qd_path)
    assert code == 0, log
    reports = {r["jobId"]: r for r in m.final_reports()}
    assert (reports[1]["state"], reports[2]["state"]) == ("finished", "failed")
    assert reports[2]["transExitCode"] == 1 and reports[2]["pilotErrorCode"] == 1305
    assert "xml" not in reports[1]  # no outputs, no log declared


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "a\0b", "..", "-rf"])
def test_unsafe_input_names_are_refused(tmp_path, name):
    m = Messenger(str(tmp_path / "ap"))
    m.setup(queuedata())
    (tmp_path / "in").mkdir()
    with pytest.raises(MessengerError, match="not a plain file name"):
        m.stage_in(file_job(inFiles=name, scopeIn=""), storage(tmp_path), "copy")
    with pytest.raises(MessengerError, match="scopeIn"):
        m.stage_in(file_job(scopeIn=name), storage(tmp_path), "copy")
    assert sorted(os.listdir(tmp_path / "ap")) == ["queuedata.json", "schedconfig.json"]


def test_unsafe_output_paths_and_transformations_are_refused(tmp_path):
    ap = tmp_path / "ap"
    m = Messenger(str(ap))
    m.setup(queuedata())
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", ap / "link.dat")
    (ap / "a" / "b").mkdir(parents=True)
    (ap / "a" / "b" / "c.dat").write_text("x")
    for path in ["/etc/passwd", f"{ap}/../secret", f"{ap}/a/b/c.dat", f"{ap}/x\0y", "rel.dat", f"{ap}/-x",
                 f"{ap}/link.dat", f"{ap}/missing.dat", None]:
        with pytest.raises(MessengerError):
            m.stage_out([{"type": "output", "path": path}], storage(tmp_path))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    with pytest.raises(MessengerError, match="not a plain file name"):
        m.put_transformation({"transformation": "http://h/trf/user/.."}, lambda p: b"")
    assert m.put_transformation({"transformation": "/bin/sh"}, None) is None
    assert m.put_transformation({"transformation": "https://elsewhere/x.sh"}, None) is None
    with pytest.raises(MessengerError, match="plain"):
        Messenger(str(ap), {"job": "../job"})


def test_malformed_files_raise_naming_the_path(tmp_path):
    ap = tmp_path / "ap"
    m = Messenger(str(ap))
    m.setup(queuedata())
    assert (m.read_attributes(), m.job_requested(), m.panda_ids(), m.last_heartbeat()) == (None, 0, [], None)
    for name, text, call in [("worker_attributes.json", "{broken", m.read_attributes),
                             ("worker_requestjob.json", "[1]", m.job_requested),
                             ("worker_requestjob.json", '{"nJobs": "many"}', m.job_requested),
                             ("worker_pandaids.json", '{"a": 1}', m.panda_ids),
                             ("event_status.dump.json", "", m.read_event_status),
                             ("jobReport.json", "nul", m.read_job_report)]:
        (ap / name).write_text(text)
        with pytest.raises(MessengerError, match=str(ap / name)):
            call()
    (ap / "worker_requestjob.json").write_text('{"nJobs": 2}')
    assert m.job_requested() == 2
    assert not m.kill_worker_requested()


def test_outbox_claim_done_release_and_crash_recovery(tmp_path):
    ap = tmp_path / "ap"
    m = Messenger(str(ap))
    m.setup(queuedata())
    pilot_box = Outbox(str(ap / "outbox"))
    pilot_box.put({"jobId": 1, "state": "finished", "attemptNr": 0})
    pilot_box.put_heartbeat({"jobId": 2, "state": "running"})
    pilot_box.put_heartbeat({"jobId": 1, "state": "running"})  # superseded by job 1's final update
    (ap / "outbox" / ".final-3-0.json.abc.tmp").write_text('{"par')  # the pilot is still writing this one
    claimed = m.claim_outbox("h1")
    kinds = {e["params"]["jobId"]: e["kind"] for _, e in claimed}
    assert kinds == {1: "final", 2: "heartbeat"}
    assert pilot_box.entries() == []  # the pilot's replay no longer sees them
    assert not (ap / "outbox" / "heartbeat-1.json").exists() and not any(
        n.startswith("heartbeat-1.") for n in os.listdir(ap / "outbox"))
    paths = {e["params"]["jobId"]: p for p, e in claimed}

    # harvester crashed: the next run (same owner) gets the same entries again; another owner does not
    assert m.claim_outbox("h2") == []
    again = Messenger(str(ap)).claim_outbox("h1")
    assert sorted(p for p, _ in again) == sorted(paths.values())

    m.done(paths[1])
    assert not os.path.exists(paths[1])
    m.release(paths[2])
    assert json.load(open(ap / "outbox" / "heartbeat-2.json"))["tries"] == 1
    with pytest.raises(MessengerError):
        m.done(str(ap / "outbox" / "heartbeat-2.json"))  # not claimed: refused

    # a claim whose sender died long ago is taken over (the pilot does the same after STALE_CLAIM)
    [(path, _)] = m.claim_outbox("h3")
    assert m.claim_outbox("h4", stale_after=3600) == []
    [(taken, entry)] = m.claim_outbox("h4", stale_after=-1)
    assert taken.endswith(".h4.claimed") and entry["kind"] == "heartbeat" and not os.path.exists(path)
    (ap / "outbox" / "final-9-0.json").write_text("not json")
    assert m.claim_outbox("h4", stale_after=3600) == [(taken, entry)]
    assert os.listdir(ap / "outbox" / "rejected") == ["final-9-0.json.h4.claimed"]
    m.done(taken)
    assert pilot_box.entries() == [] and not [n for n in os.listdir(ap / "outbox") if n.endswith(".claimed")]


WAIT_FOR_GO = "-c 'while [ ! -e \"$1\" ]; do sleep 0.05; done; echo done > out.dat' sh {go}"


def test_pull_mode_pilot_spools_heartbeats_and_harvester_forwards_its_final_update(site, tmp_path):
    from conftest import LiveServer

    ap, go = tmp_path / "ap", tmp_path / "GO"
    m = Messenger(str(ap))
    qd_path = m.setup(queuedata(pilot_heartbeat_interval=0.3))
    pid = site.submit(transformation="/bin/sh", jobParameters=WAIT_FOR_GO.format(go=go),
                      Files=[{"type": "output", "lfn": "out.dat"}, {"type": "log", "lfn": "l.tgz"}])
    site.workdir = str(ap)  # as harvester starts it: -a <access point> --harvester-workdir <access point>
    proc = site.start("--harvester-workdir", str(ap), qd=qd_path)
    site.wait_for(lambda: site.status(pid) == "running", "job running")
    site.wait_for(lambda: (m.read_attributes() or {}).get("jobStatus") == "running", "attributes written")
    assert m.last_heartbeat() > time.time() - 60
    site.server.stop()
    heartbeat = ap / "outbox" / f"heartbeat-{pid}.json"
    site.wait_for(heartbeat.exists, "heartbeat spooled")
    [(path, entry)] = m.claim_outbox("harvester-1")
    assert entry["kind"] == "heartbeat" and entry["params"]["state"] == "running"
    m.release(path)  # the server is down for harvester too
    go.write_text("go")
    assert proc.wait(60) == 79, site.log()  # its final update is safe in the outbox
    assert m.read_attributes()["jobStatus"] == "finished"
    [(path, entry)] = m.claim_outbox("harvester-1")
    assert entry["kind"] == "final" and entry["params"]["state"] == "finished"
    assert not heartbeat.exists()  # the job ended: its heartbeat is obsolete

    again = LiveServer(site.server.home, site.server.db_url)
    try:
        site.server = again
        ServerClient(again.url, site.token_file, 10).update_job(entry["params"])
        m.done(path)
        assert site.status(pid) == "finished"
        assert os.listdir(ap / "outbox") == []
    finally:
        again.stop()
