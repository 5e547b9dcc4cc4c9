"""Who may act for what (docs/protocol.md, "Who may act for what"): a harvester token speaks only for its own
harvester id, a pilot token a harvester minted speaks only for its queue and the jobs of its worker, a harvester
fails as orphaned only the jobs it acquired or bound to that worker; admin acts for any. Token auth on, through the
WSGI app in-process on a real SQLite file."""
import json

import pytest
from conftest import make_job
from minipanda.api.app import ServerContext, make_app
from minipanda.core import auth, models, schema
from test_api_params import call

SECRET = b"s" * 32


class Api:
    """The app with token auth, and tokens made for it."""

    def __init__(self, app):
        self.app = app
        self.admin = self.token("admin", "admin")

    def token(self, role, name):
        return auth.create_token(SECRET, name, role)[0]

    def post(self, path, body, token=None):
        """(HTTP status, reply as JSON)."""
        status, reply = call(self.app, "POST", path, json.dumps(body).encode(),
                             headers={"Authorization": f"Bearer {token or self.admin}",
                                      "Accept": "application/json"})
        return status, json.loads(reply)

    def ok(self, path, body, token=None):
        status, reply = self.post(path, body, token)
        assert status == 200 and reply.get("success", True), reply
        return reply["data"] if "data" in reply else reply

    def submit(self, *queues):
        return [row[0] for row in self.ok("/api/v1/job/submit", {"jobs": [make_job(q) for q in queues]})]

    def mint(self, harvester_token, harvester_id, worker_id, queue, **extra):
        return self.ok("/api/v1/harvester/mint_pilot_token", dict(
            {"harvester_id": harvester_id, "worker_id": worker_id, "queue": queue, "lifetime": 3600}, **extra),
            harvester_token)["token"]

    def status(self, panda_id):
        return models.Job.get_by_id(panda_id).status


@pytest.fixture
def api(tmp_path):
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    yield Api(make_app(ServerContext(home=str(tmp_path), secret=SECRET)))
    database.close()


def worker(worker_id, status="running", queue="TEST_PQ", pandaids=()):
    return {"workerID": worker_id, "batchID": f"b{worker_id}", "computingSite": queue, "status": status,
            "pandaid_list": list(pandaids), "diagMessage": "gone"}


# ---- harvester tokens ------------------------------------------------------------------------------------------

HARVESTER_CALLS = [
    ("heartbeat", {"version": "1"}),
    ("update_workers", {"workers": [worker(1)]}),
    ("report_worker_statistics", {"panda_queue": "TEST_PQ", "statistics": {}}),
    ("acquire_commands", {"n_commands": 1}),
    ("acknowledge_commands", {"command_ids": [1]}),
    ("get_queue_demand", {"queues": ["TEST_PQ"]}),
    ("get_sent_jobs", {"queue": "TEST_PQ"}),
    ("mint_pilot_token", {"worker_id": 1, "queue": "TEST_PQ", "lifetime": 3600}),
    ("revoke_pilot_token", {"jtis": ["x"]}),
]


@pytest.mark.parametrize("method, body", HARVESTER_CALLS)
def test_a_harvester_token_speaks_only_for_its_own_harvester_id(api, method, body):
    h2 = api.token("harvester", "h2")
    status, reply = api.post(f"/api/v1/harvester/{method}", dict(body, harvester_id="h1"), h2)
    assert status == 403, reply
    assert "h1" in reply["message"] and "h2" in reply["message"]
    assert api.post(f"/api/v1/harvester/{method}", dict(body, harvester_id="h2"), h2)[0] == 200
    assert api.post(f"/api/v1/harvester/{method}", dict(body, harvester_id="h1"))[0] == 200  # admin: any


