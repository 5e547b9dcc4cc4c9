"""``/api/v1/harvester/*`` over real HTTP against a ``minipanda serve`` subprocess: every endpoint, roles, workers
that die with their jobs (and the retry that follows), commands, queue demand and pilot tokens."""
import pytest
import requests
from conftest import make_job
from minipanda.core import models
from taskhelp import task_server  # noqa: F401 (a fixture)
from taskhelp import acquire, add_dataset, jobs_of, open_db, run_job, set_queue, submit, update, wait_for, wait_status


def call(server, path, payload=None, token=None):
    return requests.post(f"{server.url}/api/v1/{path}", json=payload or {}, headers=server.headers(token),
                         timeout=30)


def ok(server, path, payload=None, token=None):
    reply = call(server, path, payload, token)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"], body
    return body["data"]


def worker(worker_id, status="running", queue="TEST_PQ", **extra):
    return dict({"workerID": worker_id, "batchID": f"b{worker_id}", "computingSite": queue, "status": status,
                 "nCore": 1, "nMemory": 2000, "walltime": 3600, "submitTime": "2026-01-01T00:00:00Z",
                 "startTime": None, "endTime": None, "diagMessage": "", "pandaid_list": [], "node": "wn1",
                 "accessPoint": f"/tmp/w/{worker_id}"}, **extra)


@pytest.fixture
def harvester(sqlite_server):
    """(server, harvester token named h1)."""
    return sqlite_server, sqlite_server.token("harvester", "h1")


def test_roles(harvester):
    server, token = harvester
    body = {"harvester_id": "h1", "version": "1", "start_time": None, "host": "x"}
    assert requests.post(f"{server.url}/api/v1/harvester/heartbeat", json=body).status_code == 401
    for role in ("user", "pilot", "production"):
        reply = call(server, "harvester/heartbeat", body, server.token(role, f"someone.{role}"))
        assert reply.status_code == 403 and "needs one of admin, harvester" in reply.json()["message"]
    assert ok(server, "harvester/heartbeat", body, token)["server_time"].endswith("Z")
    assert ok(server, "harvester/heartbeat", body)["server_time"]  # admin may too
    for admin_only in ("harvester/list_workers", "harvester/add_command", "harvester/list_instances"):
        assert call(server, admin_only, {}, token).status_code == 403
    # harvester relays for pilots (push mode, bulk updates) but makes no jobs
    (pid,) = [row[0] for row in ok(server, "job/submit", {"jobs": [make_job()]})]
    jobs = ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h1", "worker_id": 1},
              token)
    assert [j["PandaID"] for j in jobs] == [pid]
    assert ok(server, "pilot/update_jobs_bulk", {"job_list": [{"job_id": pid, "job_status": "running"}]},
              token)[0]["StatusCode"] == 0
    assert call(server, "job/submit", {"jobs": [make_job()]}, token).status_code == 403


def test_heartbeat_and_instance_list(harvester):
    server, token = harvester
    ok(server, "harvester/heartbeat", {"harvester_id": "h1", "version": "0.1", "host": "node-a",
                                       "start_time": "2026-01-02T03:04:05+01:00"}, token)
    ok(server, "harvester/heartbeat", {"harvester_id": "h1", "version": "0.2", "host": "node-a",
                                       "start_time": "2026-01-02T02:04:05Z"}, token)
    (instance,) = ok(server, "harvester/list_instances")
    assert (instance["harvester_id"], instance["version"], instance["start_time"]) == ("h1", "0.2",
                                                                                       "2026-01-02T02:04:05Z")
    assert instance["last_heartbeat"]


