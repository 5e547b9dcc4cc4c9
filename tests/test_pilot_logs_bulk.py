"""The pilot's logs several in one request (pilot/wrapup.py, pilot/bulklogs.py): against the real server each log's
outcome still decides its job's state; a server without the route gets one PUT per log; the wrap-up thread's
choices (alone, together, from then on) with a fake client."""
import io
import json
import os
import tarfile
import threading
import http.server

import requests

from pilot import bulklogs, wrapup
from pilot.comm import CommError
from test_pilot_jobrun import StubServer, stub_url
from test_pilot_wrapup import FakeClient, FakeContext

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures
BATCHING = ("--getjob-max-jobs", "10", "--getjob-lookahead", "60", "--final-batch-wait", "60")


def test_logs_go_several_in_one_request_and_each_log_decides_its_job(site):
    """Six short jobs against the real server: their logs go in fewer requests than jobs; the one whose log the
    server refuses (its name already holds another content: 409) fails with 1137, as after a single PUT, and the
    others finish with their log stored whole as a .tgz of their job directory."""
    ids = [site.submit(transformation="/bin/sh", jobParameters=f"-c 'echo job {n}'",
                       Files=[{"type": "log", "lfn": f"job{n}.log.tgz", "scope": "user"}]) for n in range(6)]
    taken = requests.put(site.server.url + "/files/logs/job3.log.tgz", data=b"someone else's",
                         headers=site.server.headers(json_reply=False), timeout=30)
    assert taken.status_code == 201, taken.text
    qd = site.queuedata(copytool="http", output_url="/files/logs/{lfn}", timefloor=10)
    code, log = site.run(*BATCHING, qd=qd)
    assert code == 0, log
    states = {n: site.job(pid) for n, pid in enumerate(ids)}
    assert [states[n]["jobStatus"] for n in range(6)] == ["finished"] * 3 + ["failed"] + ["finished"] * 2, log
    assert states[3]["pilotErrorCode"] == 1137 and "409" in states[3]["pilotErrorDiag"], states[3]
    line = [text for text in log.splitlines() if "pilot.wrapup: logs of" in text]
    assert line, log
    words = line[0].split()
    in_bulk, requests_made = int(words[words.index("of") + 1]), int(words[words.index("in") + 1])
    assert in_bulk >= 2 and requests_made < in_bulk, line
    for n, pid in enumerate(ids):
        if n == 3:
            continue
        reply = requests.get(f"{site.server.url}/files/logs/job{n}.log.tgz", headers=site.server.headers(),
                             timeout=30)
        with tarfile.open(fileobj=io.BytesIO(reply.content), mode="r:gz") as tar:
            names = tar.getnames()
            assert f"PandaJob_{pid}/payload.stdout" in names, names
            assert tar.extractfile(f"PandaJob_{pid}/payload.stdout").read() == f"job {n}\n".encode()
    with open(os.path.join(site.server.home, "files", "logs", "job3.log.tgz"), "rb") as handle:
        assert handle.read() == b"someone else's"
    # a tarball the server holds is removed from the pilot's directory; the refused one stays there
    assert left_tarballs(site) == ["job3.log.tgz"]


def left_tarballs(site):
    return sorted(name for _, _, names in os.walk(site.workdir) for name in names if name.endswith(".tgz"))


class OldServer(StubServer):
    """A StubServer of before the bulk log route: ``PUT /files/...`` stores, the bulk route is 404."""

    puts = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).puts.append(self.path)
        type(self).requests.append(("PUT", len(body)))
        reply = json.dumps({"success": True, "message": "stored", "data": {}}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_POST(self):
        if self.path.endswith("/upload_logs"):
            self.rfile.read(int(self.headers["Content-Length"]))
            type(self).requests.append(("upload_logs", 0))
            self.send_error(404)
            return
        super().do_POST()


def test_a_pilot_falls_back_to_one_put_per_log_on_a_server_without_the_route(site):
    jobs = [{"PandaID": n, "transformation": "/bin/true", "jobPars": "", "prodSourceLabel": "managed",
             "logFile": f"log{n}.tgz", "scopeLog": "user"} for n in range(1, 9)]
    StubServer.jobs, StubServer.updates, StubServer.requests = list(jobs), [], []
    StubServer.look = StubServer.answer = None
    OldServer.puts = []
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OldServer)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        code, log = site.run(*BATCHING, url=stub_url(stub),
                             qd=site.queuedata(copytool="http", output_url="/files/{scope}/{lfn}", timefloor=10))
    finally:
        stub.shutdown()
        stub.server_close()
    assert code == 0, log
    assert sorted(OldServer.puts) == sorted(f"/files/user/log{n}.tgz" for n in range(1, 9)), log
    assert sorted((u[0], u[1]) for u in StubServer.updates) == [(n, "finished") for n in range(1, 9)], log
    tries = [route for route, _ in StubServer.requests if route == "upload_logs"]
    assert len(tries) <= 1 and "one PUT per log from now on" in log, (StubServer.requests, log)
    assert left_tarballs(site) == []  # each held by the server after its own PUT


class FakeLog:
    def __init__(self, panda_id, fsize):
        self.lfn, self.scope, self.fsize, self.adler32, self.path = f"log{panda_id}.tgz", "user", fsize, "00000001", \
            os.devnull
        self.surl = self.memory = None


