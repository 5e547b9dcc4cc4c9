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