def test_update_workers_upserts_and_refuses_bad_entries(harvester):
    server, token = harvester
    reply = ok(server, "harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(1), worker(2, status="flying"), worker(3, nCore="many"), "not a worker", worker(4, computingSite=""),
        worker(5, nMemory=2 ** 40), worker(6, submitTime="soon"), worker(7, pandaid_list=["x"])]}, token)
    assert reply == [True, False, False, False, False, False, False, False]
    assert ok(server, "harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(1, status="finished", endTime="2026-01-01T01:00:00Z", diagMessage="done")]}, token) == [True]
    # a late 'running' does not bring a finished worker back
    assert ok(server, "harvester/update_workers", {"harvester_id": "h1", "workers": [worker(1)]}, token) == [True]
    (row,) = ok(server, "harvester/list_workers", {"harvester_id": "h1"})
    assert (row["workerID"], row["status"], row["diag"], row["batchID"], row["queue"], row["endTime"]) == (
        1, "finished", "done", "b1", "TEST_PQ", "2026-01-01T01:00:00Z")
    log = server.read_log()
    assert "workers[1].status: expected one of" in log and "workers[2].nCore: expected an integer" in log
    assert "workers[4].computingSite: required" in log
    assert "workers[5].nMemory: must be at most 2147483647" in log and "workers[6].submitTime: expected an ISO" in log
    assert "workers[7].pandaid_list[0]: expected an integer" in log


def test_a_worker_with_a_nul_character_is_refused_alone(live_server):
    """PostgreSQL's texts cannot hold a NUL (a batch system's message may carry one): the call failed with a 500 at
    that worker, leaving the workers after it unstored at every retry; now that worker alone is refused, naming
    its field, on either database."""
    token = live_server.token("harvester", "h1")
    reply = ok(live_server, "harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(1), worker(2, diagMessage="killed\x00"), worker(3, batchID="\x00"), worker(4, node="wn\x00"),
        worker(5)]}, token)
    assert reply == [True, False, False, False, True]
    assert sorted(row["workerID"] for row in ok(live_server, "harvester/list_workers", {"harvester_id": "h1"})) == [1, 5]
    log = live_server.read_log()
    assert "workers[1].diagMessage: a NUL character cannot be stored" in log
    assert "workers[2].batchID: a NUL character" in log and "workers[3].node: a NUL character" in log


def test_a_missing_worker_is_a_live_state_of_its_own(harvester):
    """harvester reports a batch job its scheduler lost for a moment as 'missing': kept, not final."""
    server, token = harvester
    assert ok(server, "harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(1, status="missing")]}, token) == [True]
    assert ok(server, "harvester/update_workers", {"harvester_id": "h1", "workers": [worker(1)]}, token) == [True]
    (row,) = ok(server, "harvester/list_workers", {"harvester_id": "h1"})
    assert row["status"] == "running"


def test_failed_worker_fails_its_running_plain_job(harvester):
    server, token = harvester
    pids = [row[0] for row in ok(server, "job/submit", {"jobs": [make_job() for _ in range(4)]})]
    mine = ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h1", "worker_id": 7,
                                             "n_jobs": 3}, token)
    other = ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h2", "worker_id": 7},
               server.token("harvester", "h2"))
    running, done, never_reported = (job["PandaID"] for job in mine)
    ok(server, "pilot/update_job", {"job_id": running, "job_status": "running"}, token)
    ok(server, "pilot/update_job", {"job_id": done, "job_status": "finished"}, token)
    # the listed job of harvester h2 is not h1's to fail
    ok(server, "harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(7, status="failed", diagMessage="pilot killed by signal 9",
               pandaid_list=[running, other[0]["PandaID"]])]}, token)
    (job,) = ok(server, "job/get_description", {"job_ids": [running]})
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1008)
    assert "worker 7 of harvester h1" in job["pilotErrorDiag"] and "failed" in job["pilotErrorDiag"]
    assert "pilot killed by signal 9" in job["pilotErrorDiag"]
    # a job the pilot took and had not reported yet (sent: no starting before a quick stage-in) goes the same way
    (held,) = ok(server, "job/get_description", {"job_ids": [never_reported]})
    assert (held["jobStatus"], held["pilotErrorCode"]) == ("failed", 1008) and "worker 7" in held["pilotErrorDiag"]
    statuses = {s["job_id"]: s["status"] for s in ok(server, "job/get_status", {"job_ids": pids})}
    assert statuses[done] == "finished" and statuses[other[0]["PandaID"]] == "sent"
    history = ok(server, "job/get_status_log", {"job_id": running})
    assert history[-1]["to"] == "failed" and "worker 7" in history[-1]["reason"]


