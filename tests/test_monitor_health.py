"""minipanda/monitor/health.py: the metrics the shipped alerts need, on a real server's ``/metrics``: the home's
disk, workers that ended in the last hour, and harvester's paused and backed-off queues and home disk from its
heartbeat (built by harvester's command agent from its own database)."""
import datetime
import os

import pytest
import requests

import monitorhelp
from test_metrics import samples, scrape


@pytest.fixture
def server(tmp_path, db_url):
    server = monitorhelp.start(tmp_path, db_url)
    yield server
    server.stop()


def post(server, path, payload):
    reply = requests.post(f"{server.url}/api/v1/harvester/{path}", json=payload,
                          headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30)
    return reply


def iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_home_file_system(server):
    families = scrape(server)
    stat = os.statvfs(server.home)
    size = samples(families, "minipanda_home_filesystem_size_bytes")[()]
    avail = samples(families, "minipanda_home_filesystem_avail_bytes")[()]
    assert size == stat.f_blocks * stat.f_frsize and 0 < avail <= size


def test_workers_ended_in_the_last_hour_by_queue_and_state(server):
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    recent, old = iso(now - datetime.timedelta(minutes=10)), iso(now - datetime.timedelta(hours=3))
    workers = [{"workerID": 1, "computingSite": "QA", "status": "failed", "endTime": recent},
               {"workerID": 2, "computingSite": "QA", "status": "failed", "endTime": recent},
               {"workerID": 3, "computingSite": "QA", "status": "failed", "endTime": old},
               {"workerID": 4, "computingSite": "QA", "status": "finished", "endTime": recent},
               {"workerID": 5, "computingSite": "QB", "status": "missed"},  # no end time: when it was reported
               {"workerID": 6, "computingSite": "QB", "status": "running"}]
    assert post(server, "update_workers", {"harvester_id": "h1", "workers": workers}).json()["data"] == [True] * 6
    ended = samples(scrape(server), "minipanda_workers_ended_last_hour")
    assert ended == {(("queue", "QA"), ("state", "failed")): 2.0, (("queue", "QA"), ("state", "finished")): 1.0,
                     (("queue", "QB"), ("state", "missed")): 1.0}


def test_harvester_queue_states_and_home_disk_from_its_heartbeat(server):
    report = {"harvester_id": "h1", "version": "0.1.0", "host": "edge",
              "queues": {"GOOD_PQ": {"paused": False, "backoff_s": 0, "failures": 0, "error": ""},
                         "SLOW_PQ": {"paused": False, "backoff_s": 320.5, "failures": 4, "error": "sbatch: down"},
                         "BAD_PQ": {"paused": True, "backoff_s": 0, "failures": 0, "error": "maxWorkers: lots"}},
              "home": {"size_bytes": 1000, "avail_bytes": 50}}
    assert post(server, "heartbeat", report).json()["success"]
    families = scrape(server)
    key = lambda queue: (("harvester", "h1"), ("queue", queue))  # noqa: E731
    assert samples(families, "minipanda_harvester_queue_paused") == {key("GOOD_PQ"): 0, key("SLOW_PQ"): 0,
                                                                      key("BAD_PQ"): 1}
    assert samples(families, "minipanda_harvester_queue_backoff_seconds")[key("SLOW_PQ")] == 320.5
    assert samples(families, "minipanda_harvester_queue_failures")[key("SLOW_PQ")] == 4
    assert samples(families, "minipanda_harvester_home_filesystem_size_bytes") == {(("harvester", "h1"),): 1000}
    assert samples(families, "minipanda_harvester_home_filesystem_avail_bytes") == {(("harvester", "h1"),): 50}
    # a heartbeat without them (an older harvester) keeps the last report; a malformed one is refused, naming it
    assert post(server, "heartbeat", {"harvester_id": "h1", "version": "0.1.0"}).json()["success"]
    assert samples(scrape(server), "minipanda_harvester_queue_paused")[key("BAD_PQ")] == 1
    for bad, field in (({"queues": {"Q": {"backoff_s": -1}}}, "queues.Q.backoff_s"),
                       ({"queues": ["Q"]}, "queues: expected"), ({"home": {"avail_bytes": "lots"}}, "home.avail")):
        reply = post(server, "heartbeat", {"harvester_id": "h1", **bad})
        assert reply.status_code == 400 and field in reply.json()["message"], reply.text


def test_harvester_builds_its_report_from_its_own_database(tmp_path):
    """The command agent's heartbeat: a paused queue (config error), a backed-off one, and the home's disk."""
    from harvester import db, models
    from harvester.agents.commands import home_disk, queue_report

    db.open_database(str(tmp_path / "harvester.db"))
    try:
        now = datetime.datetime(2026, 12, 1, 12, 0, 0)
        db.queue_state("SLOW_PQ")
        models.QueueState.update(failures=3, backoff_until=now + datetime.timedelta(seconds=90),
                                 last_error="sbatch: error").where(models.QueueState.queue == "SLOW_PQ").execute()
        db.queue_state("BAD_PQ")
        models.QueueState.update(config_error="limits.maxWorkers: lots").where(
            models.QueueState.queue == "BAD_PQ").execute()

        class Context:
            queues = {"SLOW_PQ": object(), "OK_PQ": object()}
            queue_errors = {"BAD_PQ": ["limits.maxWorkers: lots"]}

        assert queue_report(Context, now) == {
            "BAD_PQ": {"paused": True, "backoff_s": 0.0, "failures": 0, "error": "limits.maxWorkers: lots"},
            "OK_PQ": {"paused": False, "backoff_s": 0.0, "failures": 0, "error": ""},
            "SLOW_PQ": {"paused": False, "backoff_s": 90.0, "failures": 3, "error": "sbatch: error"}}
        disk = home_disk(str(tmp_path))
        assert 0 < disk["avail_bytes"] <= disk["size_bytes"]
    finally:
        db.close_database()
