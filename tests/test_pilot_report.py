"""Update parameters, the job report, and timing."""
import json

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