def test_failed_worker_task_job_is_retried_and_finished_by_another_pilot(task_server):
    token = task_server.token("harvester", "h1")
    set_queue("Q1")
    add_dataset(task_server, "ds.in", 1)
    task_id = submit(task_server, {"taskName": "user.admin.hv", "exec": "cat %IN > %OUT:out.txt", "inDS": "ds.in",
                                   "nFilesPerJob": 1, "outputs": ["out.txt"], "nScouts": 0, "maxAttempt": 3})
    first = wait_for(lambda: acquire(task_server, "Q1", harvester_id="h1", worker_id=11), "the task's first job")[0]
    update(task_server, first["PandaID"], "running")
    assert task_server.call("harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(11, status="failed", queue="Q1", diagMessage="batch job exited with signal 9")]},
        token)["data"] == [True]
    retry = wait_for(lambda: [j for j in jobs_of(task_server, task_id) if j["attemptNr"] == 2], "attempt 2")[0]
    assert retry["jobStatus"] == "activated" and retry["Files"][0]["lfn"] == first["inFiles"]
    (failed,) = [j for j in jobs_of(task_server, task_id) if j["PandaID"] == first["PandaID"]]
    assert failed["pilotErrorCode"] == 1008 and "batch job exited with signal 9" in failed["pilotErrorDiag"]
    second = wait_for(lambda: acquire(task_server, "Q1", harvester_id="h1", worker_id=12), "attempt 2 dispatched")
    run_job(task_server, second[0])
    wait_status(task_server, task_id, "done")


def test_worker_statistics(harvester):
    server, token = harvester
    stats = {"managed": {"SCORE": {"running": 3, "submitted": 1}}}
    ok(server, "harvester/report_worker_statistics", {"harvester_id": "h1", "panda_queue": "TEST_PQ",
                                                      "statistics": stats}, token)
    ok(server, "harvester/report_worker_statistics", {"harvester_id": "h1", "panda_queue": "TEST_PQ",
                                                      "statistics": {"managed": {"SCORE": {"running": 4}}}}, token)
    reply = call(server, "harvester/report_worker_statistics", {"harvester_id": "h1", "panda_queue": "TEST_PQ",
                                                                "statistics": {"managed": {"SCORE": {"running": -1}}}},
                 token)
    assert reply.status_code == 400 and "statistics.managed.SCORE.running: must be at least 0" in reply.json()["message"]
    open_db(server)
    (row,) = models.WorkerStatistics.select()
    assert (row.harvester_id, row.queue, row.statistics) == ("h1", "TEST_PQ", '{"managed": {"SCORE": {"running": 4}}}')


def test_command_goes_to_one_harvester_only(harvester):
    server, token = harvester
    token2 = server.token("harvester", "h2")
    anyone = ok(server, "harvester/add_command", {"command": "KILL_WORKERS", "params": {"queue": "TEST_PQ"}})
    for_h2 = ok(server, "harvester/add_command", {"command": "SET_N_WORKERS", "harvester_id": "h2",
                                                  "params": {"queue": "TEST_PQ", "n_workers": None}})
    got1 = ok(server, "harvester/acquire_commands", {"harvester_id": "h1", "n_commands": 10}, token)
    assert got1 == [{"command_id": anyone["command_id"], "command": "KILL_WORKERS", "params": {"queue": "TEST_PQ"},
                     "ack_requested": True}]
    got2 = ok(server, "harvester/acquire_commands", {"harvester_id": "h2", "n_commands": 10}, token2)
    assert [c["command_id"] for c in got2] == [for_h2["command_id"]]
    assert got2[0]["params"] == {"queue": "TEST_PQ", "n_workers": None}
    assert ok(server, "harvester/acquire_commands", {"harvester_id": "h2", "n_commands": 10}, token2) == []
    # h2 cannot acknowledge h1's command; h1 can
    ok(server, "harvester/acknowledge_commands", {"harvester_id": "h2", "command_ids": [anyone["command_id"]]}, token2)
    states = {c["command_id"]: c["status"] for c in ok(server, "harvester/list_commands")}
    assert states == {anyone["command_id"]: "sent", for_h2["command_id"]: "sent"}
    ok(server, "harvester/acknowledge_commands", {"harvester_id": "h1", "command_ids": [anyone["command_id"]]}, token)
    states = {c["command_id"]: c["status"] for c in ok(server, "harvester/list_commands")}
    assert states[anyone["command_id"]] == "acknowledged"


