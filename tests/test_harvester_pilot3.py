"""End to end with PanDA's REAL pilot3 (panda-pilot 3.7.0.36) started by harvester in PUSH mode, file mode.

`minipanda serve` + `harvester run` + the local batch system; the queue is ``mode: push``, ``wnconnectivity:
none`` and its ``pilot.command`` starts pilot3 in harvester mode (``-z --harvester-submit-mode PUSH``), so the pilot
never talks to the server: harvester fetches the job, hands it over in ``pandaJobData.out`` with the payload
script, reads ``worker_attributes.json`` and ``kill_worker`` and reports for the pilot.

pilot3 kills every orphan process of its user at job end: it runs only with PILOT_NOKILL=1 and inside its own PID
namespace (the command starts with ``unshare -pf --mount-proc --kill-child``), as tests/pilot3/harness.py does.
"""
import json
import os
import sys

import pytest

from harvesterhelp import QUEUE, Testbed, queue_config
from pilot3.harness import _FAST_FAIL_LAUNCHER, pilot3_or_skip, write_fast_config

pytestmark = pytest.mark.pilot3

RUNME = ("#!/bin/sh\necho \"payload args: $*\"\necho 'a line on stderr' >&2\necho result > out.txt\n"
         "exit \"$1\"\n")
UNSHARE = ["unshare", "-pf", "--mount-proc", "--kill-child"]


@pytest.fixture(scope="module")
def pilot3():
    return pilot3_or_skip()


def pilot3_queue(pilot_dir, base, fast_fail=False, output_dir=None):
    """The queue's ``pilot`` section: pilot3 in harvester PUSH mode, no server, in its own PID namespace.

    fast_fail: start pilot.py through the harness's launcher that cuts pilot3's fixed 115 s wait after a failed
    job (tests/pilot3/NOTES.md); the pilot is otherwise unmodified.
    output_dir: the queue's shared output directory, where pilot3's ``mv`` puts the log (``--output-dir``; the
    queuedata of a shared output says ``catchall: mv_final_destination``).
    """
    os.makedirs(base, exist_ok=True)
    config = write_fast_config(pilot_dir, os.path.join(base, "pilot3.cfg"))
    interp = [sys.executable, os.path.join(pilot_dir, "pilot.py")]
    if fast_fail:
        launcher = os.path.join(base, "fast_fail_launcher.py")
        with open(launcher, "w") as handle:
            handle.write(_FAST_FAIL_LAUNCHER)
        interp = [sys.executable, launcher, os.path.join(pilot_dir, "pilot.py")]
    command = [*UNSHARE, *interp,
               "-q", "{queue}", "-w", "generic", "--pilot-user", "generic", "-j", "managed",
               "-z", "--harvester-submit-mode", "PUSH",
               "--harvester-workdir", "{access_point}", "--harvester-datadir", "{access_point}",
               "--queuedata-url", "{queuedata}",
               "--storagedata-url", "{storagedata}",  # written by harvester: pilot3 never asks CERN's CRIC
               "-t", "-d", "-l", "600", "--use-rucio-traces", "False"]
    if output_dir:
        command += ["--output-dir", str(output_dir)]
    environment = {
        "PILOT_NOKILL": "1",  # never run the orphan killer (the PID namespace is the second guard)
        "GTAG": "minipanda-harvester",
        "LOCAL_AGIS_SCHEDCONF": "{access_point}/schedconfig.json",  # written by the messenger; no CVMFS, no CRIC
        "HARVESTER_PILOT_CONFIG": str(config),  # heartbeat every 10 s
        "PYTHONUNBUFFERED": "1",
    }
    return {"command": command, "environment": environment, "heartbeat": 5}


@pytest.fixture
def testbed_factory(tmp_path, pilot3):
    beds = []

    def make(fast_fail=False, output_dir=None):
        base = tmp_path / f"bed{len(beds)}"
        pilot = pilot3_queue(pilot3, str(base / "pilot3"), fast_fail=fast_fail, output_dir=output_dir)
        over = {"storage": {"output": {"type": "shared", "path": str(output_dir)}}} if output_dir else {}
        bed = Testbed(base, {QUEUE: queue_config(mode="push", wnconnectivity="none", pilot=pilot, **over)})
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()


def final_workers(bed, n):
    return bed.wait_for(lambda: (lambda ws: ws if len(ws) == n and all(
        w["status"] in ("finished", "failed") for w in ws) else None)(bed.workers()), f"{n} workers final")


def the_worker(bed):
    """The one worker, without waiting for pilot3's fixed ~30 s shutdown (close() ends its PID namespace)."""
    return bed.wait_for(lambda: (lambda ws: ws[0] if len(ws) == 1 and ws[0]["accessPoint"] else None)(
        bed.workers()), "the worker")