class LogRun:
    """A jobrun.JobRun as the wrap-up thread sees it, whose log waits to go with the others'."""

    def __init__(self, panda_id, fsize=10):
        self.job = type("Job", (), {"panda_id": panda_id, "log": FakeLog(panda_id, fsize)})()
        self.log_store = ("user", self.job.log.lfn)
        self.final, self.outcome, self.log_outcome = None, None, None

    def wrap_up(self, defer_log=False):
        if defer_log:
            return True
        self.log_outcome = "PUT in its own stage-out"
        self.conclude()
        return False

    def log_staged(self, outcome=None):
        self.log_outcome = outcome

    def settle_log(self):
        pass

    def conclude(self):
        failed = self.log_outcome not in (None, bulklogs.ALONE, "PUT in its own stage-out")
        self.final = {"jobId": self.job.panda_id, "state": "failed" if failed else "finished"}

    def settled(self, reply, error):
        self.outcome = "delivered" if reply is not None else "not delivered"


class LogClient(FakeClient):
    """Finals accepted; the bulk log route answered by ``logs(entries)`` (or raising what it returns)."""

    url = "http://127.0.0.1:1"

    def __init__(self, logs):
        super().__init__(lambda panda_id: {"StatusCode": 0, "command": "NULL"})
        self.logs = logs

    def upload_logs(self, entries):
        self.requests.append(("logs", [entry["pandaID"] for entry in entries]))
        answer = self.logs(entries)
        if isinstance(answer, Exception):
            raise answer
        return answer


def run_batches(tmp_path, client, batches, monkeypatch):
    # what each log's outcome does to its job (a single PUT for ALONE): recorded here, done for real against a
    # server above
    monkeypatch.setattr(wrapup, "_log_staged", lambda run, outcome: run.log_staged(outcome))
    monkeypatch.setattr(bulklogs, "upload_logs", lambda client, entries, deadline=None: client.upload_logs(entries))
    ctx = FakeContext(client, tmp_path)
    ctx.qd = dict(ctx.qd, pilot_stagein_timeout=60)
    wrap = wrapup.WrapUp(ctx, flush_after=60)
    runs = []
    for batch in batches:
        for panda_id in batch:
            runs.append(LogRun(panda_id))
            wrap.put(runs[-1])
        wrap.flush()
    assert wrap.close(30)
    return wrap, runs


def test_without_the_route_every_log_goes_alone_and_the_route_is_not_asked_again(tmp_path, monkeypatch):
    client = LogClient(lambda entries: CommError("HTTP 404", transient=False, status=404))
    wrap, runs = run_batches(tmp_path, client, [(1, 2, 3), (4, 5)], monkeypatch)
    assert [r for r in client.requests if r[0] == "logs"] == [("logs", [1, 2, 3])]
    # each sent by its single PUT: the first batch's after the refusal, the next ones' in their own stage-out
    assert [run.log_outcome for run in runs] == [bulklogs.ALONE] * 3 + ["PUT in its own stage-out"] * 2
    assert [run.outcome for run in runs] == ["delivered"] * 5 and not wrap.logs_in_bulk


def test_a_failed_bulk_request_sends_each_log_alone_and_keeps_the_route(tmp_path, monkeypatch):
    answers = iter([CommError("HTTP 503", transient=True, status=503), None])

    def logs(entries):
        answer = next(answers)
        return answer or [{"status": 201, "adler32": "00000001"} for _ in entries]

    client = LogClient(logs)
    wrap, runs = run_batches(tmp_path, client, [(1, 2), (3, 4)], monkeypatch)
    assert [r for r in client.requests if r[0] == "logs"] == [("logs", [1, 2]), ("logs", [3, 4])]
    assert [run.log_outcome for run in runs] == [bulklogs.ALONE, bulklogs.ALONE, None, None]
    assert wrap.logs_in_bulk and (wrap.sent_log_bulks, wrap.sent_logs_in_bulk) == (1, 2)


def test_each_entry_of_a_bulk_answer_decides_its_own_job(tmp_path, monkeypatch):
    replies = {1: {"status": 201, "adler32": "00000001"}, 2: {"status": 409, "message": "different content"},
               3: {"status": 503, "message": "busy"}, 4: {"status": 400, "message": "X-Checksum: adler32 is x"},
               5: {"status": 200, "adler32": "00000002"}}
    client = LogClient(lambda entries: [replies[entry["pandaID"]] for entry in entries])
    wrap, runs = run_batches(tmp_path, client, [(1, 2, 3, 4, 5)], monkeypatch)
    outcome = {run.job.panda_id: run.log_outcome for run in runs}
    assert outcome[1] is None and outcome[3] == bulklogs.ALONE
    assert outcome[2].code == 1137 and "409" in outcome[2].diag
    assert outcome[4].code == 1172 and outcome[5].code == 1172  # refused checksum; stored with another one
    assert [run.final["state"] for run in runs] == ["finished", "failed", "finished", "failed", "failed"]
    assert runs[0].job.log.surl == "http://127.0.0.1:1/files/user/log1.tgz"


def test_large_logs_go_alone_and_a_request_holds_at_most_bulk_bytes(tmp_path):
    sizes = [10, wrapup.BULK_LOG_MAX + 1, 10] + [wrapup.BULK_LOG_MAX] * (wrapup.BULK_BYTES // wrapup.BULK_LOG_MAX)
    runs = [LogRun(n, size) for n, size in enumerate(sizes)]
    groups = wrapup._groups(runs)
    assert groups == [[1], [0, 2, 3, 4, 5, 6, 7, 8, 9], [10]]
    assert all(len(group) == 1 or all(sizes[i] <= wrapup.BULK_LOG_MAX for i in group) for group in groups)
    assert all(sum(sizes[i] for i in group) <= wrapup.BULK_BYTES for group in groups if len(group) > 1)
    many = wrapup._groups([LogRun(n) for n in range(wrapup.BATCH_MAX + 1)])
    assert [len(group) for group in many] == [wrapup.BATCH_MAX, 1]
