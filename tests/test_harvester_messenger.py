"""The harvester side of the handoff, through a transport, against the real pilot zipapp (file mode and pull mode):
files written atomically with their modes, one listing per cycle and only changed files read, outputs staged out
verified, the pilot's outbox claimed so that only one side sends an entry."""
import json
import os
import pathlib
import stat
import subprocess
import sys
import time

import pytest

from harvester.handoff import staging
from harvester.errors import HandoffRefused, MessengerError
from harvester.handoff.messenger import PILOT3_TRF_BASE, Messenger
from harvester.handoff.outbox import forget
from harvester.handoff.snapshot import Snapshot
from harvester.transport import LocalTransport
from pilot.comm import ServerClient
from pilot.fileutil import adler32
from test_pilot_harness import FAST_QUEUEDATA, QUEUE

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures

SCRIPT = b"#!/bin/sh\ncat in.dat > out.dat\necho \"$PandaID\" >> out.dat\n"


class Counting(LocalTransport):
    """The local transport, counting its round trips (calls of files())."""

    def __init__(self):
        self.calls = 0

    def files(self, ops):
        self.calls += 1
        return super().files(ops)


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


def messenger(ap, transport=None, snapshot=None, **kwargs):
    return Messenger(str(ap), kwargs.pop("names", None), transport or LocalTransport(), snapshot, **kwargs)


def look(ap, transport=None, previous=None, names=None, limit=1 << 20):
    """A messenger reading this cycle's snapshot of ``ap``."""
    transport = transport or LocalTransport()
    snapshot = Snapshot.take(transport, [str(ap)], names, limit, previous)
    return messenger(ap, transport, snapshot, names=names, limit=limit), snapshot


def run_pilot(zipapp, ap, qd_path, *extra, timeout=120):
    # No reachable server: port 9 has no listener, and -z makes no HTTP call anyway.
    argv = [sys.executable, zipapp, "-q", QUEUE, "-z", "--harvester-workdir", str(ap), "--harvester-submit-mode",
            "PUSH", "-a", str(ap), "--queuedata", qd_path, "--url", "http://127.0.0.1:9", "-l", "600", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=str(ap))
    return proc.returncode, proc.stderr


def test_file_mode_round_trip_with_the_real_pilot(zipapp_path, tmp_path):
    ap, store = tmp_path / "workers" / "1", storage(tmp_path)
    (tmp_path / "in" / "data").mkdir(parents=True)
    (tmp_path / "in" / "data" / "in.dat").write_text("input\n")
    m = messenger(ap, names={"job": "pandaJobData.out"})
    qd_path = m.setup(queuedata())
    assert json.load(open(qd_path))["nickname"] == QUEUE
    assert json.load(open(ap / "schedconfig.json"))[QUEUE]["atlas_site"] == "SITE"
    assert json.load(open(ap / "ddmendpoints.json")) == {}  # pilot3's storage data: no lookup of CRIC
    job = file_job(fsize="6", checksum="ad:" + adler32(str(tmp_path / "in" / "data" / "in.dat")))
    fetched = []
    trf = m.put_transformation(job, lambda path: fetched.append(path) or SCRIPT)
    assert fetched == ["/trf/user/make.sh"] and trf == str(ap / "make.sh") and os.access(trf, os.X_OK)
    assert m.stage_in(job, store) == [str(ap / "in.dat")]
    assert (ap / "in.dat").read_text() == "input\n" and not os.path.islink(ap / "in.dat")
    assert m.feed_jobs([job]) is True
    fed = json.loads((ap / "pandaJobData.out").read_text())
    assert fed["4242"]["transformation"] == PILOT3_TRF_BASE + "make.sh"  # pilot3's whitelist; ours ignores hosts
    assert job["transformation"].startswith("https://panda.example.org")  # the caller's dict is untouched
    assert m.feed_jobs([file_job(4243)]) is False  # the pilot has not taken the first one
    assert json.loads((ap / "pandaJobData.out").read_text()) == fed
    assert json.loads((ap / "worker_pandaids.json").read_text()) == [4242]

    code, log = run_pilot(zipapp_path, ap, qd_path)
    assert code == 0, log
    m, _ = look(ap, names={"job": "pandaJobData.out"})
    assert not m.exists("job") and m.job_requested() == 0
    assert m.kill_worker_requested() and m.last_heartbeat() is not None
    attributes = m.read_attributes()
    assert attributes["jobStatus"] == "finished" and attributes["jobId"] == 4242

    [final] = m.final_reports()
    assert (final.panda_id, final.refusal, final.params["state"], final.params["attemptNr"]) == (
        4242, None, "finished", 1)
    assert "jobStatus" not in final.params and final.params["transExitCode"] == 0 and "pilotTiming" in final.params
    assert {e["type"] for e in final.outputs} == {"output", "log"}
    outputs = {os.path.basename(e["path"]): e for e in staging.stage_out(m, final, store)}
    out = tmp_path / "out" / "user" / "out.dat"
    assert outputs["out.dat"]["path"] == str(out) and out.read_text() == "input\n4242\n"
    assert outputs["out.dat"]["chksum"] == adler32(str(out)) and outputs["out.dat"]["fsize"] == out.stat().st_size
    assert outputs["log.tgz"]["path"] == str(tmp_path / "out" / "user" / "log.tgz")
    assert not (ap / "user" / "out.dat").exists()  # moved, not copied
    again = {os.path.basename(e["path"]): e for e in staging.stage_out(m, final, store)}
    assert again == outputs  # a repeat (harvester restarted) finds them where they went


