"""Update parameters, the job report, and timing."""
import json
import os

from pilot import report
from pilot.jobdata import Job


def test_update_and_fileinfo():
    job = Job({"PandaID": 5, "attemptNr": 1, "transformation": "x", "outFiles": "o.dat,l.tgz", "logFile": "l.tgz",
               "logGUID": "g-log", "coreCount": 4})
    params = report.update(job, "running", {"pilotID": "p", "batchID": "", "node": "n"})
    assert params["jobId"] == 5 and params["attemptNr"] == 1 and params["coreCount"] == 4
    assert "batchID" not in params and params["pilotID"] == "p"
    job.log.surl, job.log.fsize, job.log.adler32 = "/se/l.tgz", 10, "0000000a"
    info = json.loads(report.fileinfo(job.outputs + [job.log]))
    assert info == {"l.tgz": {"guid": "g-log", "fsize": 10, "adler32": "0000000a", "surl": "/se/l.tgz"}}
    assert report.event_status([job.log]) == [{"type": "log", "path": "/se/l.tgz", "guid": "g-log", "fsize": 10,
                                               "chksum": "0000000a"}]


def test_job_report_handling(tmp_path):
    assert report.read_job_report(str(tmp_path)) is None
    (tmp_path / "jobReport.json").write_text("[1]")
    assert report.read_job_report(str(tmp_path)) is None
    big = {"exitCode": 2, "exitMsg": "bad", "executor": [{"logfileReport": {"x": "y" * 10000}}],
           "files": {"output": [{"subFiles": [{"name": "o.dat", "file_guid": "G"}]}]}}
    assert json.loads(report.metadata(big))["executor"][0]["logfileReport"] == {}
    huge = dict(big, other="z" * 10000)
    meta = json.loads(report.metadata(huge))
    assert meta["exitCode"] == 2 and "truncated" in meta
    assert report.exit_info(big) == (2, "bad") and report.exit_info(None) == (None, None)
    assert report.report_outputs(big) == {"o.dat": "G"} and report.report_outputs({"files": 3}) == {}


def test_timing(tmp_path):
    timing = report.Timing(str(tmp_path / "t.json"))
    timing.mark(0, "PILOT_START_TIME", 100.0)
    for name, t in (("PILOT_PRE_GETJOB", 101), ("PILOT_POST_GETJOB", 103), ("PILOT_PRE_PAYLOAD", 104),
                    ("PILOT_POST_PAYLOAD", 110)):
        timing.mark(7, name, t)
    assert timing.pilot_timing(7) == "2|0|6|0|1|0"
    assert not (tmp_path / "t.json").exists()  # marks stay in memory: the pilot saves once per job
    timing.save(done=7)
    assert json.loads((tmp_path / "t.json").read_text())["7"]["PILOT_POST_PAYLOAD"] == 110
    timing.mark(8, "PILOT_PRE_GETJOB", 120)
    timing.save(done=8)  # within SAVE_EVERY_S of the last write: kept for later
    assert "8" not in json.loads((tmp_path / "t.json").read_text())
    timing.mark(0, "PILOT_END_TIME", 130.0)
    timing.save(now=True)  # the finished jobs' encoded marks and the pilot's, all in one JSON object
    assert json.loads((tmp_path / "t.json").read_text()) == {
        "0": {"PILOT_START_TIME": 100.0, "PILOT_END_TIME": 130.0}, "8": {"PILOT_PRE_GETJOB": 120},
        "7": {"PILOT_PRE_GETJOB": 101, "PILOT_POST_GETJOB": 103, "PILOT_PRE_PAYLOAD": 104, "PILOT_POST_PAYLOAD": 110}}


def test_timing_of_a_pilot_with_many_jobs_keeps_every_job_in_the_file_and_little_in_memory(tmp_path, monkeypatch):
    """Neither the pilot's memory nor a save grows with its jobs: a done job's marks are appended to the file once
    and forgotten (but for the last few); each save writes only the new jobs and the tail after them."""
    path = tmp_path / "pilot_timing.json"
    timing = report.Timing(str(path))
    monkeypatch.setattr(timing, "SAVE_EVERY_S", 0.0)
    written = []
    pwrite = os.pwrite
    monkeypatch.setattr(report.os, "pwrite", lambda fd, data, offset: written.append(len(data)) or
                        pwrite(fd, data, offset))
    timing.mark(0, "PILOT_START_TIME", 1.0)
    jobs = 3000
    for panda_id in range(1, jobs + 1):
        timing.mark(panda_id, "PILOT_PRE_GETJOB", float(panda_id))
        timing.mark(panda_id + 1, "PILOT_PRE_GETJOB", panda_id + 1.0)  # the next job, already in hand
        timing.mark(panda_id, "PILOT_POST_PAYLOAD", panda_id + 0.5)
        timing.save(done=panda_id)
        assert timing.get(panda_id, "PILOT_POST_PAYLOAD") == panda_id + 0.5  # the job loop reads it after
    timing.mark(0, "PILOT_END_TIME", 9.0)
    timing.save(now=True)
    on_disk = json.loads(path.read_text())
    assert len(on_disk) == jobs + 2  # every job done, the one in hand, the pilot's own entry
    assert on_disk["0"] == {"PILOT_START_TIME": 1.0, "PILOT_END_TIME": 9.0}
    assert on_disk[str(jobs)] == {"PILOT_PRE_GETJOB": float(jobs), "PILOT_POST_PAYLOAD": jobs + 0.5}
    assert on_disk[str(jobs + 1)] == {"PILOT_PRE_GETJOB": jobs + 1.0}
    assert len(timing.done) == timing.KEEP_DONE and set(timing.data) == {"0", str(jobs + 1)}
    assert len(written) == jobs and max(written) < 200  # one short piece per save, whatever came before


def test_a_timing_file_cut_or_removed_is_written_whole_again(tmp_path, monkeypatch):
    path = tmp_path / "pilot_timing.json"
    timing = report.Timing(str(path))
    monkeypatch.setattr(timing, "SAVE_EVERY_S", 0.0)
    timing.mark(0, "PILOT_START_TIME", 1.0)
    for panda_id in (1, 2):
        timing.mark(panda_id, "PILOT_PRE_GETJOB", float(panda_id))
        timing.save(done=panda_id)
    os.truncate(path, 5)
    timing.mark(3, "PILOT_PRE_GETJOB", 3.0)
    timing.save(done=3)
    assert json.loads(path.read_text()) == {"3": {"PILOT_PRE_GETJOB": 3.0}, "0": {"PILOT_START_TIME": 1.0}}
    path.unlink()
    timing.mark(4, "PILOT_PRE_GETJOB", 4.0)
    timing.save(done=4)
    assert json.loads(path.read_text()) == {"4": {"PILOT_PRE_GETJOB": 4.0}, "0": {"PILOT_START_TIME": 1.0}}
