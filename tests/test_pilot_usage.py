"""The pilot's usage record (pilot/usage.py): what it did with its slot, for harvester's allocation figures."""
import json
import os

from pilot import usage

pytest_plugins = ["test_pilot_harness"]

BURN = "-c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'"  # a payload that spends CPU, not wall sleeping


def test_a_job_rewrites_the_record_atomically_with_totals_over_every_job(tmp_path, monkeypatch):
    """Written after a job at most once a second (jobs in between are in the next write), always at the end."""
    monkeypatch.setattr(usage, "MAX_JOBS", 2)
    clock = [100.0]
    monkeypatch.setattr(usage.time, "monotonic", lambda: clock[0])
    record = usage.Usage(str(tmp_path), started=0.0)
    read = lambda: json.loads((tmp_path / usage.USAGE_FILE).read_text())  # noqa: E731
    record.add_job(1, 10.0, 4.0)
    assert (read()["jobs_run"], read()["payload_wall_s"]) == (1, 10.0)
    clock[0] += usage.WRITE_EVERY_S / 2
    record.add_job(2, 20.0, 30.0)
    assert read()["jobs_run"] == 1  # half a second later: not written again yet
    clock[0] += usage.WRITE_EVERY_S / 2
    record.add_job(3, -5.0, None)  # a second after the last write: written, with the job before it
    data = read()
    assert data == {"version": 1, "up_s": 101.0, "payload_wall_s": 30.0, "payload_cpu_s": 34.0, "wait_s": 71.0,
                    "jobs_run": 3, "ended": False, "jobs": [{"PandaID": 2, "wall_s": 20.0, "cpu_s": 30.0},
                                                             {"PandaID": 3, "wall_s": 0.0, "cpu_s": 0.0}]}
    record.write(ended=True)
    assert json.loads((tmp_path / usage.USAGE_FILE).read_text())["ended"] is True
    assert sorted(os.listdir(tmp_path)) == [usage.USAGE_FILE]  # no temporary file left behind


def test_the_job_loop_leaves_a_due_write_for_while_the_next_payload_runs(tmp_path, monkeypatch):
    """add_job(write=False) never writes (the job loop accounts for a job between two payloads); write_if_due
    (called once the next payload runs) writes what is due, and nothing when no job came since."""
    clock = [100.0]
    monkeypatch.setattr(usage.time, "monotonic", lambda: clock[0])
    path = tmp_path / usage.USAGE_FILE
    record = usage.Usage(str(tmp_path), started=0.0)
    record.add_job(1, 1.0, 0.5, write=False)
    assert not path.exists()
    record.write_if_due()
    assert json.loads(path.read_text())["jobs_run"] == 1
    clock[0] += usage.WRITE_EVERY_S / 2
    record.add_job(2, 1.0, 0.5, write=False)
    record.write_if_due()
    assert json.loads(path.read_text())["jobs_run"] == 1  # not due yet
    clock[0] += usage.WRITE_EVERY_S
    record.add_job(3, 1.0, 0.5, write=False)
    assert json.loads(path.read_text())["jobs_run"] == 1  # due, but left to write_if_due
    record.write_if_due()
    assert json.loads(path.read_text())["jobs_run"] == 3
    path.unlink()
    clock[0] += 10 * usage.WRITE_EVERY_S
    record.write_if_due()
    assert not path.exists()  # no job since: nothing to write


def test_a_record_that_cannot_be_written_is_said_and_never_stops_the_pilot(tmp_path, caplog):
    record = usage.Usage(str(tmp_path / "gone"), started=0.0)
    record.add_job(1, 1.0, 1.0)
    assert "cannot write the usage file" in caplog.text


def test_a_pilot_records_its_payloads_wall_and_cpu_in_its_harvester_directory(site, tmp_path):
    """Through the zipapp: two jobs, one sleeping 1 s, one spending CPU; the record counts both."""
    hwd = tmp_path / "hwd"
    hwd.mkdir()
    ids = [site.submit(transformation="/bin/sleep", jobParameters="1"),
           site.submit(transformation="/bin/sh", jobParameters=BURN)]
    code, log = site.run("--harvester-workdir", str(hwd), qd=site.queuedata(timefloor=10))
    assert code == 0, log
    data = json.loads((hwd / usage.USAGE_FILE).read_text())
    assert (data["jobs_run"], data["ended"]) == (2, True), data
    assert [job["PandaID"] for job in data["jobs"]] == ids
    sleeper, burner = data["jobs"]
    assert sleeper["wall_s"] >= 1.0 and burner["cpu_s"] > 0, data
    assert abs(data["payload_wall_s"] - sleeper["wall_s"] - burner["wall_s"]) <= 0.002  # each rounded to 1 ms
    assert data["payload_cpu_s"] >= burner["cpu_s"] - 0.002
    assert data["up_s"] >= data["payload_wall_s"]
    assert abs(data["wait_s"] - (data["up_s"] - data["payload_wall_s"])) <= 0.002