def test_multi_job_pilot_keeps_each_jobs_final_attributes(zipapp_path, tmp_path):
    ap = tmp_path / "workers" / "1"
    m = messenger(ap)
    qd_path = m.setup(queuedata(timefloor=10, pilot_handoff_wait=0.5))
    jobs = [{"PandaID": i, "transformation": "/bin/sh", "jobPars": f"-c 'exit {i - 1}'"} for i in (1, 2)]
    assert m.feed_jobs(jobs)
    code, log = run_pilot(zipapp_path, ap, qd_path)
    assert code == 0, log
    m, _ = look(ap)
    finals = {f.panda_id: f for f in m.final_reports()}
    assert (finals[1].params["state"], finals[2].params["state"]) == ("finished", "failed")
    assert finals[2].params["transExitCode"] == 1 and finals[2].params["pilotErrorCode"] == 1305
    assert finals[1].outputs == []  # no outputs, no log declared


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "a\0b", "..", "-rf"])
def test_unsafe_input_names_are_refused(tmp_path, name):
    ap = tmp_path / "workers" / "1"
    m = messenger(ap)
    m.setup(queuedata())
    (tmp_path / "in").mkdir()
    with pytest.raises(MessengerError, match="not a plain file name"):
        m.stage_in(file_job(inFiles=name, scopeIn=""), storage(tmp_path))
    with pytest.raises(MessengerError, match="scopeIn"):
        m.stage_in(file_job(scopeIn=name), storage(tmp_path))
    assert sorted(os.listdir(ap)) == ["ddmendpoints.json", "queuedata.json", "schedconfig.json"]


def test_inputs_are_verified_and_never_taken_through_a_symlink(tmp_path):
    ap = tmp_path / "workers" / "1"
    m = messenger(ap)
    m.setup(queuedata())
    (tmp_path / "in" / "data").mkdir(parents=True)
    (tmp_path / "in" / "data" / "in.dat").write_text("input\n")
    with pytest.raises(HandoffRefused, match="adler32"):
        m.stage_in(file_job(checksum="ad:00000001"), storage(tmp_path))
    with pytest.raises(HandoffRefused, match="bytes"):
        m.stage_in(file_job(fsize="5"), storage(tmp_path))
    assert not (ap / "in.dat").exists() and not [n for n in os.listdir(ap) if n.endswith(".tmp")]
    (tmp_path / "secret").write_text("secret")
    os.symlink(tmp_path / "secret", tmp_path / "in" / "data" / "evil.dat")
    with pytest.raises(HandoffRefused, match="symlink"):
        m.stage_in(file_job(inFiles="evil.dat", fsize=""), storage(tmp_path))
    with pytest.raises(MessengerError, match="not found"):
        m.stage_in(file_job(inFiles="none.dat", fsize=""), storage(tmp_path))


def test_unsafe_output_paths_and_transformations_are_refused(tmp_path):
    from harvester.handoff.messenger import Final

    ap = tmp_path / "workers" / "1"
    m = messenger(ap)
    m.setup(queuedata())
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", ap / "link.dat")
    os.symlink(tmp_path, ap / "evil")
    (ap / "a" / "b").mkdir(parents=True)
    (ap / "a" / "b" / "c.dat").write_text("x")
    os.mkfifo(ap / "fifo.dat")
    for path in ["/etc/passwd", f"{ap}/../secret", f"{ap}/a/b/c.dat", f"{ap}/x\0y", "rel.dat", f"{ap}/-x",
                 f"{ap}/link.dat", f"{ap}/evil/secret", f"{ap}/fifo.dat", None]:
        with pytest.raises(HandoffRefused):
            staging.stage_out(m, Final(1, {}, outputs=[{"type": "output", "path": path}]), storage(tmp_path))
    with pytest.raises(MessengerError, match="missing|no such"):
        staging.stage_out(m, Final(1, {}, outputs=[{"type": "output", "path": f"{ap}/missing.dat"}]),
                          storage(tmp_path))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    assert (tmp_path / "secret").read_text() == "x"
    with pytest.raises(MessengerError, match="not a plain file name"):
        m.put_transformation({"transformation": "http://h/trf/user/.."}, lambda p: b"")
    assert m.put_transformation({"transformation": "/bin/sh"}, None) is None
    assert m.put_transformation({"transformation": "https://elsewhere/x.sh"}, None) is None
    with pytest.raises(MessengerError, match="plain"):
        messenger(ap, names={"job": "../job"})