def test_another_harvesters_workers_commands_and_tokens_are_out_of_reach(api):
    h1, h2 = api.token("harvester", "h1"), api.token("harvester", "h2")
    api.ok("/api/v1/harvester/update_workers", {"harvester_id": "h1", "workers": [worker(1)]}, h1)
    command = api.ok("/api/v1/harvester/add_command", {"command": "REPORT_WORKER_STATS", "harvester_id": "h1"})
    minted = api.ok("/api/v1/harvester/mint_pilot_token", {"harvester_id": "h1", "worker_id": 1,
                                                            "queue": "TEST_PQ", "lifetime": 3600}, h1)
    for method, body in (("update_workers", {"workers": [worker(1, status="cancelled")]}),
                         ("acquire_commands", {"n_commands": 5}),
                         ("revoke_pilot_token", {"jtis": [minted["jti"]]})):
        assert api.post(f"/api/v1/harvester/{method}", dict(body, harvester_id="h1"), h2)[0] == 403
    assert models.Worker.get().status == "running"
    assert models.HarvesterCommand.get_by_id(command["command_id"]).status == "queued"
    assert models.Token.get_by_id(minted["jti"]).revoked is None


def test_a_harvester_acquires_and_relays_only_as_itself(api):
    h2 = api.token("harvester", "h2")
    (mine, other) = api.submit("TEST_PQ", "TEST_PQ")
    status, reply = api.post("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ", "harvester_id": "h1"},
                             h2)
    assert status == 403 and "h1" in reply["message"] and api.status(mine) == "activated"
    (job,) = api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ"}, h2)  # its id filled in
    assert models.Job.get_by_id(job["PandaID"]).harvester_id == "h2"
    # a job dispatched to a plain pilot is not h2's to report on
    plain = api.token("pilot", "sitepilot")
    (taken,) = api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ"}, plain)
    (reply,) = api.ok("/api/v1/pilot/update_jobs_bulk", {"job_list": [{"job_id": taken["PandaID"],
                                                                        "job_status": "failed"}]}, h2)
    assert reply["StatusCode"] == 60 and "harvester h2" in reply["ErrorDiag"]
    assert api.status(taken["PandaID"]) == "sent"
    (reply,) = api.ok("/api/v1/pilot/update_jobs_bulk", {"job_list": [{"job_id": job["PandaID"],
                                                                        "job_status": "running"}]}, h2)
    assert reply["StatusCode"] == 0 and api.status(job["PandaID"]) == "running"


def test_a_harvester_token_may_not_report_pilot_status_of_another_harvesters_worker(api):
    h2 = api.token("harvester", "h2")
    status, reply = api.post("/server/panda/updateWorkerPilotStatus",
                             {"workerID": 1, "harvesterID": "h1", "status": "started"}, h2)
    assert status == 403 and "h1" in reply["ErrorDiag"] and models.Worker.select().count() == 0


# ---- orphaned jobs -------------------------------------------------------------------------------------------

