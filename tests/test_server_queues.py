"""minipanda serve --queues FILE: the queue table mirrors the file, reloads on change or SIGHUP, and enforces it."""
import os
import signal
import subprocess
import sys

import pytest
import requests

from conftest import ProcessServer, make_job, eventually as wait_for

DATA = os.path.join(os.path.dirname(__file__), "data", "queueconfig")

QUEUES = """
queues:
  TESTBED:
    resources: {corecount: 2, maxrss: 3000, maxtime: 3600, maxwdir: 5000}
    pilot: {heartbeat: 60, lost_heartbeat: 600}
  USERS_ONLY:
    prodSourceLabels: [user]
  IN_TEST:
    status: test
  DOWN:
    status: offline
"""


class QueueServer(ProcessServer):
    def __init__(self, home, queues_file, extra=()):
        self.queues_file, self.extra = str(queues_file), list(extra)
        super().__init__(home, "sqlite:///" + os.path.join(str(home), "minipanda.db"))

    def argv(self):
        return super().argv() + ["--queues", self.queues_file, "--reload-period", "0.2"] + self.extra


@pytest.fixture
def queue_server(tmp_path):
    path = tmp_path / "queues.yaml"
    path.write_text(QUEUES)
    server = QueueServer(tmp_path / "home", path)
    yield server
    server.stop()


def submit(server, jobs):
    return requests.post(server.url + "/api/v1/job/submit", json={"jobs": jobs}, headers=server.headers())


def get_job(server, queue, label="managed"):
    return requests.post(server.url + "/server/panda/getJob", headers=server.headers(),
                         data={"computingElement": queue, "prodSourceLabel": label, "node": "wn"}).json()


def test_queue_table_and_queuedata_come_from_the_file(queue_server):
    data = requests.get(queue_server.url + "/cache/schedconfig/TESTBED.all.json").json()
    assert (data["corecount"], data["maxrss"], data["maxtime"], data["state"]) == (2, 3000, 3600, "ACTIVE")
    assert data["pilot_heartbeat_interval"] == 60
    listed = {q["name"]: q for q in requests.get(queue_server.url + "/api/v1/queues").json()["data"]}
    assert set(listed) == {"TESTBED", "USERS_ONLY", "IN_TEST", "DOWN"}
    assert listed["DOWN"]["status"] == "offline" and listed["DOWN"]["queuedata"]["state"] == "OFFLINE"
    assert "version" in queue_server.read_log() and "in force: 4 queues" in queue_server.read_log()


def test_unknown_queue_refused_and_nothing_stored(queue_server):
    reply = submit(queue_server, [make_job(queue="TESTBED"), make_job(queue="NOWHERE")])
    assert reply.status_code == 400
    assert "queue NOWHERE is not in the queue configuration" in reply.json()["message"]
    assert "TESTBED" in reply.json()["message"]
    assert requests.get(queue_server.url + "/api/v1/job/list").json()["data"] == []


def test_dispatch_follows_queue_status_and_labels(queue_server):
    reply = submit(queue_server, [make_job(queue="DOWN"), make_job(queue="USERS_ONLY"),
                                  make_job(queue="USERS_ONLY", prodSourceLabel="user"),
                                  make_job(queue="IN_TEST"), make_job(queue="IN_TEST", prodSourceLabel="ptest"),
                                  make_job(queue="TESTBED", coreCount=2)])
    down, managed_on_users, user_job, managed_on_test, test_job, two_cores = [r[0] for r in reply.json()["data"]]
    none = get_job(queue_server, "DOWN")
    assert none["StatusCode"] == 20 and "offline" in none["errorDialog"]
    assert get_job(queue_server, "USERS_ONLY")["StatusCode"] == 20  # managed pilot on a user-only queue
    assert get_job(queue_server, "USERS_ONLY", "user")["PandaID"] == user_job
    assert get_job(queue_server, "IN_TEST")["StatusCode"] == 20  # a queue in test gives test jobs only
    assert get_job(queue_server, "IN_TEST", "ptest")["PandaID"] == test_job
    assert get_job(queue_server, "TESTBED")["PandaID"] == two_cores  # pilot sends no cores: the queue's 2 apply


def test_edit_reloads_and_broken_edit_keeps_old_version(queue_server):
    path = queue_server.queues_file
    with open(path, "a") as handle:
        handle.write("  LATE:\n    resources: {maxrss: 1234}\n")
    assert wait_for(lambda: requests.get(queue_server.url + "/cache/schedconfig/LATE.all.json").status_code == 200)
    assert requests.get(queue_server.url + "/cache/schedconfig/LATE.all.json").json()["maxrss"] == 1234
    with open(path, "a") as handle:
        handle.write("  BROKEN:\n    resources: {maxrss: -5}\n    limits: {maxWorker: 3}\n")
    assert wait_for(lambda: "did you mean" in queue_server.read_log())
    log = queue_server.read_log()
    assert "BROKEN" in log and "maxrss" in log
    assert requests.get(queue_server.url + "/cache/schedconfig/BROKEN.all.json").status_code == 404
    assert requests.get(queue_server.url + "/cache/schedconfig/LATE.all.json").status_code == 200


def test_removed_queue_goes_offline_on_sighup(tmp_path):
    path = tmp_path / "queues.yaml"
    path.write_text(QUEUES)
    server = QueueServer(tmp_path / "home", path, extra=["--reload-period", "3600"])
    try:
        path.write_text(QUEUES.replace("  USERS_ONLY:\n    prodSourceLabels: [user]\n", ""))
        server.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "USERS_ONLY are no longer in" in server.read_log())
        listed = {q["name"]: q for q in requests.get(server.url + "/api/v1/queues").json()["data"]}
        assert listed["USERS_ONLY"]["status"] == "offline"
    finally:
        server.stop()


def test_invalid_file_refused_at_start_with_all_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("queues:\n  A:\n    resources: {maxrss: many}\n  B:\n    batch: {system: cobalt}\n")
    proc = subprocess.run([sys.executable, "-m", "minipanda", "serve", "--home", str(tmp_path / "h"),
                           "--port", "1", "--queues", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "bad.yaml" in proc.stderr and "maxrss" in proc.stderr and "cobalt" in proc.stderr
    assert not os.path.exists(tmp_path / "h" / "minipanda.db")


def test_harvester_format_file_is_accepted(tmp_path):
    server = QueueServer(tmp_path / "home", os.path.join(DATA, "panda_queueconfig.json"))
    try:
        names = {q["name"] for q in requests.get(server.url + "/api/v1/queues").json()["data"]}
        assert "UNI_SLURM" in names
        assert "ignored" in server.read_log() or "not used" in server.read_log() or "WARNING" in server.read_log()
    finally:
        server.stop()
