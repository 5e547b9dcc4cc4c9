"""One job through the zipapp pilot against a live server (pilot.jobrun): its steps in order, the next payload
while the last job is wrapped up, a cold stop at each step; and the stub server the other pilot tests use. A job's
reports, files and payload have their own files (test_pilot_jobreports, test_pilot_staging, test_pilot_payloadrun).
"""
import http.server
import json
import os
import signal
import tarfile
import threading
import time
import zlib

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
