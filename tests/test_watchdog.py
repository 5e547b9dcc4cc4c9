"""The watchdog over real HTTP: no reply, lost heartbeat (per queue), holding too long; then retries/completion."""
import datetime
import json

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


@pytest.fixture
def pilot_dog_server(tmp_path, db_url):
    """The no-reply and holding limits far away: only the lost-heartbeat rules act."""
    server = TaskServer(tmp_path / "home", db_url, {"watchdog.sent_timeout": 3600, "watchdog.holding_timeout": 3600,
                                                    "watchdog.heartbeat_timeout": 3600})
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


def test_without_a_queue_timeout_the_server_loses_a_job_when_its_pilot_gives_it_up(database):
    """A queue without a queue file (its default queuedata sets no pilot_lost_heartbeat_timeout): the pilot reading
    that queuedata and the watchdog fall back to one value (PanDA's 2 h), so the server fails a silent job when its
    pilot would kill it (1318), not an hour before or after."""
    from pilot.queuedata import QueueData

    set_queue("Q0")
    raw = json.loads(models.Queue.get_by_id("Q0").queuedata)  # what /cache/schedconfig serves the pilot
    assert "pilot_lost_heartbeat_timeout" not in raw
    pilot_gives_up = QueueData(raw, "Q0")["pilot_lost_heartbeat_timeout"]
    assert pilot_gives_up == 7200
    (pid,) = [row[0] for row in jobs.submit_jobs([make_job("Q0")], "alice")]
    now = states.utcnow()
    with database.atomic():
        states.change_job_status([pid], "sent", "test", now=now)
        states.change_job_status([pid], "running", "test", now=now, fields={models.Job.heartbeat_time: now})
    config = settings.Settings()
    assert watchdog.run(config, now + datetime.timedelta(seconds=pilot_gives_up - 1))["lost_heartbeat"] == 0
    assert watchdog.run(config, now + datetime.timedelta(seconds=pilot_gives_up + 1))["lost_heartbeat"] == 1


def test_a_sent_job_fails_when_its_pilot_is_silent_on_all_its_jobs(database):
    """In-process with a fixed clock. A sent job is judged by its pilot: kept while that pilot reports on any job
    (a heartbeat, a state change, a final), failed with lost heartbeat (100) once the pilot has been silent for the
    queue's timeout, as a starting job is (a change the server made to another of its jobs is no word from it); a
    sent job whose pilot is unknown keeps the plain no-reply rule."""
    Job = models.Job
    set_queue("Q1", pilot_lost_heartbeat_timeout=600)
    set_queue("Q2")  # no timeout in queuedata: watchdog.heartbeat_timeout (2 h), above the sent timeout (30 min)
    t0 = states.utcnow()
    seconds = datetime.timedelta(seconds=1)
    ids = {}
    for name, queue, pilot in (("held", "Q1", "p1"), ("held2", "Q1", "p1"), ("busy", "Q1", "p1"),
                               ("dead", "Q1", "p2"), ("after_final", "Q1", "p3"), ("final", "Q1", "p3"),
                               ("no_pilot", "Q1", None), ("long_held", "Q2", "p4"), ("long_busy", "Q2", "p4"),
                               ("killed_held", "Q1", "p5"), ("killed", "Q1", "p5")):
        (ids[name],) = [row[0] for row in jobs.submit_jobs([make_job(queue)], "alice")]
        with database.atomic():
            states.change_job_status([ids[name]], "sent", "test", now=t0,
                                     fields={Job.pilot_id: pilot, Job.heartbeat_time: t0})

    def report(name, status, when):
        with database.atomic():
            states.change_job_status([ids[name]], status, "test", now=when, fields={Job.heartbeat_time: when})

    def beat(name, when):  # a same-state heartbeat: no state change
        Job.update(heartbeat_time=when).where(Job.panda_id == ids[name]).execute()

    def status(name):
        return Job.get_by_id(ids[name]).status

    config = settings.Settings()
    report("busy", "running", t0 + 300 * seconds)
    report("final", "finished", t0 + 500 * seconds)
    with database.atomic():  # the server's own change (a kill): no word from p5
        states.change_job_status([ids["killed"]], "failed", "killed", now=t0 + 400 * seconds)
    assert watchdog.run(config, t0 + 599 * seconds)["lost_heartbeat"] == 0
    assert watchdog.run(config, t0 + 601 * seconds)["lost_heartbeat"] == 2
    assert status("dead") == "failed"  # p2 took it and was never heard from again
    assert status("killed_held") == "failed"  # p5's other job changed, but by the server, not by p5
    dead = Job.get_by_id(ids["dead"])
    assert dead.sup_error_code == 100 and dead.sup_error_diag.startswith("lost heartbeat: sent to a pilot")
    assert "600 s (queue Q1)" in dead.sup_error_diag
    # p1 reported another job at +300, p3 a final at +500: both alive, their sent jobs are in their hands
    assert [status(n) for n in ("held", "held2", "after_final", "no_pilot")] == ["sent"] * 4
    beat("busy", t0 + 800 * seconds)
    assert watchdog.run(config, t0 + 1300 * seconds)["lost_heartbeat"] == 1  # p3: silent since +500
    assert [status(n) for n in ("held", "held2", "busy", "after_final")] == ["sent", "sent", "running", "failed"]
    assert watchdog.run(config, t0 + 1401 * seconds)["lost_heartbeat"] == 3  # p1 silent since +800
    assert [status(n) for n in ("held", "held2", "busy")] == ["failed"] * 3
    # no pilot known (a harvester's push-mode job, a pilot3 getJob): the 30 min no-reply rule alone
    assert status("no_pilot") == "sent"
    # on Q2 the lost-heartbeat timeout (2 h) is above the sent timeout: a job in the hands of a pilot that talks
    # is no "no reply" either
    beat("long_busy", t0 + 1700 * seconds)
    Job.update(status="running").where(Job.panda_id == ids["long_busy"]).execute()
    out = watchdog.run(config, t0 + 1801 * seconds)
    assert out["no_reply"] == 1 and status("no_pilot") == "failed" and status("long_held") == "sent"
    out = watchdog.run(config, t0 + 3501 * seconds)  # p4 silent since +1700: more than the sent timeout
    assert out["no_reply"] == 1 and status("long_held") == "failed"
    assert Job.get_by_id(ids["long_held"]).sup_error_code == 102


