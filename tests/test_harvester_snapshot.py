"""harvester/handoff/snapshot.py: one listing of a queue's access points per cycle, only the handoff files that
changed since the previous snapshot read, and a final never taken without the outputs the pilot wrote before it."""
import json
import time

import pytest

from harvester.handoff.snapshot import Snapshot
from harvester.transport import LocalTransport
from test_harvester_messenger import Counting, messenger


def test_one_listing_per_cycle_and_only_changed_files_are_read(tmp_path):
    transport = Counting()
    aps = [tmp_path / "workers" / str(n) for n in range(1, 4)]
    for ap in aps:
        ap.mkdir(parents=True)
        (ap / "worker_attributes.json").write_text(json.dumps({"jobId": 1, "state": "running"}))
        (ap / "worker_pandaids.json").write_text("[1]")
        (ap / "worker_heartbeat.json").write_text("")
    first = Snapshot.take(transport, [str(ap) for ap in aps])
    assert transport.calls == 2 and first.reads == 6  # one listing, one read of the 6 reports
    second = Snapshot.take(transport, [str(ap) for ap in aps], previous=first)
    assert transport.calls == 3 and second.reads == 0  # nothing changed: the listing alone
    time.sleep(0.01)
    (aps[1] / "worker_attributes.json").write_text(json.dumps({"jobId": 1, "state": "finished", "x": 1}))
    third = Snapshot.take(transport, [str(ap) for ap in aps], previous=second)
    assert transport.calls == 5 and third.reads == 1
    assert messenger(aps[1], transport, third).read_attributes()["state"] == "finished"
    assert messenger(aps[0], transport, third).read_attributes()["state"] == "running"


class PilotWritesDuringTheListing(LocalTransport):
    """The local transport whose listing stats the outputs file, then lets the pilot end its job (the outputs,
    then the final, as pilot.handoff writes them), then stats the rest: a listing is not one instant."""

    def __init__(self, pilot_ends):
        self.pilot_ends = pilot_ends

    def files(self, ops):
        if ops and ops[0]["op"] == "scan":
            stale = {e[0]: e for result in super().files(ops) for e in result["entries"]
                     if e[0].endswith("event_status.dump.json")}
            self.pilot_ends()
            results = super().files(ops)
            for result in results:  # the outputs file as the listing saw it before the pilot rewrote it (or none)
                result["entries"] = [e for e in result["entries"] if not e[0].endswith("event_status.dump.json")]
                result["entries"] += list(stale.values())
            return results
        return super().files(ops)


@pytest.mark.parametrize("outputs_before", [True, False], ids=["outputs-file-rewritten", "outputs-file-new"])
def test_a_final_read_while_the_pilot_writes_it_comes_with_its_outputs(tmp_path, outputs_before):
    """The listing saw the old outputs file (or none) and the new final of job 2: the outputs file is read again,
    so the final is never taken without its outputs (harvester would report the job finished, its output unstaged)."""
    from pilot.handoff import Handoff
    from pilot.queuedata import HANDOFF_FILES

    ap = tmp_path / "workers" / "1"
    ap.mkdir(parents=True)
    handoff = Handoff(str(ap), dict(HANDOFF_FILES))
    out = {"type": "output", "path": str(ap / "out.2"), "guid": "g", "fsize": 1, "chksum": "00000001"}
    if outputs_before:
        handoff.write_final(1, {"jobId": 1, "state": "finished"}, {}, [])
    first = Snapshot.take(LocalTransport(), [str(ap)])
    transport = PilotWritesDuringTheListing(lambda: handoff.write_final(2, {"jobId": 2, "state": "finished"}, {},
                                                                        [out]))
    snapshot = Snapshot.take(transport, [str(ap)], previous=first)
    finals = {f.panda_id: f for f in messenger(ap, transport, snapshot).final_reports()}
    assert finals[2].params["state"] == "finished" and finals[2].outputs == [out], finals[2].__dict__
