"""The outbox: spooled atomically, replayed idempotently, refused entries set aside."""
import json
import os

from pilot.comm import ServerClient
from pilot.outbox import Outbox
from test_pilot_harness import QUEUE

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def dispatched_job(site):
    pid = site.submit(transformation="/bin/true")
    client = ServerClient(site.server.url, site.token_file, 10)
    job = client.get_job({"computingElement": QUEUE, "pilotID": "p1", "remainingTime": 10000})
    assert job["PandaID"] == pid
    return client, pid


def test_replay_delivers_once_and_repeats_are_harmless(site, tmp_path):
    client, pid = dispatched_job(site)
    outbox = Outbox(str(tmp_path / "outbox"))
    params = {"jobId": pid, "state": "finished", "pilotID": "p1", "attemptNr": 0, "pilotErrorCode": 0}
    path = outbox.put(params)
    assert json.load(open(path))["params"] == params
    assert [n for n in os.listdir(tmp_path / "outbox")] == [f"final-{pid}-0.json"]
    assert outbox.replay(client) == (1, 0)
    outbox.put(params)  # the same report again (harvester forwarded a copy): answered alreadyDone
    assert outbox.replay(client) == (1, 0)
    assert [h["to"] for h in site.history(pid)].count("finished") == 1


def test_replay_keeps_entries_while_the_server_is_down(site, tmp_path):
    client, pid = dispatched_job(site)
    outbox = Outbox(str(tmp_path / "outbox"))
    outbox.put({"jobId": pid, "state": "failed", "pilotID": "p1", "attemptNr": 0})
    outbox.put({"jobId": pid + 1000, "state": "failed"})
    site.server.stop()
    assert outbox.replay(client) == (0, 2)
    entry = json.load(open(outbox.entries()[0]))
    assert entry["tries"] == 1


def test_refused_entries_move_aside(site, tmp_path):
    client = ServerClient(site.server.url, site.token_file, 10)
    outbox = Outbox(str(tmp_path / "outbox"))
    outbox.put({"jobId": 424242, "state": "finished"})
    (tmp_path / "outbox" / "final-1-0.json").write_text("{broken")
    assert outbox.replay(client) == (0, 0)
    assert sorted(os.listdir(tmp_path / "outbox" / "rejected")) == ["final-1-0.json", "final-424242-0.json"]


def test_claimed_entries_and_heartbeats_are_not_replayed(site, tmp_path):
    from pilot.outbox import claim, release_stale

    client, pid = dispatched_job(site)
    outbox = Outbox(str(tmp_path / "outbox"))
    path = outbox.put({"jobId": pid, "state": "finished", "pilotID": "p1", "attemptNr": 0})
    outbox.put_heartbeat({"jobId": pid, "state": "running", "pilotID": "p1"})
    claimed = claim(path, "harvester-1")  # harvester is forwarding it right now
    assert outbox.entries() == []
    assert outbox.replay(client) == (0, 0)
    assert site.status(pid) == "sent"  # not sent by the pilot
    assert sorted(os.listdir(tmp_path / "outbox")) == [f"final-{pid}-0.json.harvester-1.claimed",
                                                       f"heartbeat-{pid}.json"]
    # harvester died with it: a claim older than the limit is given back, and the pilot sends it
    release_stale(str(tmp_path / "outbox"), max_age=3600)
    assert os.path.exists(claimed)
    release_stale(str(tmp_path / "outbox"), max_age=-1)
    assert not os.path.exists(claimed)
    assert outbox.replay(client) == (1, 0)
    assert site.status(pid) == "finished"
    outbox.drop_heartbeat(pid)
    assert os.listdir(tmp_path / "outbox") == []


def test_a_claim_fails_for_the_second_claimer(tmp_path):
    from pilot.outbox import claim, unclaim

    outbox = Outbox(str(tmp_path))
    path = outbox.put({"jobId": 5, "state": "failed", "attemptNr": 2})
    first = claim(path, "pilot-1")
    assert first and claim(path, "harvester-1") is None
    assert unclaim(first) == path and json.load(open(path))["kind"] == "final"
    newer = outbox.put_heartbeat({"jobId": 5, "state": "running"})
    stale = claim(newer, "h")
    outbox.put_heartbeat({"jobId": 5, "state": "running", "cpuConsumptionTime": 9})
    unclaim(stale)  # the newer heartbeat is kept, the claimed older one dropped
    assert json.load(open(newer))["params"]["cpuConsumptionTime"] == 9
    assert sorted(os.listdir(tmp_path)) == ["final-5-2.json", "heartbeat-5.json"]


class CountingClient(ServerClient):
    """The real client, counting the updates it sends."""

    sent = 0

    def update_job(self, params):
        self.sent += 1
        return super().update_job(params)


def test_replay_sends_each_entry_exactly_once(site, tmp_path):
    _, first = dispatched_job(site)
    _, second = dispatched_job(site)
    client = CountingClient(site.server.url, site.token_file, 10)
    outbox = Outbox(str(tmp_path / "outbox"))
    for pid in (first, second):
        outbox.put({"jobId": pid, "state": "finished", "pilotID": "p1", "attemptNr": 0})
    assert outbox.replay(client) == (2, 0)
    assert client.sent == 2  # a repeat would be answered alreadyDone by the server and go unseen otherwise
