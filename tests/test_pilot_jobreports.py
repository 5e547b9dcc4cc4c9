"""A job's reports through the zipapp pilot (pilot.jobreports): starting, running, the lost-heartbeat rules on both
sides of the payload's start, and a kill command in an answer."""
import glob
import json
import os
import shutil
import zlib

from test_pilot_harness import marked_sleep, processes_with
from test_pilot_jobrun import StubServer, started, stub_server, stub_url

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def test_running_is_reported_once_the_payload_outlives_the_delay_and_at_once_with_0(site):
    slow = site.submit(transformation="/bin/sleep", jobParameters="1.5")
    code, log = site.run(qd=site.queuedata(pilot_running_delay=0.5))
    assert code == 0, log
    assert [h["to"] for h in site.history(slow)] == ["activated", "sent", "running", "finished"]
    quick = site.submit(transformation="/bin/true")
    code, log = site.run(qd=site.queuedata(pilot_running_delay=0))
    assert code == 0, log
    assert [h["to"] for h in site.history(quick)] == ["activated", "sent", "running", "finished"]


def test_starting_only_before_a_slow_stage_in_and_running_only_after_the_delay(site):
    """A short job without inputs sends no starting and no running: sent -> finished in one report; so does one
    whose inputs arrive within pilot_running_delay at the stage-in's 10 MB/s (JobRun.quick_stage_in). With
    more, or with an input of no declared size, starting goes before the stage-in, as pilot3 sends it; a payload
    that outlives pilot_running_delay is reported running while it runs."""
    marker = f"starting-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    inputs = os.path.join(site.base, "inputs")
    os.makedirs(inputs)
    with open(os.path.join(inputs, "in.dat"), "wb") as handle:
        handle.write(b"input\n")
    big = b"\0" * 10_000_001  # one byte over 1 s (the delay below) at 10 MB/s
    with open(os.path.join(inputs, "big.dat"), "wb") as handle:
        handle.write(big)
    job = {"transformation": sleep, "jobPars": "0.1", "prodSourceLabel": "managed", "logFile": "l.tgz"}
    small = dict(job, inFiles="in.dat", checksum=f"ad:{zlib.adler32(b'input' + bytes([10])):08x}")
    stub = stub_server([dict(job, PandaID=1), dict(small, PandaID=2, fsize="6"),
                        dict(job, PandaID=4, inFiles="big.dat", fsize=str(len(big)),
                             checksum=f"ad:{zlib.adler32(big):08x}"),
                        dict(small, PandaID=5, fsize=""),
                        dict(job, PandaID=3, jobPars="3")],
                       look=lambda panda_id, state: (started(marker), bool(glob.glob(os.path.join(
                           site.workdir, "*", f"PandaJob_{panda_id}", "*.dat")))))
    try:
        code, log = site.run("--input-dir", inputs, url=stub_url(stub),
                             qd=site.queuedata(timefloor=10, pilot_running_delay=1))
    finally:
        stub.shutdown()
        stub.server_close()
    assert code == 0, log
    # (state, (a payload running, input staged in)) as the server saw each update arrive (a final may arrive
    # while the next job's payload runs)
    reports = {panda_id: [u[1:] for u in StubServer.updates if u[0] == panda_id] for panda_id in (1, 2, 3, 4, 5)}
    assert [state for state, _ in reports[1]] == ["finished"], log
    assert [state for state, _ in reports[2]] == ["finished"], log  # 6 bytes: no starting
    for slow in (4, 5):  # 10 MB + 1 byte; a size not declared
        assert reports[slow][0] == ("starting", (False, False)) and reports[slow][1][0] == "finished", (slow, log)
    assert reports[3][0] == ("running", (True, False)) and [s for s, _ in reports[3]] == ["running", "finished"], log


def test_a_job_held_past_the_lost_heartbeat_timeout_asks_before_its_payload_runs(site):
    """A job that waited in the pilot's hands (two jobs from one getJob, the first one long) would send its first
    report later than pilot_lost_heartbeat_timeout after its getJob, when the server may have failed it and given a
    new attempt to another pilot (its watchdog judges a sent job by its pilot's silence): it reports starting before
    its payload, and a tobekilled answer stops it before anything runs. A job started at once sends no starting."""
    touch = shutil.which("touch")  # a local program: the stub serves no transformation
    ran = {n: os.path.join(site.base, f"ran-{n}") for n in (1, 3, 4)}
    job = {"transformation": touch, "prodSourceLabel": "managed", "logFile": "l.tgz"}
    # job 1 runs alone (its pace makes the next getJob ask for several); 2 is long, 3 waits behind it and is
    # killed when it asks, 4 waits too and is told to go on
    stub = stub_server([dict(job, PandaID=1, jobPars=ran[1]), dict(job, PandaID=2, transformation="/bin/sleep",
                                                                    jobPars="4"),
                        dict(job, PandaID=3, jobPars=ran[3]), dict(job, PandaID=4, jobPars=ran[4])],
                       answer=lambda panda_id, state, bulk: {"StatusCode": 0, "command": "tobekilled"}
                       if (panda_id, state) == (3, "starting") else None)
    try:
        code, log = site.run(url=stub_url(stub), qd=site.queuedata(
            timefloor=10, pilot_running_delay=0.5, pilot_heartbeat_interval=0.5, pilot_lost_heartbeat_timeout=3))
    finally:
        stub.shutdown()
    assert code == 0, log
    assert ("getJob", 1) in StubServer.requests and any(r == "getJob" and n >= 3 for r, n in StubServer.requests), \
        (StubServer.requests, log)
    reports = {panda_id: [u[1] for u in StubServer.updates if u[0] == panda_id] for panda_id in (1, 2, 3, 4)}
    assert reports[1] == ["finished"] and os.path.exists(ran[1]), (reports, log)
    assert reports[2][0] == "running" and reports[2][-1] == "finished", (reports, log)
    assert reports[3] == ["starting", "failed"] and not os.path.exists(ran[3]), (reports, log)
    assert reports[4] == ["starting", "finished"] and os.path.exists(ran[4]), (reports, log)