def test_malformed_and_hostile_files_raise_naming_the_path(tmp_path):
    ap = tmp_path / "workers" / "1"
    m = messenger(ap)
    m.setup(queuedata())
    m, _ = look(ap)
    assert (m.read_attributes(), m.job_requested(), m.panda_ids(), m.last_heartbeat()) == (None, 0, [], None)
    for name, text, call in [("worker_attributes.json", "{broken", "read_attributes"),
                             ("worker_requestjob.json", "[1]", "job_requested"),
                             ("worker_requestjob.json", '{"nJobs": "many"}', "job_requested"),
                             ("worker_pandaids.json", '{"a": 1}', "panda_ids")]:
        (ap / name).write_text(text)
        m, _ = look(ap)
        with pytest.raises(MessengerError, match=str(ap / name)):
            getattr(m, call)()
    (ap / "worker_requestjob.json").write_text('{"nJobs": 2}')
    (ap / "worker_pandaids.json").write_text("[1]" + " " * 100)
    os.unlink(ap / "worker_attributes.json")
    os.symlink(tmp_path / "secret", ap / "worker_attributes.json")
    m, _ = look(ap, limit=50)
    assert m.job_requested() == 2 and not m.kill_worker_requested()
    with pytest.raises(HandoffRefused, match="symlink: never followed"):
        m.read_attributes()
    with pytest.raises(HandoffRefused, match="over the queue's limit of 50 bytes"):
        m.panda_ids()
    [refused] = m.final_reports()
    assert refused.panda_id is None and "symlink" in refused.refusal  # no job named: the monitor fails the worker's


def test_a_final_report_must_be_for_the_job_its_name_says(tmp_path):
    ap = tmp_path / "workers" / "1"
    ap.mkdir(parents=True)
    (ap / "worker_attributes-5.json").write_text(json.dumps({"jobId": 6, "state": "failed"}))
    (ap / "worker_attributes-7.json").write_text("{not json")
    m, _ = look(ap)
    finals = {f.panda_id: f for f in m.final_reports()}
    assert "speaks for job '6', not 5" in finals[5].refusal and "not valid JSON" in finals[7].refusal
    assert 6 not in finals


WAIT_FOR_GO = "-c 'while [ ! -e \"$1\" ]; do sleep 0.05; done; echo done > out.dat' sh {go}"


def test_pull_mode_pilot_spools_heartbeats_and_harvester_forwards_its_final_update(site, tmp_path):
    from conftest import LiveServer

    ap, go = tmp_path / "workers" / "1", tmp_path / "GO"
    m = messenger(ap)
    qd_path = m.setup(queuedata(pilot_heartbeat_interval=0.3))
    pid = site.submit(transformation="/bin/sh", jobParameters=WAIT_FOR_GO.format(go=go),
                      Files=[{"type": "output", "lfn": "out.dat"}, {"type": "log", "lfn": "l.tgz"}])
    site.workdir = str(ap)  # as harvester starts it: -a <access point> --harvester-workdir <access point>
    proc = site.start("--harvester-workdir", str(ap), qd=qd_path)
    site.wait_for(lambda: site.status(pid) == "running", "job running")
    site.wait_for(lambda: (look(ap)[0].read_attributes() or {}).get("jobStatus") == "running", "attributes written")
    assert look(ap)[0].last_heartbeat() > time.time() - 60
    site.server.stop()
    heartbeat = ap / "outbox" / f"heartbeat-{pid}.json"
    site.wait_for(heartbeat.exists, "heartbeat spooled")
    [(path, entry)] = look(ap)[0].claim_outbox("harvester-1")
    assert entry["kind"] == "heartbeat" and entry["params"]["state"] == "running"
    go.write_text("go")
    assert proc.wait(60) == 79, site.log()  # its final update is safe in the outbox
    assert look(ap)[0].read_attributes()["jobStatus"] == "finished"
    claimed = dict((e["kind"], (p, e)) for p, e in look(ap)[0].claim_outbox("harvester-1"))
    path, entry = claimed["final"]
    assert entry["params"]["state"] == "finished" and "heartbeat" not in claimed  # the final one says more
    assert not heartbeat.exists()

    again = LiveServer(site.server.home, site.server.db_url)
    try:
        site.server = again
        ServerClient(again.url, site.token_file, 10).update_job(entry["params"])
        forget(LocalTransport(), str(tmp_path / "workers"), [path])
        assert site.status(pid) == "finished"
        assert os.listdir(ap / "outbox") == []
    finally:
        again.stop()


