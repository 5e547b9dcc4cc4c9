"""One job through the zipapp pilot against a live server: each outcome and its error code."""
import glob
import http.server
import json
import os
import shutil
import signal
import tarfile
import threading
import time
import zlib

import pytest
import requests

from test_pilot_harness import marked_sleep, processes_with

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures

WRITE_OUTPUT = """#!/bin/sh
echo "args: $*"
printf 'result %s\\n' "$PandaID" > out.dat
"""


def adler(path):
    with open(path, "rb") as handle:
        return f"{zlib.adler32(handle.read()) & 0xffffffff:08x}"


def test_success_with_outputs_and_checksums(site):
    trf = site.script("produce.sh", WRITE_OUTPUT)
    pid = site.submit(transformation=trf, jobParameters="--n 3 'two words' ';' '$(touch pwned)'",
                      Files=[{"type": "output", "lfn": "out.dat", "scope": "user"},
                             {"type": "log", "lfn": "job.log.tgz", "scope": "user"}])
    code, log = site.run()
    assert code == 0, log
    job = site.job(pid)
    assert job["jobStatus"] == "finished" and job["pilotErrorCode"] == 0 and job["transExitCode"] == 0
    out = os.path.join(site.outputs(), "user", "out.dat")
    with open(out) as handle:
        assert handle.read() == f"result {pid}\n"
    files = {f["lfn"]: f for f in job["Files"]}
    assert files["out.dat"]["checksum"] == "ad:" + adler(out)
    assert files["out.dat"]["fsize"] == os.path.getsize(out)
    assert files["out.dat"]["status"] == "finished"
    tarball = os.path.join(site.outputs(), "user", "job.log.tgz")
    assert files["job.log.tgz"]["checksum"] == "ad:" + adler(tarball)
    with tarfile.open(tarball) as tar:
        names = {os.path.basename(n): n for n in tar.getnames()}
        stdout = tar.extractfile(names["payload.stdout"]).read().decode()
    assert "pilotlog.txt" in names and "job_definition.json" in names
    # jobPars is split into words and exec'd: no shell ever interprets ';' or '$(...)'
    assert stdout == "args: --n 3 two words ; $(touch pwned)\n"
    assert not [p for p in os.listdir(site.base) if p == "pwned"]
    states = [h["to"] for h in site.history(pid)]
    assert states == ["activated", "sent", "finished"]  # ended within pilot_running_delay: no starting, no running


def test_running_is_reported_once_the_payload_outlives_the_delay_and_at_once_with_0(site):
    slow = site.submit(transformation="/bin/sleep", jobParameters="1.5")
    code, log = site.run(qd=site.queuedata(pilot_running_delay=0.5))
    assert code == 0, log
    assert [h["to"] for h in site.history(slow)] == ["activated", "sent", "running", "finished"]
    quick = site.submit(transformation="/bin/true")
    code, log = site.run(qd=site.queuedata(pilot_running_delay=0))
    assert code == 0, log
    assert [h["to"] for h in site.history(quick)] == ["activated", "sent", "running", "finished"]


class StubServer(http.server.BaseHTTPRequestHandler):
    """getJob hands out up to nJobs of ``jobs``; updateJob and each entry of updateJobsInBulk record (PandaID,
    state, ``look(PandaID, state)``) before the answer, which is ``answer(PandaID, state, bulk)`` (accepted when
    it returns None). ``requests`` lists (route, nJobs or number of entries)."""

    protocol_version = "HTTP/1.1"
    jobs, updates, look, answer, requests = [], [], None, None, []
    files, file_delay = {}, 0.0  # GET /files/<name>: the bytes, sent after file_delay s

    def do_GET(self):
        stub = type(self)
        body = stub.files.get(self.path.rsplit("/", 1)[-1])
        time.sleep(stub.file_delay)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def do_POST(self):
        params = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        route = self.path.rsplit("/", 1)[-1]
        stub = type(self)
        if route == "getJob":
            n_jobs = int(params.get("nJobs") or 0)
            stub.requests.append((route, n_jobs))
            if n_jobs:
                taken, stub.jobs[:n_jobs] = stub.jobs[:n_jobs], []
                reply = {"StatusCode": 0 if taken else 20, "jobs": taken, "nSent": len(taken)}
            else:
                reply = dict(stub.jobs.pop(0), StatusCode=0) if stub.jobs else {"StatusCode": 20}
        elif route == "updateJobsInBulk":
            stub.requests.append((route, len(params["jobList"])))
            reply = {"StatusCode": 0, "results": [self.record(entry, True) for entry in params["jobList"]]}
        else:
            stub.requests.append((route, 1))
            reply = self.record(params, False)
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, params, bulk):
        stub = type(self)
        panda_id, state = int(params["jobId"]), params["state"]
        stub.updates.append((panda_id, state, stub.look(panda_id, state) if stub.look else None))
        return (stub.answer and stub.answer(panda_id, state, bulk)) or {"StatusCode": 0, "command": "NULL"}

    def log_message(self, *args):
        pass