def test_queue_demand_follows_dispatch_labels(harvester):
    server, token = harvester
    open_db(server)
    set_queue("PROD_Q", prodsourcelabels=["managed"])
    set_queue("ANY_Q")
    set_queue("TEST_Q", status="test")
    jobs = ([make_job("PROD_Q"), make_job("PROD_Q"), make_job("PROD_Q", prodSourceLabel="user"), make_job("ANY_Q"),
             make_job("ANY_Q", prodSourceLabel="user"), make_job("TEST_Q"), make_job("TEST_Q", prodSourceLabel="test")])
    ok(server, "job/submit", {"jobs": jobs})
    (sent,) = ok(server, "pilot/acquire_jobs", {"computing_element": "PROD_Q"}, token)
    ok(server, "pilot/update_job", {"job_id": sent["PandaID"], "job_status": "running"}, token)
    demand = ok(server, "harvester/get_queue_demand", {"harvester_id": "h1",
                                                       "queues": ["PROD_Q", "ANY_Q", "TEST_Q", "NONE_Q"]}, token)
    zero = {"activated": 0, "sent": 0, "starting": 0, "running": 0}
    assert demand == {"PROD_Q": dict(zero, activated=1, running=1), "ANY_Q": dict(zero, activated=2),
                      "TEST_Q": dict(zero, activated=1), "NONE_Q": zero}


def test_sent_jobs_lists_what_a_harvester_acquired_and_still_holds(harvester):
    """get_sent_jobs: the jobs harvester h1 acquired itself (no worker id) for the queue that are still sent, as
    the definitions acquire_jobs gave; not another harvester's, not a pilot's, not once they run."""
    server, token = harvester
    ids = [row[0] for row in ok(server, "job/submit", {"jobs": [make_job() for _ in range(4)]})]
    mine = ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h1", "n_jobs": 2},
              token)
    other = ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h2", "n_jobs": 1},
               server.token("harvester", "h2"))
    pilots = ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h1",
                                               "worker_id": 7}, token)
    assert len(mine) == 2 and len(other) == 1 and len(pilots) == 1
    listed = ok(server, "harvester/get_sent_jobs", {"harvester_id": "h1", "queue": "TEST_PQ"}, token)
    assert listed == sorted(mine, key=lambda job: job["PandaID"])  # the same definitions as acquire_jobs gave
    assert ok(server, "harvester/get_sent_jobs", {"harvester_id": "h1", "queue": "OTHER_PQ"}, token) == []
    ok(server, "pilot/update_jobs_bulk", {"job_list": [{"job_id": mine[0]["PandaID"], "job_status": "running"}]},
       token)
    assert [job["PandaID"] for job in ok(server, "harvester/get_sent_jobs",
                                          {"harvester_id": "h1", "queue": "TEST_PQ"}, token)] == [mine[1]["PandaID"]]
    assert set(ids) == {job["PandaID"] for job in mine + other + pilots}
    assert call(server, "harvester/get_sent_jobs", {"harvester_id": "h1"}, token).status_code == 400


def test_sent_jobs_come_in_pages_and_leave_out_jobs_being_killed(harvester):
    server, token = harvester
    ok(server, "job/submit", {"jobs": [make_job() for _ in range(3)]})
    sent = ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h1", "n_jobs": 3},
              token)
    first, second, third = sorted(job["PandaID"] for job in sent)
    page = {"harvester_id": "h1", "queue": "TEST_PQ", "limit": 2}
    assert [j["PandaID"] for j in ok(server, "harvester/get_sent_jobs", page, token)] == [first, second]
    assert [j["PandaID"] for j in ok(server, "harvester/get_sent_jobs", dict(page, after=second), token)] == [third]
    ok(server, "job/kill", {"job_ids": [second]})  # a sent job is killed through its pilot: tobekilled
    assert [j["PandaID"] for j in ok(server, "harvester/get_sent_jobs", dict(page, limit=10), token)] == [first, third]
    assert call(server, "harvester/get_sent_jobs", dict(page, limit=0), token).status_code == 400


