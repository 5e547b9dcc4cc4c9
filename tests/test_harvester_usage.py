"""What an allocation delivered (harvester/handoff/usage.py): the pilots' usage records checked and summed into the
worker when the monitor ends it, hostile records refused with a log line (never a crash), the figures on the wire
and in `harvester explain --worker`."""
import argparse
import datetime
import json
import logging
import os

import pytest

from harvester import cli_tables
from harvester.agents.propagator import worker_dict
from harvester.handoff import usage
from harvester.handoff.snapshot import Snapshot
from harvester.transport import LocalTransport
from pilot.usage import USAGE_FILE
from test_harvester_monitor import NOW, all_say, home, monitor, reload, worker  # noqa: F401 (home: the fixture)


def record(up=100.0, wall=60.0, cpu=50.0, jobs=3, **over):
    data = {"version": 1, "up_s": up, "payload_wall_s": wall, "payload_cpu_s": cpu, "wait_s": up - wall,
            "jobs_run": jobs, "ended": True, "jobs": []}
    data.update(over)
    return json.dumps(data).encode()


@pytest.mark.parametrize("data, says", [
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe", "is not valid JSON"),
    (b"[1, 2]", "holds a JSON list, expected an object"),
    (record(version=2), "version 2, expected 1"),
    (record(up_s=None), "up_s is None, not a finite number >= 0"),
    (record(payload_wall_s=-1), "payload_wall_s is -1, not a finite number >= 0"),
    (b'{"version": 1, "up_s": NaN, "payload_wall_s": 0, "payload_cpu_s": 0, "wait_s": 0, "jobs_run": 0}',
     "up_s is nan, not a finite number >= 0"),
    (record(payload_cpu_s="5"), "payload_cpu_s is '5', not a finite number >= 0"),
    (record(payload_cpu_s=1e300), "payload_cpu_s is 1e+300 s, above 1e+09 s"),
    (record(wait_s=True), "wait_s is True, not a finite number >= 0"),
    (record(jobs_run=2.5), "jobs_run is 2.5, not a count"),
    (record(jobs_run=-1), "jobs_run is -1, not a count"),
    (record(up=10.0, wall=60.0, wait_s=0), "payload_wall_s 60 is above the pilot's up_s 10"),
])
def test_a_record_that_is_not_what_a_pilot_writes_is_refused_naming_the_file_and_field(data, says):
    with pytest.raises(usage.UsageRefused) as refused:
        usage.parse(data, "/w/1/pilot-2/worker_usage.json")
    assert str(refused.value).startswith("/w/1/pilot-2/worker_usage.json") and says in str(refused.value)


def test_a_pilot_s_record_is_taken_as_written():
    assert usage.parse(record(), "p") == usage.PilotUsage(100.0, 60.0, 50.0, 3)


def test_slot_time_is_payload_plus_wait_plus_drain_and_a_missing_pilot_is_drain():
    """4 pilot slots x 100 s: two records, one pilot that left none (its 100 s are drain), one whose figures pass
    the allocation's elapsed time (cut to it)."""
    records = [usage.PilotUsage(90.0, 60.0, 120.0, 3), None, usage.PilotUsage(80.0, 0.0, 0.0, 0),
               usage.PilotUsage(500.0, 400.0, 10.0, 1)]
    got = usage.summed(records, n_pilots=4, elapsed_s=100.0)
    assert got == usage.Delivered(payload_wall_s=160.0, payload_cpu_s=130.0, pilot_wait_s=110.0,
                                  pilot_drain_s=130.0, jobs_run=4, records=3)
    assert got.payload_wall_s + got.pilot_wait_s + got.pilot_drain_s == 4 * 100.0
    assert usage.useful_percent(got.payload_wall_s, 4, 100.0) == 40.0


def test_no_record_at_all_gives_no_figures_and_no_elapsed_gives_no_drain():
    assert usage.summed([None, None], 2, 100.0) is None
    assert usage.summed([usage.PilotUsage(10.0, 5.0, 5.0, 1)], 1, None).pilot_drain_s is None
    assert usage.useful_percent(None, 1, 100.0) is None and usage.useful_percent(5.0, 1, None) is None


def write(directory, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, USAGE_FILE), "wb") as handle:
        handle.write(data)


def test_an_ended_worker_gets_its_pilots_summed_figures_and_the_scheduler_s_charge(home):
    agent, ctx = monitor(home, all_say("finished", elapsed_s=100.0, charge_source="sacct ElapsedRaw"))
    row = worker(ctx, n_pilots=2, nodes=2)
    write(os.path.join(row.access_point, "pilot-1"), record(up=95.0, wall=80.0, cpu=150.0, jobs=4))
    write(os.path.join(row.access_point, "pilot-2"), record(up=90.0, wall=30.0, cpu=20.0, jobs=1))
    agent.run_once(NOW)
    done = reload(row)
    assert done.status == "finished"
    assert (done.elapsed_s, done.charge_source, done.payload_wall_s, done.payload_cpu_s, done.pilot_wait_s,
            done.pilot_drain_s, done.jobs_run) == (100.0, "sacct ElapsedRaw", 110.0, 170.0, 75.0, 15.0, 5)
    sent = worker_dict(done, [])
    assert {k: sent[k] for k in ("nNodes", "elapsedTime", "chargeSource", "payloadWallTime", "payloadCpuTime",
                                 "pilotWaitTime", "pilotDrainTime", "nJobsRun")} == {
        "nNodes": 2, "elapsedTime": 100.0, "chargeSource": "sacct ElapsedRaw", "payloadWallTime": 110.0,
        "payloadCpuTime": 170.0, "pilotWaitTime": 75.0, "pilotDrainTime": 15.0, "nJobsRun": 5}


