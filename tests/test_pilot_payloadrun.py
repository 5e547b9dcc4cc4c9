"""A job's payload through the zipapp pilot (pilot.payloadrun): its exit code and job report, the limits it is
killed for, and the outputs it left."""
import glob
import json
import os
import shutil

from test_pilot_harness import marked_sleep, processes_with

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def test_nonzero_exit_fails_with_1305(site):
    pid = site.submit(transformation="/bin/sh", jobParameters="-c 'echo failing >&2; exit 3'")
    code, log = site.run()
    assert code == 0, log  # the pilot itself worked
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"], job["transExitCode"]) == ("failed", 1305, 3)
    assert "exited with 3" in job["pilotErrorDiag"]


def test_job_report_is_read(site):
    report = json.dumps({"exitCode": 0, "exitMsg": "OK", "executor": [{"name": "x", "logfileReport": {"a": 1}}]})
    pid = site.submit(transformation="/bin/sh", jobParameters=f"-c 'printf %s \"$1\" > jobReport.json' sh '{report}'")
    code, log = site.run()
    assert code == 0, log
    job = site.job(pid)
    assert job["jobStatus"] == "finished"
    meta = json.loads(job["metadata"])
    assert meta["exitMsg"] == "OK" and meta["executor"][0]["logfileReport"] == {}


def test_memory_blowup_killed_with_1235(site):
    hog = "import time; x = b'x' * (300 << 20); print('allocated', flush=True); time.sleep(120)"
    pid = site.submit(transformation="python3", jobParameters=f'-c "{hog}"', minRamCount=50)
    code, log = site.run(qd=site.queuedata(pilot_memory_grace=1.0))
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1235), job["pilotErrorDiag"]
    assert job["maxPSS"] > 50 * 1024


def test_looping_job_killed_with_1150(site):
    pid = site.submit(transformation="/bin/sleep", jobParameters="120")
    code, log = site.run(qd=site.queuedata(pilot_looping_limit=1))
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1150), job["pilotErrorDiag"]


def test_walltime_exceeded_killed_with_1213(site):
    busy = "-c 'while true; do date > tick; sleep 0.1; done'"
    pid = site.submit(transformation="/bin/sh", jobParameters=busy, maxWalltime=1)
    code, log = site.run(qd=site.queuedata(pilot_walltime_grace=1.0))
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1213), job["pilotErrorDiag"]


def test_missing_output_fails_with_1165_and_log_still_staged(site):
    pid = site.submit(transformation="/bin/true", jobParameters="",
                      Files=[{"type": "output", "lfn": "never.dat", "scope": "u"},
                             {"type": "log", "lfn": "l.tgz", "scope": "u"}])
    code, log = site.run()
    assert code == 0, log
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1165)
    files = {f["lfn"]: f for f in job["Files"]}
    assert files["l.tgz"]["checksum"] and os.path.exists(os.path.join(site.outputs(), "u", "l.tgz"))


def test_allow_no_output_and_empty_output(site):
    pid = site.submit(transformation="/bin/sh", jobParameters="-c ': > empty.dat'", allowNoOutput="skipped.dat",
                      Files=[{"type": "output", "lfn": "skipped.dat"}, {"type": "output", "lfn": "empty.dat"},
                             {"type": "log", "lfn": "l.tgz"}])
    code, log = site.run()
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1350), log


def test_job_directory_removed_under_the_pilot_still_kills_the_payload(site):
    marker = f"vanish-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    pid = site.submit(transformation="/bin/sh", jobParameters=f"-c '{sleep} 300 & wait'")
    proc = site.start()
    site.wait_for(lambda: site.status(pid) == "running" and processes_with(marker), "job running")
    for job_dir in glob.glob(os.path.join(site.workdir, "PanDA_Pilot-*", f"PandaJob_{pid}")):
        shutil.rmtree(job_dir)
    assert proc.wait(60) == 0, site.log()
    assert site.job(pid)["jobStatus"] == "failed"
    assert processes_with(marker) == []