def test_minted_pilot_token_works_until_revoked(harvester):
    server, token = harvester
    token2 = server.token("harvester", "h2")
    minted = ok(server, "harvester/mint_pilot_token", {"harvester_id": "h1", "worker_id": 5, "queue": "TEST_PQ",
                                                       "lifetime": 3600}, token)
    assert set(minted) == {"token", "jti", "expires"} and minted["expires"].endswith("Z")
    open_db(server)
    row = models.Token.get_by_id(minted["jti"])
    assert (row.name, row.role) == ("pilot.h1.5", "pilot")
    ok(server, "job/submit", {"jobs": [make_job()]})
    got = requests.post(f"{server.url}/server/panda/getJob", data={"siteName": "TEST_PQ", "node": "n"},
                        headers=server.headers(minted["token"])).json()
    assert got["StatusCode"] == 0 and got["PandaID"]
    # another harvester may not revoke it, and the whole call is refused
    refused = call(server, "harvester/revoke_pilot_token", {"harvester_id": "h2", "jtis": [minted["jti"]]}, token2)
    assert refused.status_code == 403 and "jtis[0]" in refused.json()["message"]
    # nor may h1 revoke tokens it did not mint (its own harvester token, say)
    own = models.Token.get(models.Token.name == "h1").jti
    assert call(server, "harvester/revoke_pilot_token", {"harvester_id": "h1", "jtis": [minted["jti"], own]},
                token).status_code == 403
    assert ok(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ"}, minted["token"]) == []
    assert ok(server, "harvester/revoke_pilot_token", {"harvester_id": "h1", "jtis": [minted["jti"]]},
              token) == {"revoked": 1}
    assert call(server, "pilot/acquire_jobs", {"computing_element": "TEST_PQ"}, minted["token"]).status_code == 401
    assert ok(server, "harvester/revoke_pilot_token", {"harvester_id": "h1", "jtis": [minted["jti"], "unknown-jti"]},
              token) == {"revoked": 0}


@pytest.mark.parametrize("path, payload, field", [
    ("harvester/heartbeat", {"harvester_id": "h 1"}, "harvester_id"),
    ("harvester/heartbeat", {}, "harvester_id"),
    ("harvester/heartbeat", {"harvester_id": "h1", "start_time": "yesterday"}, "start_time"),
    ("harvester/update_workers", {"harvester_id": "h1", "workers": {"a": 1}}, "workers"),
    ("harvester/update_workers", {"harvester_id": "h1", "workers": "[oops"}, "workers"),
    ("harvester/report_worker_statistics", {"harvester_id": "h1", "statistics": {}}, "panda_queue"),
    ("harvester/report_worker_statistics", {"harvester_id": "h1", "panda_queue": "Q", "statistics": [1]},
     "statistics"),
    ("harvester/acquire_commands", {"harvester_id": "h1", "n_commands": 0}, "n_commands"),
    ("harvester/acquire_commands", {"harvester_id": "h1", "n_commands": "x"}, "n_commands"),
    ("harvester/acknowledge_commands", {"harvester_id": "h1", "command_ids": ["a"]}, "command_ids[0]"),
    ("harvester/acknowledge_commands", {"harvester_id": "h1"}, "command_ids"),
    ("harvester/get_queue_demand", {"harvester_id": "h1", "queues": "Q"}, "queues"),
    ("harvester/get_queue_demand", {"harvester_id": "h1", "queues": [None]}, "queues[0]"),
    ("harvester/mint_pilot_token", {"harvester_id": "h1", "worker_id": 1, "queue": "Q", "lifetime": 8 * 86400},
     "lifetime"),
    ("harvester/mint_pilot_token", {"harvester_id": "h1", "worker_id": 1, "queue": "Q"}, "lifetime"),
    ("harvester/mint_pilot_token", {"harvester_id": "h1", "worker_id": -1, "queue": "Q", "lifetime": 60},
     "worker_id"),
    ("harvester/mint_pilot_token", {"harvester_id": "h1", "worker_id": 1, "lifetime": 60}, "queue"),
    ("harvester/revoke_pilot_token", {"harvester_id": "h1", "jtis": "abc"}, "jtis"),
    ("harvester/add_command", {"command": "REBOOT"}, "command"),
    ("harvester/add_command", {"command": "SET_N_WORKERS", "params": {"queue": "Q"}}, "params.n_workers"),
    ("harvester/add_command", {"command": "KILL_WORKERS", "params": {}}, "params"),
    ("harvester/add_command", {"command": "KILL_WORKERS", "params": {"worker_ids": [1.5]}}, "params.worker_ids[0]"),
    ("harvester/list_workers", {"limit": 0}, "limit"),
])
def test_bad_input_is_refused_naming_the_field(sqlite_server, path, payload, field):
    reply = call(sqlite_server, path, payload)
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"].startswith(field + ":"), reply.json()["message"]
    open_db(sqlite_server)
    assert models.HarvesterInstance.select().count() == 0 and models.HarvesterCommand.select().count() == 0
    assert models.Token.select().count() == 1  # the admin token only
