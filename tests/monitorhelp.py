"""A server with something to show: a task whose jobs finished (one with its log tarball in the file store),
failed, run and wait; a job whose name holds markup; a harvester with workers. Used by the monitor tests."""
import io
import json
import tarfile
import zlib

import requests

from conftest import LiveServer
from taskhelp import FAST, TaskServer, acquire, add_dataset, open_db, set_queue, submit, update, wait_jobs

QUEUE, OTHER = "MON_PQ", "OTHER_PQ"
EVIL = "<script>alert('x')</script><b>bold</b>"
STDOUT = "hello from the payload\nline two & <tags>\n"
PILOT_LOG = "pilot: job started\npilot: job finished\n"


class MonitorServer(TaskServer):
    """``minipanda serve`` with task settings (short periods) and a chosen auth mode."""

    def __init__(self, home, db_url, auth="token", settings=None):
        self.settings = dict(FAST, **(settings or {}))
        LiveServer.__init__(self, home, db_url, auth=auth)


def start(tmp_path, db_url, auth="token"):
    server = MonitorServer(tmp_path / "home", db_url, auth=auth)
    open_db(server)
    return server


def log_tarball(panda_id):
    """A pilot's log tarball: PandaJob_<id>/{payload.stdout, payload.stderr, pilotlog.txt}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("payload.stdout", STDOUT), ("payload.stderr", "warning: " + EVIL + "\n"),
                           ("pilotlog.txt", PILOT_LOG)):
            data = text.encode()
            info = tarfile.TarInfo(f"PandaJob_{panda_id}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload(server, scope, lfn, data):
    reply = requests.put(f"{server.url}/files/{scope}/{lfn}", data=data, timeout=30,
                         headers=dict(server.headers(), **{"X-Checksum": "ad:%08x" % zlib.adler32(data)}))
    assert reply.status_code in (200, 201), reply.text
    return reply.json()["data"]


def populate(server):
    """Fill the server; returns the ids the tests look for."""
    set_queue(QUEUE)
    set_queue(OTHER)
    add_dataset(server, "mon.in", 4)
    task_id = submit(server, {"taskName": "user.admin.demo", "exec": "cat %IN > %OUT:out.txt", "inDS": "mon.in",
                              "nFilesPerJob": 1, "outputs": ["out.txt"], "nScouts": 0, "site": QUEUE})
    wait_jobs(server, task_id, 4, "activated")
    jobs = acquire(server, QUEUE, n=3)
    finished, failed, running = (j["PandaID"] for j in jobs)
    done = jobs[0]
    for job in jobs:
        update(server, job["PandaID"], "running")
    lfn = done["logFile"]
    stored = upload(server, "panda.logs", lfn, log_tarball(finished))
    outs = [f for f in done["outFiles"].split(",") if f and f != lfn]
    xml = {name: {"guid": f"g-{name}", "fsize": 10, "adler32": "0000abcd", "surl": f"/out/{name}"} for name in outs}
    xml[lfn] = {"guid": "g-log", "fsize": stored["fsize"], "adler32": stored["adler32"],
                "surl": f"{server.url}/files/panda.logs/{lfn}"}
    update(server, finished, "finished", xml=json.dumps(xml), cpu_consumption_time=12, max_rss=123456,
           n_events=100)
    update(server, failed, "failed", pilot_error_code=1137, pilot_error_diag="stage-out failed: " + EVIL,
           trans_exit_code=0, exe_error_code=137)
    # the server's settle duty retries the failed job as a new activated one: wait for it, so that what the
    # tests read afterwards (pages, /metrics, the database) no longer changes under them
    retried = wait_jobs(server, task_id, 2, "activated")
    waiting = min(j["PandaID"] for j in retried)
    body = server.call("job/submit", {"jobs": [{
        "jobName": EVIL, "computingSite": OTHER, "prodSourceLabel": "managed", "transformation": "run.sh",
        "jobParameters": "--x 1", "Files": [{"type": "log", "lfn": "evil.log.tgz", "scope": "test"}]}]})
    evil = body["data"][0]["PandaID"] if isinstance(body["data"][0], dict) else body["data"][0][0]
    harvester = "harv-1"
    server.call("harvester/heartbeat", {"harvester_id": harvester, "version": "1.0", "host": "node<1>",
                                       "start_time": "2025-01-01T00:00:00Z"})
    workers = [{"workerID": 1, "status": "running", "computingSite": QUEUE, "batchID": "b1", "nCore": 1,
                "node": "wn1", "pandaid_list": [running]},
               {"workerID": 2, "status": "finished", "computingSite": QUEUE, "batchID": "b2", "nCore": 1,
                "diagMessage": "ended <ok>", "pandaid_list": [finished]},
               {"workerID": 3, "status": "submitted", "computingSite": OTHER, "batchID": "b3", "nCore": 1}]
    assert all(server.call("harvester/update_workers", {"harvester_id": harvester, "workers": workers})["data"])
    server.call("harvester/report_worker_statistics", {
        "harvester_id": harvester, "panda_queue": QUEUE,
        "statistics": {"managed": {"SCORE": {"running": 1, "submitted": 0}}}})
    return {"task": task_id, "finished": finished, "failed": failed, "running": running, "waiting": waiting,
            "evil": evil, "harvester": harvester, "log_lfn": lfn}
