"""The watchdog over real HTTP: no reply, lost heartbeat (per queue), holding too long; then retries/completion."""
import datetime

import pytest
from conftest import make_job
from minipanda.core import jobs, models, states
from minipanda.tasks import settings, watchdog
from taskhelp import (TaskServer, acquire, jobs_of, open_db, set_queue, submit, update, wait_for,  # noqa: F401
                      wait_jobs, wait_status)

SHORT = {"watchdog.sent_timeout": 1, "watchdog.holding_timeout": 1, "watchdog.heartbeat_timeout": 3600}


@pytest.fixture
def dog_server(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url, SHORT)
    open_db(server)
    yield server
    server.stop()


def failed_job(server, task_id):
    def find():
        jobs = [j for j in jobs_of(server, task_id) if j["jobStatus"] == "failed"]
        return jobs[0] if jobs else None
    return wait_for(find, f"a failed job of task {task_id}")


def test_sent_without_reply_fails(dog_server):
    set_queue("Q1")
    tid = submit(dog_server, {"taskName": "quiet", "exec": "true", "nJobs": 1, "nScouts": 0, "maxAttempt": 1})
    wait_jobs(dog_server, tid, 1)
    (job,) = acquire(dog_server, "Q1")
    failed = failed_job(dog_server, tid)
    assert failed["PandaID"] == job["PandaID"] and failed["supErrorCode"] == 102
    assert failed["supErrorDiag"].startswith("no reply: sent to a pilot more than 1 s ago")
    wait_status(dog_server, tid, "failed")
    assert update(dog_server, job["PandaID"], "running")["command"] == "tobekilled"  # too late, pilot


def test_lost_heartbeat_uses_the_queue_timeout_and_retries(dog_server):
    set_queue("HB", pilot_lost_heartbeat_timeout=1)
    tid = submit(dog_server, {"taskName": "lost", "exec": "true", "nJobs": 1, "nScouts": 0, "maxAttempt": 3})
    wait_jobs(dog_server, tid, 1)
    (job,) = acquire(dog_server, "HB")
    update(dog_server, job["PandaID"], "running")
    failed = failed_job(dog_server, tid)
    assert failed["supErrorCode"] == 100 and "lost heartbeat" in failed["supErrorDiag"]
    assert "more than 1 s (queue HB)" in failed["supErrorDiag"]
    second = wait_for(lambda: [j for j in jobs_of(dog_server, tid) if j["attemptNr"] == 2], "the second attempt")
    assert second[0]["jobStatus"] == "activated" and second[0]["parentID"] == job["PandaID"]


def test_holding_too_long_fails(dog_server):
    set_queue("Q1")
    tid = submit(dog_server, {"taskName": "hold", "exec": "true", "nJobs": 1, "nScouts": 0, "maxAttempt": 1})
    wait_jobs(dog_server, tid, 1)
    (job,) = acquire(dog_server, "Q1")
    update(dog_server, job["PandaID"], "holding")
    failed = failed_job(dog_server, tid)
    assert failed["supErrorCode"] == 103 and failed["supErrorDiag"].startswith("holding too long")
    wait_status(dog_server, tid, "failed")


def test_fresh_jobs_are_left_alone(database):
    """In-process with a fixed clock: a job just heard from is not touched; past the limit it is."""
    set_queue("Q1", pilot_lost_heartbeat_timeout=600)

    (pid,) = [row[0] for row in jobs.submit_jobs([make_job("Q1")], "alice")]
    now = states.utcnow()
    with database.atomic():
        states.change_job_status([pid], "sent", "test", now=now)
        states.change_job_status([pid], "running", "test", now=now, fields={models.Job.heartbeat_time: now})
    config = settings.Settings()
    assert watchdog.run(config, now + datetime.timedelta(seconds=599))["lost_heartbeat"] == 0
    assert watchdog.run(config, now + datetime.timedelta(seconds=601))["lost_heartbeat"] == 1
    assert models.Job.get_by_id(pid).status == "failed"