def test_sent_jobs_fail_when_their_pilot_goes_silent_never_while_it_talks(pilot_dog_server):
    """Over HTTP: two pilots take two jobs each in one getJob and report nothing on them (a job without inputs
    sends nothing before its payload has run pilot_running_delay; the second job waits in the pilot's hands). The
    one that is killed (never heard from again) loses both at the queue's lost-heartbeat timeout, as a starting
    job's pilot would; the one that keeps reporting its first job keeps its second, sent, as long as it talks, and
    may still run it. Once that pilot falls silent too, its jobs go the same way. Each lost job is retried, and a
    late word from a lost pilot is answered tobekilled."""
    server = pilot_dog_server
    set_queue("HB", pilot_lost_heartbeat_timeout=4)
    # 8 jobs for the 4 taken: a bulk getJob takes at most its fair share of what is left (minipanda.core.fairshare),
    # and each pilot here must get the 2 it asks for
    tid = submit(server, {"taskName": "held", "exec": "true", "nJobs": 8, "nScouts": 0, "maxAttempt": 3})
    wait_jobs(server, tid, 8)
    busy, held = acquire(server, "HB", n=2, pilot_id="talking-pilot")
    gone = acquire(server, "HB", n=2, pilot_id="killed-pilot")
    update(server, busy["PandaID"], "running", pilot_id="talking-pilot")

    def by_id():
        return {j["PandaID"]: j for j in jobs_of(server, tid)}

    def gone_failed():  # the talking pilot heartbeats its running job meanwhile, well within the timeout
        assert update(server, busy["PandaID"], "running", pilot_id="talking-pilot")["command"] == "NULL"
        jobs = by_id()
        return all(jobs[j["PandaID"]]["jobStatus"] == "failed" for j in gone) and jobs

    jobs = wait_for(gone_failed, "the killed pilot's sent jobs to fail", timeout=60)
    for job in gone:
        assert jobs[job["PandaID"]]["supErrorCode"] == 100, jobs[job["PandaID"]]
        assert jobs[job["PandaID"]]["supErrorDiag"].startswith("lost heartbeat: sent to a pilot"), jobs[job["PandaID"]]
    # dispatched before the killed pilot's, silent as long: kept, the pilot that holds it still talks
    assert jobs[held["PandaID"]]["jobStatus"] == "sent" and jobs[busy["PandaID"]]["jobStatus"] == "running"
    assert update(server, gone[0]["PandaID"], "running", pilot_id="killed-pilot")["command"] == "tobekilled"
    assert update(server, busy["PandaID"], "finished", pilot_id="talking-pilot")["command"] == "NULL"
    assert update(server, held["PandaID"], "running", pilot_id="talking-pilot")["command"] == "NULL"
    # now the talking pilot dies while its second job runs: lost heartbeat, as before this change
    lost = wait_for(lambda: (lambda j: j if j["jobStatus"] == "failed" else None)(by_id()[held["PandaID"]]),
                    "the second pilot's running job to fail", timeout=60)
    assert lost["supErrorCode"] == 100 and lost["supErrorDiag"].startswith("lost heartbeat: no update")
    retries = wait_for(lambda: (lambda js: js if len(js) == 3 else None)(
        [j for j in jobs_of(server, tid) if j["attemptNr"] == 2]), "a second attempt of each lost job")
    assert sorted(j["parentID"] for j in retries) == sorted([held["PandaID"]] + [j["PandaID"] for j in gone])