def test_a_failed_worker_fails_only_jobs_its_harvester_acquired_or_bound_to_it(api):
    h1, plain = api.token("harvester", "h1"), api.token("pilot", "sitepilot")
    pushed, bound, elsewhere, foreign = api.submit("TEST_PQ", "TEST_PQ", "TEST_PQ", "OTHER_PQ")
    assert [j["PandaID"] for j in api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ"}, h1)] == \
        [pushed]  # push mode: no worker yet
    api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ", "worker_id": 7}, h1)
    api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ", "worker_id": 8}, h1)
    api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "OTHER_PQ"}, plain)  # a plain pilot's job
    api.ok("/api/v1/harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(7, status="failed", pandaids=[pushed, elsewhere, foreign])]}, h1)
    assert [api.status(pid) for pid in (pushed, bound, elsewhere, foreign)] == ["failed", "failed", "sent", "sent"]
    assert models.Job.get_by_id(bound).pilot_error_code == 1008


def test_a_worker_report_binds_the_harvesters_unbound_jobs_it_lists(api):
    h1 = api.token("harvester", "h1")
    (pid,) = api.submit("TEST_PQ")
    api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ"}, h1)
    api.ok("/api/v1/harvester/update_workers", {"harvester_id": "h1", "workers": [worker(3, pandaids=[pid])]}, h1)
    assert models.Job.get_by_id(pid).worker_id == 3
    # now worker 4's report does not take it, and worker 4 ending does not fail it
    api.ok("/api/v1/harvester/update_workers", {"harvester_id": "h1", "workers": [
        worker(4, status="failed", pandaids=[pid])]}, h1)
    assert models.Job.get_by_id(pid).worker_id == 3 and api.status(pid) == "sent"


# ---- minted pilot tokens -------------------------------------------------------------------------------------

def test_a_minted_token_takes_jobs_only_of_its_queue_and_as_its_worker(api):
    h1 = api.token("harvester", "h1")
    other, mine = api.submit("OTHER_PQ", "TEST_PQ")
    token = api.mint(h1, "h1", 5, "TEST_PQ")
    status, reply = api.post("/server/panda/getJob", {"siteName": "OTHER_PQ", "computingElement": "OTHER_PQ"}, token)
    assert status == 403 and "TEST_PQ" in reply["ErrorDiag"] and "OTHER_PQ" in reply["ErrorDiag"]
    assert api.status(other) == "activated"
    status, reply = api.post("/server/panda/getJob", {"computingElement": "TEST_PQ", "harvester_id": "h1",
                                                      "worker_id": 6}, token)
    assert status == 403 and "worker 6" in reply["ErrorDiag"]
    status, reply = api.post("/server/panda/getJob", {"computingElement": "TEST_PQ", "harvester_id": "h2"}, token)
    assert status == 403 and "harvester h2" in reply["ErrorDiag"]
    reply = api.ok("/server/panda/getJob", {"computingElement": "TEST_PQ"}, token)  # ids from the token
    job = models.Job.get_by_id(mine)
    assert reply["PandaID"] == mine and (job.harvester_id, job.worker_id) == ("h1", 5)


def test_a_minted_token_updates_only_jobs_dispatched_to_its_worker(api):
    h1, plain = api.token("harvester", "h1"), api.token("pilot", "sitepilot")
    theirs, sibling, mine = api.submit("TEST_PQ", "TEST_PQ", "TEST_PQ")
    api.ok("/server/panda/getJob", {"computingElement": "TEST_PQ", "pilotID": "their-pilot"}, plain)
    api.ok("/server/panda/getJob", {"computingElement": "TEST_PQ"}, api.mint(h1, "h1", 6, "TEST_PQ"))
    token = api.mint(h1, "h1", 5, "TEST_PQ")
    api.ok("/server/panda/getJob", {"computingElement": "TEST_PQ"}, token)
    for pid in (theirs, sibling):  # no pilotID sent: the token alone decides
        status, reply = api.post("/server/panda/updateJob", {"jobId": pid, "state": "failed"}, token)
        assert status == 403 and reply["StatusCode"] == 60 and api.status(pid) == "sent", reply
    (reply,) = api.ok("/server/panda/updateJobsInBulk", {"jobList": [{"jobId": theirs, "state": "failed"}]},
                      token)["results"]
    assert reply["StatusCode"] == 60 and api.status(theirs) == "sent"
    assert api.ok("/server/panda/updateJob", {"jobId": mine, "state": "running"}, token)["StatusCode"] == 0
    assert api.status(mine) == "running"


def test_push_jobs_are_bound_to_the_worker_at_minting_and_by_its_first_update(api):
    h1 = api.token("harvester", "h1")
    first, second = api.submit("TEST_PQ", "TEST_PQ")
    api.ok("/api/v1/pilot/acquire_jobs", {"computing_element": "TEST_PQ", "n_jobs": 2}, h1)
    token5 = api.mint(h1, "h1", 5, "TEST_PQ", panda_ids=[first])
    token6 = api.mint(h1, "h1", 6, "TEST_PQ")
    assert models.Job.get_by_id(first).worker_id == 5
    assert api.post("/server/panda/updateJob", {"jobId": first, "state": "running"}, token6)[0] == 403
    # a job handed to worker 6 after its token was made (late binding) is its own from its first update on
    assert api.ok("/server/panda/updateJob", {"jobId": second, "state": "running"}, token6)["StatusCode"] == 0
    assert models.Job.get_by_id(second).worker_id == 6
    assert api.post("/server/panda/updateJob", {"jobId": second, "state": "failed"}, token5)[0] == 403
    assert api.ok("/server/panda/updateJob", {"jobId": first, "state": "running"}, token5)["StatusCode"] == 0


def test_a_minted_token_reports_pilot_status_only_for_its_worker(api):
    token = api.mint(api.token("harvester", "h1"), "h1", 5, "TEST_PQ")
    status, reply = api.post("/server/panda/updateWorkerPilotStatus",
                             {"workerID": 6, "harvesterID": "h1", "status": "started"}, token)
    assert status == 403 and "worker 6" in reply["ErrorDiag"]
    assert api.ok("/server/panda/updateWorkerPilotStatus", {"workerID": 5, "harvesterID": "h1",
                                                            "status": "started"}, token)["StatusCode"] == 0


def test_a_token_minted_before_tokens_carried_their_binding_is_bound_by_its_name(api):
    (mine, theirs) = api.submit("TEST_PQ", "TEST_PQ")
    old = api.token("pilot", "pilot.h1.x.5")  # as mint_pilot_token named them: pilot.<harvester>.<worker>
    assert auth.identity_of({"sub": "pilot.h1.x.5", "role": "pilot"}) == auth.Identity(
        "pilot.h1.x.5", "pilot", "h1.x", 5)
    api.ok("/server/panda/getJob", {"computingElement": "TEST_PQ"}, old)
    assert (models.Job.get_by_id(mine).harvester_id, models.Job.get_by_id(mine).worker_id) == ("h1.x", 5)
    api.ok("/server/panda/getJob", {"computingElement": "TEST_PQ"}, api.token("pilot", "sitepilot"))
    assert api.post("/server/panda/updateJob", {"jobId": theirs, "state": "failed"}, old)[0] == 403


# ---- user names and scopes -----------------------------------------------------------------------------------

def test_user_names_whose_scopes_would_overlap_are_refused(api):
    api.token("user", "bob")
    with pytest.raises(ValueError, match="'bob.jr' and the existing user 'bob'"):
        api.token("user", "bob.jr")
    api.token("user", "bobby")  # not a dotted extension: its own scope
    api.token("user", "bob")  # the same user again
    api.token("user", "ann.lee")
    with pytest.raises(ValueError, match="user.ann"):
        api.token("production", "ann")
    api.token("harvester", "bob.h1")  # harvester and pilot tokens own no user scope


def test_a_user_reads_exactly_their_own_scope(api, tmp_path):
    bob, bob_jr = api.token("user", "bob"), api.token("user", "bob_jr")
    (tmp_path / "files" / "user.bob").mkdir(parents=True)
    (tmp_path / "files" / "user.bob" / "f.txt").write_text("bob's")
    (tmp_path / "files" / "user.bob.jr").mkdir(parents=True)
    (tmp_path / "files" / "user.bob.jr" / "f.txt").write_text("not bob's")
    get = lambda path, token: call(api.app, "GET", path, headers={"Authorization": f"Bearer {token}"})[0]  # noqa
    assert get("/files/user.bob/f.txt", bob) == 200
    assert get("/files/user.bob.jr/f.txt", bob) == 403
    assert get("/files/user.bob/f.txt", bob_jr) == 403


def test_a_dotted_user_reads_their_own_scope(tmp_path):
    """bob.jr (made where no user bob exists) reads user.bob.jr; before, the first part alone was compared."""
    from minipanda.core import policy

    identity = auth.Identity("bob.jr", "user")
    assert policy.may_read_scope(identity, "user.bob.jr")
    assert not policy.may_read_scope(identity, "user.bob")
    assert not policy.may_read_scope(auth.Identity("bob", "user"), "user.bob.jr")
    assert policy.may_read_scope(identity, "mc16_13TeV")


def test_a_dotted_users_task_outputs_are_in_their_whole_scope():
    from minipanda.tasks.jobbuild import dataset_scope

    assert dataset_scope("user.bob.jr.out.v1", "bob.jr") == "user.bob.jr"  # was user.bob: readable by bob only
    assert dataset_scope("user.bob.out.v1", "bob") == "user.bob"
    assert dataset_scope("user.alice.x", "bob.jr") == "user.alice"  # a manager's task may name any user scope
    assert dataset_scope("mc23.evgen", "bob.jr") is None


def test_protocol_and_operations_state_the_binding_rules_in_the_same_table():
    import pathlib

    docs = pathlib.Path(__file__).resolve().parent.parent / "docs"

    def table(name):
        text = (docs / name).read_text(encoding="utf-8")
        start = text.index("| token | acts for |")
        return text[start:text.index("\n\n", start)]

    assert table("protocol.md") == table("operations.md")
    assert "`harvester`, named `H`" in table("protocol.md")