def test_a_stage_in_longer_than_the_lost_heartbeat_timeout_asks_again_before_the_payload(site):
    """starting went before the stage-in (an input of no declared size), and the stage-in outlasted
    pilot_lost_heartbeat_timeout: the server may have failed the job meanwhile, so starting goes again before the
    payload, and a tobekilled answer stops it before it runs."""
    ran = os.path.join(site.base, "ran")
    stub = stub_server([{"PandaID": 1, "transformation": shutil.which("touch"), "jobPars": ran,
                         "prodSourceLabel": "managed", "logFile": "l.tgz", "inFiles": "in.dat", "fsize": "",
                         "checksum": f"ad:{zlib.adler32(b'input' + bytes([10])):08x}"}],
                       answer=lambda panda_id, state, bulk: {"StatusCode": 0, "command": "tobekilled"}
                       if len([u for u in StubServer.updates if u[1] == "starting"]) > 1 else None)
    StubServer.files, StubServer.file_delay = {"in.dat": b"input\n"}, 3.5
    try:
        code, log = site.run(url=stub_url(stub), qd=site.queuedata(
            acopytools={"pr": "http"}, input_url=stub_url(stub) + "/files/{lfn}", pilot_running_delay=0.5,
            pilot_heartbeat_interval=0.5, pilot_lost_heartbeat_timeout=3))
    finally:
        stub.shutdown()
    assert code == 0, log
    assert [u[1] for u in StubServer.updates] == ["starting", "starting", "failed"], (StubServer.updates, log)
    assert "staged in in.dat" in log and not os.path.exists(ran), log


def test_a_job_from_harvester_reports_starting_before_even_a_quick_stage_in(site, tmp_path):
    """Push mode over HTTP: harvester acquired the job, the server knows no pilot of it, so only the pilot's own
    reports show it alive: starting still goes before the stage-in, however small the inputs."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "in.dat").write_bytes(b"input\n")
    hwd = tmp_path / "harvester"
    hwd.mkdir()
    job = {"PandaID": 7, "transformation": "/bin/true", "jobPars": "", "prodSourceLabel": "managed",
           "logFile": "l.tgz", "inFiles": "in.dat", "fsize": "6",
           "checksum": f"ad:{zlib.adler32(b'input' + bytes([10])):08x}"}
    (hwd / "pandaJobData.out").write_text(json.dumps({"7": job}))
    stub = stub_server([])
    try:
        code, log = site.run("--harvester-workdir", str(hwd), "--harvester-submit-mode", "PUSH", "--input-dir",
                             str(inputs), url=stub_url(stub), qd=site.queuedata(pilot_handoff_wait=1))
    finally:
        stub.shutdown()
    assert code == 0, log
    assert [u[1] for u in StubServer.updates if u[0] == 7] == ["starting", "finished"], (StubServer.updates, log)


def test_server_kill_reaches_the_pilot_as_1144(site):
    marker = f"killme-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    pid = site.submit(transformation="/bin/sh",
                      jobParameters=f"-c '{sleep} 300 & while true; do date > tick; sleep 0.1; done'")
    proc = site.start(qd=site.queuedata(pilot_heartbeat_interval=0.3))
    site.wait_for(lambda: site.status(pid) == "running" and processes_with(marker), "job running")
    assert site.v1("job/kill", job_ids=[pid]) == [True]
    assert proc.wait(60) == 0, site.log()
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1144), site.log()
    assert processes_with(marker) == []


def test_lost_heartbeat_kills_the_job_with_1318(site):
    marker = f"lost-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    pid = site.submit(transformation="/bin/sh", jobParameters=f"-c '{sleep} 300 & wait'")
    proc = site.start(qd=site.queuedata(pilot_heartbeat_interval=0.2, pilot_lost_heartbeat_timeout=1))
    site.wait_for(lambda: site.status(pid) == "running" and processes_with(marker), "job running")
    site.server.stop()
    assert proc.wait(60) == 79, site.log()  # the final update is in the outbox
    entry = json.load(open(os.path.join(site.workdir, "outbox", f"final-{pid}-0.json")))
    assert (entry["params"]["state"], entry["params"]["pilotErrorCode"]) == ("failed", 1318)
    assert processes_with(marker) == []