def pilot_out(worker):
    try:
        with open(os.path.join(worker["accessPoint"], "job.out"), errors="replace") as handle:
            return handle.read()[-4000:]
    except OSError:
        return ""


def check_no_server_contact(bed, worker):
    """pilot3 had no URL and no token; everything went through the access point."""
    with open(os.path.join(worker["accessPoint"], "job.sh")) as handle:
        script = handle.read()
    assert "unshare -pf --mount-proc --kill-child" in script and "export PILOT_NOKILL=1" in script
    assert " -z " in script and bed.server.url not in script and "pilot.token" not in script
    assert not os.path.exists(os.path.join(worker["accessPoint"], "pilot.token"))
    log = bed.server.read_log()
    assert "/server/panda/getJob" not in log and "/server/panda/updateJob" not in log
    assert "/trf/user/runme.sh" in log  # fetched by harvester, for the access point


def test_pilot3_push_mode_job_finishes(testbed_factory):
    bed = testbed_factory()
    trf = bed.script("runme.sh", RUNME)
    [pid] = bed.submit(1, transformation=trf, jobParameters="0", Files=[])
    bed.start()
    bed.wait_for(lambda: bed.statuses([pid])[pid] in ("finished", "failed"), "the job to end", timeout=240)
    [worker] = final_workers(bed, 1)
    job = bed.job(pid)
    assert job["jobStatus"] == "finished", (job, pilot_out(worker))
    assert (job["transExitCode"], job["pilotErrorCode"]) == (0, 0)
    assert "PR|3.7.0.36" in job["pilotID"]  # pilot3's own report, relayed by harvester
    assert worker["status"] == "finished"
    ap = worker["accessPoint"]
    with open(os.path.join(ap, "worker_attributes.json")) as handle:
        attributes = json.load(handle)
    assert str(attributes["jobId"]) == str(pid) and attributes["state"] == "finished"
    assert os.path.exists(os.path.join(ap, "kill_worker"))
    assert not os.path.exists(os.path.join(ap, "pandaJobData.out"))  # taken by the pilot
    check_no_server_contact(bed, worker)
    assert bed.db().execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0  # every report delivered


def test_pilot3_push_mode_failing_payload(testbed_factory):
    bed = testbed_factory(fast_fail=True)
    trf = bed.script("runme.sh", RUNME)
    [pid] = bed.submit(1, transformation=trf, jobParameters="3", Files=[])
    bed.start()
    bed.wait_for(lambda: bed.statuses([pid])[pid] in ("finished", "failed"), "the job to end", timeout=240)
    worker = the_worker(bed)
    job = bed.job(pid)
    assert job["jobStatus"] == "failed", (job, pilot_out(worker))
    assert (job["pilotErrorCode"], job["transExitCode"]) == (1305, 3), job  # pilot3's codes, not harvester's 1008
    assert "PR|3.7.0.36" in job["pilotID"]
    check_no_server_contact(bed, worker)


def test_pilot3_push_mode_log_to_shared_output(testbed_factory, tmp_path):
    """A job with a log file on a queue with a shared output directory: pilot3 tars the job directory and moves the
    tarball there itself (harvester's queuedata gives it the mv copytool and mv_final_destination)."""
    outdir = tmp_path / "storage"
    outdir.mkdir()
    bed = testbed_factory(output_dir=outdir)
    trf = bed.script("runme.sh", RUNME)
    [pid] = bed.submit(1, transformation=trf, jobParameters="0",
                       Files=[{"type": "log", "lfn": "probe.log.tgz", "scope": "test"}])
    bed.start()
    bed.wait_for(lambda: bed.statuses([pid])[pid] in ("finished", "failed"), "the job to end", timeout=240)
    worker = the_worker(bed)
    job = bed.job(pid)
    assert job["jobStatus"] == "finished", (job, pilot_out(worker))
    assert (job["transExitCode"], job["pilotErrorCode"]) == (0, 0)
    landed = [path for path in outdir.rglob("probe.log.tgz") if path.is_file()]
    assert len(landed) == 1 and landed[0].stat().st_size > 0, list(outdir.rglob("*"))
    assert landed[0].relative_to(outdir).parts[0] == "test"  # <scope>/<xx>/<yy>/<lfn>
    check_no_server_contact(bed, worker)
    # pilot3 3.7.0.36 never writes event_status.dump.json (tests/pilot3/NOTES.md), so the log's size, checksum and
    # place are not in the final report: the server's file row is not updated.