def stub_server(jobs, look=None, answer=None):
    """A StubServer on a free port, serving ``jobs``; returns the server (its URL: ``stub_url(server)``)."""
    StubServer.jobs, StubServer.updates, StubServer.requests = list(jobs), [], []
    StubServer.files, StubServer.file_delay = {}, 0.0
    StubServer.look = staticmethod(look) if look else None
    StubServer.answer = staticmethod(answer) if answer else None
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubServer)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    return stub


def stub_url(stub):
    return f"http://127.0.0.1:{stub.server_address[1]}"


def started(marker):
    """Whether a process of the payload runs: its program, or setpriv about to exec it (its argv names it)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    return True
        except OSError:
            continue
    return False


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


class HeldPut(http.server.BaseHTTPRequestHandler):
    """Takes a log tarball's PUT (queuedata output_url) and holds its answer until ``release()`` is true (or
    30 s), recording whether it was."""

    protocol_version = "HTTP/1.1"
    release, seen = None, []

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        deadline = time.monotonic() + 30
        while not type(self).release() and time.monotonic() < deadline:
            time.sleep(0.02)
        type(self).seen.append((self.path, type(self).release()))
        body = b'{"data": {}}'
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_next_payload_starts_while_the_previous_job_is_wrapped_up(site):
    """Payloads back to back: job 1's log upload is held until job 2's payload runs, which it only can if job
    1's stage-out is off the job loop; job 1's state still follows its upload and both finals are delivered."""
    marker = f"overlap-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    stub = stub_server([{"PandaID": 1, "transformation": "/bin/true", "jobPars": "", "prodSourceLabel": "managed",
                         "logFile": "one.log.tgz"},
                        {"PandaID": 2, "transformation": sleep, "jobPars": "1", "prodSourceLabel": "managed"}])
    HeldPut.release, HeldPut.seen = staticmethod(lambda: bool(processes_with(marker))), []
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HeldPut)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{sink.server_address[1]}/logs/{{lfn}}"
        code, log = site.run(url=stub_url(stub), qd=site.queuedata(timefloor=10, copytool="http", output_url=url))
    finally:
        for server in (stub, sink):
            server.shutdown()
            server.server_close()
    assert code == 0, log
    assert HeldPut.seen == [("/logs/one.log.tgz", True)], log
    assert sorted((u[0], u[1]) for u in StubServer.updates) == [(1, "finished"), (2, "finished")], log
    outbox = os.path.join(site.workdir, "outbox")
    assert not os.path.isdir(outbox) or not os.listdir(outbox)


def test_nonzero_exit_fails_with_1305(site):
    pid = site.submit(transformation="/bin/sh", jobParameters="-c 'echo failing >&2; exit 3'")
    code, log = site.run()
    assert code == 0, log  # the pilot itself worked
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"], job["transExitCode"]) == ("failed", 1305, 3)
    assert "exited with 3" in job["pilotErrorDiag"]


def test_job_report_is_read(site):
    report = json.dumps({"exitCode": 0, "exitMsg": "OK", "executor": [{"name": "x", "logfileReport": {"a": 1}}]})
    pid = site.submit(transformation="/bin/sh", jobParameters=f"-c 'printf %s \"$1\" > jobReport.json' sh '{report}'")
    code, log = site.run()
    assert code == 0, log
    job = site.job(pid)
    assert job["jobStatus"] == "finished"
    meta = json.loads(job["metadata"])
    assert meta["exitMsg"] == "OK" and meta["executor"][0]["logfileReport"] == {}


def test_memory_blowup_killed_with_1235(site):
    hog = "import time; x = b'x' * (300 << 20); print('allocated', flush=True); time.sleep(120)"
    pid = site.submit(transformation="python3", jobParameters=f'-c "{hog}"', minRamCount=50)
    code, log = site.run(qd=site.queuedata(pilot_memory_grace=1.0))
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1235), job["pilotErrorDiag"]
    assert job["maxPSS"] > 50 * 1024


def test_looping_job_killed_with_1150(site):
    pid = site.submit(transformation="/bin/sleep", jobParameters="120")
    code, log = site.run(qd=site.queuedata(pilot_looping_limit=1))
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1150), job["pilotErrorDiag"]


def test_walltime_exceeded_killed_with_1213(site):
    busy = "-c 'while true; do date > tick; sleep 0.1; done'"
    pid = site.submit(transformation="/bin/sh", jobParameters=busy, maxWalltime=1)
    code, log = site.run(qd=site.queuedata(pilot_walltime_grace=1.0))
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1213), job["pilotErrorDiag"]


def test_missing_output_fails_with_1165_and_log_still_staged(site):
    pid = site.submit(transformation="/bin/true", jobParameters="",
                      Files=[{"type": "output", "lfn": "never.dat", "scope": "u"},
                             {"type": "log", "lfn": "l.tgz", "scope": "u"}])
    code, log = site.run()
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1165)
    files = {f["lfn"]: f for f in job["Files"]}
    assert files["l.tgz"]["checksum"] and os.path.exists(os.path.join(site.outputs(), "u", "l.tgz"))


def test_allow_no_output_and_empty_output(site):
    pid = site.submit(transformation="/bin/sh", jobParameters="-c ': > empty.dat'", allowNoOutput="skipped.dat",
                      Files=[{"type": "output", "lfn": "skipped.dat"}, {"type": "output", "lfn": "empty.dat"},
                             {"type": "log", "lfn": "l.tgz"}])
    code, log = site.run()
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1350), log


def test_stagein_checksum_mismatch_fails_with_1145(site):
    inputs = os.path.join(site.base, "inputs")
    os.makedirs(os.path.join(inputs, "data"))
    with open(os.path.join(inputs, "data", "in.dat"), "wb") as handle:
        handle.write(b"payload input\n")
    marker = os.path.join(site.base, "payload-ran")
    pid = site.submit(transformation="/bin/touch", jobParameters=marker,
                      Files=[{"type": "input", "lfn": "in.dat", "scope": "data", "fsize": 14,
                              "checksum": "ad:00000001"}, {"type": "log", "lfn": "l.tgz"}])
    code, log = site.run("--input-dir", inputs)
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1145), log
    assert not os.path.exists(marker)  # the payload never started
    assert os.path.exists(os.path.join(inputs, "data", "in.dat"))  # the source is never moved


def test_stagein_good_input_and_missing_input(site):
    inputs = os.path.join(site.base, "inputs")
    os.makedirs(inputs)
    data = b"abc\n"
    with open(os.path.join(inputs, "in.dat"), "wb") as handle:
        handle.write(data)
    good = site.submit(transformation="/bin/sh", jobParameters="-c 'cat in.dat > out.dat'",
                       Files=[{"type": "input", "lfn": "in.dat", "fsize": 4,
                               "checksum": f"ad:{zlib.adler32(data):08x}"},
                              {"type": "output", "lfn": "out.dat"}, {"type": "log", "lfn": "l.tgz"}])
    code, log = site.run("--input-dir", inputs)
    assert site.job(good)["jobStatus"] == "finished", log
    with tarfile.open(os.path.join(site.outputs(), "l.tgz")) as tar:
        assert not [n for n in tar.getnames() if n.endswith("in.dat")]  # inputs stay out of the log
    missing = site.submit(transformation="/bin/true", jobParameters="",
                          Files=[{"type": "input", "lfn": "gone.dat"}, {"type": "log", "lfn": "l2.tgz"}])
    site.run("--input-dir", inputs)
    assert site.job(missing)["pilotErrorCode"] == 1331


def test_unsafe_file_names_are_refused(site):
    # A name or a scope that would climb out of the work area is refused by the server already (and by the
    # pilot's own checks, see test_pilot_jobdata, for jobs that arrive through files).
    for unsafe in ({"lfn": "..tgz"}, {"lfn": "x.tgz", "scope": ".."}):
        with pytest.raises(requests.HTTPError, match="400"):
            site.submit(transformation="/bin/true", jobParameters="", Files=[dict(type="log", **unsafe)])


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


def test_job_directory_removed_under_the_pilot_still_kills_the_payload(site):
    marker = f"vanish-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    pid = site.submit(transformation="/bin/sh", jobParameters=f"-c '{sleep} 300 & wait'")
    proc = site.start()
    site.wait_for(lambda: site.status(pid) == "running" and processes_with(marker), "job running")
    for job_dir in glob.glob(os.path.join(site.workdir, "PanDA_Pilot-*", f"PandaJob_{pid}")):
        shutil.rmtree(job_dir)
    assert proc.wait(60) == 0, site.log()
    assert site.job(pid)["jobStatus"] == "failed"
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


def test_http_stage_in_and_stage_out_through_the_server_file_store(site):
    server = site.server
    data = b"input from the file store\n"
    put = requests.put(server.url + "/files/data/in.dat", data=data, timeout=30,  # the input placed by the admin
                       headers=dict(server.headers(json_reply=False), **{"X-Checksum": f"ad:{zlib.adler32(data):08x}"}))
    assert put.status_code == 201, put.text
    pid = site.submit(transformation="/bin/sh", jobParameters="-c 'cat in.dat in.dat > out.dat'",
                      Files=[{"type": "input", "lfn": "in.dat", "scope": "data", "fsize": len(data),
                              "checksum": f"ad:{zlib.adler32(data):08x}"},
                             {"type": "output", "lfn": "out.dat", "scope": "user"},
                             {"type": "log", "lfn": "job.log.tgz", "scope": "user"}])
    qd = site.queuedata(copytool="http", input_url="/files/{scope}/{lfn}", output_url="/files/{scope}/{lfn}")
    code, log = site.run(qd=qd)
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("finished", 0), log
    stored = os.path.join(server.home, "files", "user", "out.dat")
    with open(stored, "rb") as handle:
        assert handle.read() == data * 2
    files = {f["lfn"]: f for f in job["Files"]}
    assert files["out.dat"]["checksum"] == "ad:" + adler(stored)
    assert files["out.dat"]["surl"] == server.url + "/files/user/out.dat"
    assert files["job.log.tgz"]["surl"] == server.url + "/files/user/job.log.tgz"
    tarball = os.path.join(server.home, "files", "user", "job.log.tgz")
    assert files["job.log.tgz"]["checksum"] == "ad:" + adler(tarball)
    with open(site.token_file) as handle:
        token = handle.read().strip()
    assert requests.get(files["out.dat"]["surl"], headers={"Authorization": f"Bearer {token}"},
                        timeout=30).content == data * 2
    assert not os.path.exists(os.path.join(site.outputs(), "user", "out.dat"))  # nothing went to a directory


def test_the_job_loops_work_aside_never_raises_into_the_job_and_is_logged(caplog):
    """The work done while a payload runs (the next job made ready, the early getJob) must never cost the running
    job its watch or its report: a failure of it is logged, not raised."""
    from pilot import jobrun

    def fails():
        raise RuntimeError("disk full while making the next job ready")

    with caplog.at_level("ERROR", logger="pilot.jobrun"):
        jobrun._aside(fails, "the work done while the payload runs failed")
        jobrun._aside(None, "nothing to do")
    assert [r.getMessage() for r in caplog.records] == ["the work done while the payload runs failed"]
    assert "disk full" in caplog.text


# ---- a cold stop (a second signal) at each step of a job ----------------------------------------------------------
# Push mode over HTTP: the job comes from harvester's job file and its wrap-up runs in the job loop, so a pilot that
# went on after a cold stop would send the job's final to the server (the stub records every update). A cold stop
# kills the payload at once and leaves that final in the outbox only, for a later replay.
STUBBORN = "-c 'trap \"\" TERM; {sleep} 300 & while true; do sleep 0.1; done'"


def push_job(tmp_path, **job):
    """A harvester work directory holding one job for the pilot (PandaID 7); returns it."""
    hwd = tmp_path / "harvester"
    hwd.mkdir()
    (hwd / "pandaJobData.out").write_text(json.dumps({"7": dict({"PandaID": 7, "prodSourceLabel": "managed"},
                                                                **job)}))
    return hwd


def cold_stop(site, proc):
    """A stop signal, then another one once it no longer counts as the same stop delivered twice."""
    from pilot.signals import REPEAT_WINDOW_S

    proc.send_signal(signal.SIGTERM)
    site.wait_for(lambda: "got SIGTERM" in site.log(), "warm stop")
    time.sleep(REPEAT_WINDOW_S + 0.2)
    proc.send_signal(signal.SIGTERM)


def assert_stopped_cold(site, proc, marker=None, code=1201):
    """The pilot ended at once on the cold stop, nothing of the payload left, no final sent: it waits in the
    outbox, failed with ``code`` (the first error: the signal's, unless the job had failed already)."""
    assert proc.wait(60) == 143, site.log()
    assert "cold shutdown" in site.log(), site.log()
    if marker:
        assert processes_with(marker) == []
    assert [u for u in StubServer.updates if u[1] in ("finished", "failed")] == [], (StubServer.updates, site.log())
    entry = json.load(open(os.path.join(site.workdir, "outbox", "final-7-0.json")))
    assert (entry["params"]["state"], entry["params"]["pilotErrorCode"]) == ("failed", code), entry


def test_a_cold_stop_while_the_payload_is_killed_stops_the_pilot_at_once(site, tmp_path):
    """The first signal kills the payload (which ignores SIGTERM, so the pilot waits out the grace); the second
    one ends the pilot then (JobRun.run_to_payload_end, its steps): the payload SIGKILLed, no wrap-up."""
    marker = f"coldwatch-{os.getpid()}-{id(site)}"
    hwd = push_job(tmp_path, transformation="/bin/sh", jobPars=STUBBORN.format(sleep=marked_sleep(site.base, marker)))
    stub = stub_server([])
    try:
        proc = site.start("--harvester-workdir", str(hwd), "--harvester-submit-mode", "PUSH", url=stub_url(stub),
                          qd=site.queuedata(pilot_kill_grace=60, pilot_running_delay=600))
        site.wait_for(lambda: processes_with(marker), "payload running")
        cold_stop(site, proc)
        assert_stopped_cold(site, proc, marker)
    finally:
        stub.shutdown()
        stub.server_close()


def test_a_cold_stop_while_a_payload_is_killed_after_an_error_stops_the_pilot_at_once(site, tmp_path):
    """A step failed while the payload ran (here harvester's attributes file cannot be written at its running
    report), so the pilot kills the payload after the step (JobRun.ensure_payload_gone); a cold stop then ends the
    pilot at once too."""
    marker = f"coldgone-{os.getpid()}-{id(site)}"
    hwd = push_job(tmp_path, transformation="/bin/sh", jobPars=STUBBORN.format(sleep=marked_sleep(site.base, marker)))
    blocker = hwd / "worker_attributes.json"
    blocker.mkdir()  # the running report's attributes cannot replace a directory: an unexpected error
    stub = stub_server([])
    try:
        proc = site.start("--harvester-workdir", str(hwd), "--harvester-submit-mode", "PUSH", url=stub_url(stub),
                          qd=site.queuedata(pilot_kill_grace=60, pilot_running_delay=0))
        site.wait_for(lambda: "still running after an error; killing it" in site.log(), "payload killed after error")
        assert processes_with(marker)
        blocker.rmdir()  # a pilot that went on could report the job now
        cold_stop(site, proc)
        assert_stopped_cold(site, proc, marker, code=1301)  # the unexpected error came first
    finally:
        stub.shutdown()
        stub.server_close()


class HungPut(http.server.BaseHTTPRequestHandler):
    """Takes a PUT and answers only once ``release`` is set (or after 60 s); ``arrived`` is set when one came."""

    protocol_version = "HTTP/1.1"
    arrived, release = threading.Event(), threading.Event()

    def do_PUT(self):
        type(self).arrived.set()
        type(self).release.wait(60)
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_cold_stop_during_the_stage_out_stops_the_pilot_at_once(site, tmp_path):
    """The payload ended and the log's upload hangs (JobRun.execute, its wrap-up): a cold stop ends the pilot
    there; the final stays in the outbox (a pilot that went on would replay it to the server)."""
    hwd = push_job(tmp_path, transformation="/bin/true", jobPars="", logFile="l.tgz")
    HungPut.arrived, HungPut.release = threading.Event(), threading.Event()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HungPut)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    stub = stub_server([])
    try:
        url = f"http://127.0.0.1:{sink.server_address[1]}/logs/{{lfn}}"
        proc = site.start("--harvester-workdir", str(hwd), "--harvester-submit-mode", "PUSH", url=stub_url(stub),
                          qd=site.queuedata(copytool="http", output_url=url, pilot_http_timeout=120))
        site.wait_for(HungPut.arrived.is_set, "log upload")
        cold_stop(site, proc)
        assert_stopped_cold(site, proc)
    finally:
        HungPut.release.set()
        for server in (stub, sink):
            server.shutdown()
            server.server_close()