# ---- a finished final without its outputs (file mode) ------------------------------------------------------------

@pytest.fixture
def harvester_home(tmp_path):
    from harvester import db

    db.open_database(str(tmp_path / "harvester.db"))
    yield tmp_path
    db.close_database()


def held_job(ctx, panda_id, **definition):
    """A running worker holding job ``panda_id`` whose definition declares ``definition`` (outFiles, ...)."""
    from harvester import models
    from test_harvester_hostile import worker_with_job

    worker, ap = worker_with_job(ctx, panda_id)
    models.HeldJob.update(definition=json.dumps(dict(file_job(panda_id), **definition))).where(
        models.HeldJob.panda_id == panda_id).execute()
    return pathlib.Path(ap)


@pytest.mark.parametrize("case", ["no outputs entry", "an empty entry", "one output of two", "no outputs file"])
def test_a_finished_final_without_its_declared_outputs_fails_the_job(harvester_home, case):
    """PanDA's server fails a job whose pilot reports it finished without an output it declared (its Adder:
    "expected output ... is missing in pilot XML"); harvester, which holds the job's definition, does the same
    (1165) instead of reporting the job finished with its output lost."""
    from harvester.agents.monitor import Monitor
    from test_harvester_hostile import NOW, an_output, context, finals, pilot_ends

    ctx = context(harvester_home)
    ap = held_job(ctx, 7, outFiles="out.dat,second.dat,log.tgz")
    (ap / "user").mkdir()
    (ap / "user" / "out.dat").write_text("result\n")
    listed = {"no outputs entry": None, "an empty entry": [], "one output of two": [an_output(ap / "user" / "out.dat")],
              "no outputs file": None}[case]
    pilot_ends(str(ap), 7, outputs=listed or [])
    if listed is None:  # the pilot's outputs file names other jobs only, or is not there at all
        (ap / "event_status.dump.json").write_text(json.dumps({"8": []}))
        if case == "no outputs file":
            os.unlink(ap / "event_status.dump.json")
    Monitor(ctx).run_once(NOW)
    report = finals()[7]
    assert (report["state"], report["pilotErrorCode"]) == ("failed", 1165), report
    missing = "second.dat" if case == "one output of two" else "out.dat, second.dat"
    assert f"event_status.dump.json lists no {missing}" in report["pilotErrorDiag"], report
    assert "xml" not in report and not (harvester_home / "out").exists()  # nothing staged for a failed job


@pytest.mark.parametrize("case", ["outputs listed", "log only", "allowed missing", "failed", "pilot3's final"])
def test_a_final_needs_only_the_outputs_it_must_have(harvester_home, case):
    """Listed outputs, a job with only a log (pilot3 3.7.0.36 lists no file, not even its log), an output the job
    allows to be missing (allowNoOutput) and a failed job's final: reported as the pilot said."""
    from harvester.agents.monitor import Monitor
    from test_harvester_hostile import NOW, an_output, context, finals, pilot_ends

    ctx = context(harvester_home)
    declared = {"log only": {"outFiles": "log.tgz"}, "pilot3's final": {"outFiles": "log.tgz"},
                "allowed missing": {"allowNoOutput": "out.dat"}}.get(case, {})
    ap = held_job(ctx, 7, **declared)
    (ap / "user").mkdir()
    (ap / "user" / "out.dat").write_text("result\n")
    state = "failed" if case == "failed" else "finished"
    pilot_ends(str(ap), 7, state=state, outputs=[an_output(ap / "user" / "out.dat")] if case == "outputs listed" else [])
    if case == "pilot3's final":  # worker_attributes.json only, no per-job copy, no outputs file
        os.rename(ap / "worker_attributes-7.json", ap / "worker_attributes.json")
        os.unlink(ap / "event_status.dump.json")
    Monitor(ctx).run_once(NOW)
    report = finals()[7]
    assert (report["state"], report["pilotErrorCode"]) == (state, 0), report
    assert ("xml" in report) == (case == "outputs listed"), report