def test_hostile_records_are_refused_with_a_log_line_and_count_as_drain(home, tmp_path, caplog):
    """A symlink (to a valid record), garbage, a file over the size cap, a FIFO: each pilot's slot is drain; the
    worker ends as usual and the one good record counts."""
    agent, ctx = monitor(home, all_say("finished", elapsed_s=100.0, charge_source="sacct ElapsedRaw"))
    row = worker(ctx, n_pilots=5, nodes=1)
    pilots = [os.path.join(row.access_point, f"pilot-{i}") for i in range(1, 6)]
    write(pilots[0], record(up=100.0, wall=70.0, cpu=70.0, jobs=2))
    elsewhere = tmp_path / "elsewhere"
    write(str(elsewhere), record(up=100.0, wall=100.0, cpu=100.0, jobs=9))
    os.makedirs(pilots[1])
    os.symlink(elsewhere / USAGE_FILE, os.path.join(pilots[1], USAGE_FILE))
    write(pilots[2], b"\x00garbage")
    write(pilots[3], b" " * (ctx.queues["Q"].pilot.handoff_max_bytes + 1))
    os.makedirs(pilots[4])
    os.mkfifo(os.path.join(pilots[4], USAGE_FILE))
    with caplog.at_level(logging.ERROR, logger="harvester.handoff.usage"):
        agent.run_once(NOW)
    done = reload(row)
    assert done.status == "finished" and not done.diag.startswith("monitor:"), done.diag
    assert (done.payload_wall_s, done.pilot_wait_s, done.pilot_drain_s, done.jobs_run) == (70.0, 30.0, 400.0, 2)
    refused = [r.getMessage() for r in caplog.records if "usage record refused" in r.getMessage()]
    assert len(refused) == 4, refused
    for path, why in ((pilots[1], "symlink"), (pilots[2], "not valid JSON"), (pilots[3], "over the queue's limit"),
                      (pilots[4], "not a regular file")):
        assert any(f"{path}/{USAGE_FILE}" in line and why in line for line in refused), (why, refused)


def test_usage_records_are_read_only_for_the_workers_that_end(home):
    """A running worker's record changes with every job: it is not read at each cycle, only once at the end."""
    ap = str(home / "workers" / "7")
    write(ap, record())
    transport = LocalTransport()
    assert Snapshot.take(transport, [ap]).reads == 0
    snapshot = Snapshot.take(transport, [ap], usage_of=[ap])
    assert snapshot.reads == 1 and snapshot.contents[f"{ap}/{USAGE_FILE}"] == record()


def test_without_the_scheduler_s_figure_the_charge_is_harvester_s_start_and_end(home):
    agent, ctx = monitor(home, all_say("finished"))
    row = worker(ctx, start_time=NOW - datetime.timedelta(seconds=300))
    write(row.access_point, record(up=250.0, wall=200.0, cpu=190.0, jobs=2))
    agent.run_once(NOW)
    done = reload(row)
    assert (done.elapsed_s, done.charge_source, done.pilot_drain_s) == (300.0, "harvester start/end", 50.0)


def test_a_worker_whose_pilots_left_no_record_keeps_only_the_charge(home):
    agent, ctx = monitor(home, all_say("finished", elapsed_s=60.0, charge_source="squeue TimeUsed"))
    row = worker(ctx)
    agent.run_once(NOW)
    done = reload(row)
    assert (done.elapsed_s, done.payload_wall_s, done.pilot_drain_s) == (60.0, None, None)
    assert "nJobsRun" not in worker_dict(done, []) and worker_dict(done, [])["elapsedTime"] == 60.0


def test_explain_worker_prints_charged_against_delivered_with_the_useful_share(home, capsys):
    agent, ctx = monitor(home, all_say("finished", elapsed_s=100.0, charge_source="sacct ElapsedRaw"))
    row = worker(ctx, n_pilots=4, nodes=2)
    for index, wall in ((1, 90.0), (2, 70.0), (3, 50.0)):
        write(os.path.join(row.access_point, f"pilot-{index}"), record(up=95.0, wall=wall, cpu=wall * 2, jobs=2))
    agent.run_once(NOW)
    cli_tables.explain_worker(argparse.Namespace(worker=row.worker_id, json=False))
    out = capsys.readouterr().out
    assert "charged: 2 nodes x 100 s = 0.056 node-hours (sacct ElapsedRaw)" in out, out
    assert "delivered: payloads ran 210 s wall, 420 s CPU, 6 jobs" in out, out
    assert "idle: pilots waiting 75 s (asking for jobs, staging, reporting), slots without a pilot 115 s" in out
    assert "useful: 52.5% of 4 pilot slots x 100 s ran payloads" in out, out
    cli_tables.explain_worker(argparse.Namespace(worker=row.worker_id, json=True))
    shown = json.loads(capsys.readouterr().out)["worker"]
    assert (shown["payloadWall"], shown["pilotDrain"], shown["jobsRun"], shown["usefulPercent"]) == (
        210.0, 115.0, 6, 52.5)
