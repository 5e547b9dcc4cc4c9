"""harvester/handoff/outbox.py: a pull-mode pilot's spooled updates claimed by one sender only (a rename), returned
again to the same owner after a crash, taken over when another sender's claim is stale, hostile entries moved aside,
and only claimed names ever removed."""
import os

import pytest

from harvester.errors import MessengerError
from harvester.handoff.outbox import forget
from harvester.transport import LocalTransport
from pilot.outbox import Outbox
from test_harvester_messenger import Counting, look, messenger, queuedata


def test_outbox_claim_forget_and_crash_recovery(tmp_path):
    ap = tmp_path / "workers" / "1"
    m = messenger(ap)
    m.setup(queuedata())
    pilot_box = Outbox(str(ap / "outbox"))
    pilot_box.put({"jobId": 1, "state": "finished", "attemptNr": 0})
    pilot_box.put_heartbeat({"jobId": 2, "state": "running"})
    pilot_box.put_heartbeat({"jobId": 1, "state": "running"})  # superseded by job 1's final update
    (ap / "outbox" / ".final-3-0.json.abc.tmp").write_text('{"par')  # the pilot is still writing this one
    transport = Counting()
    m, _ = look(ap, transport)
    claimed = m.claim_outbox("h1")
    assert transport.calls == 3  # listing, reads (none changed here), then the claims and their reads in one
    kinds = {e["params"]["jobId"]: e["kind"] for _, e in claimed}
    assert kinds == {1: "final", 2: "heartbeat"}
    assert pilot_box.entries() == []  # the pilot's replay no longer sees them
    assert not (ap / "outbox" / "heartbeat-1.json").exists() and not any(
        n.startswith("heartbeat-1.") for n in os.listdir(ap / "outbox"))
    paths = {e["params"]["jobId"]: p for p, e in claimed}

    # harvester crashed: the next run (same owner) gets the same entries again; another owner does not
    assert look(ap)[0].claim_outbox("h2") == []
    again = look(ap)[0].claim_outbox("h1")
    assert sorted(p for p, _ in again) == sorted(paths.values())

    forget(LocalTransport(), str(tmp_path / "workers"), [paths[1]])
    assert not os.path.exists(paths[1])
    with pytest.raises(MessengerError):
        forget(LocalTransport(), str(tmp_path / "workers"), [str(ap / "outbox" / "heartbeat-2.json")])  # unclaimed

    # a claim whose sender died long ago is taken over (the pilot does the same after STALE_CLAIM)
    assert look(ap)[0].claim_outbox("h4", stale_after=3600) == []
    [(taken, entry)] = look(ap)[0].claim_outbox("h4", stale_after=-1)
    assert taken.endswith(".h4.claimed") and entry["kind"] == "heartbeat" and not os.path.exists(paths[2])
    (ap / "outbox" / "final-9-0.json").write_text("not json")
    os.symlink(tmp_path / "secret", ap / "outbox" / "final-8-0.json")
    assert look(ap)[0].claim_outbox("h4", stale_after=3600) == [(taken, entry)]
    assert sorted(os.listdir(ap / "outbox" / "rejected")) == ["final-8-0.json.h4.claimed",
                                                              "final-9-0.json.h4.claimed"]
