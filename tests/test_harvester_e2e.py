"""End to end with real processes: `minipanda serve` + `harvester run` + the local batch system + the pilot zipapp.

Pull mode (pilots fetch their jobs over HTTP), push mode where the pilot is given NO server URL (harvester fetches
the jobs, hands them over in files and reports for the pilot), and ManyToOne (one pilot, several jobs).
"""
import os

import pytest

from harvesterhelp import QUEUE, Testbed, queue_config

ECHO = '#!/bin/sh\necho "payload ran with: $*"\n'


def all_finished(bed):
    """The workers when there are some and every one is finished, else None."""
    workers = bed.workers()
    return workers if workers and all(w["status"] == "finished" for w in workers) else None


@pytest.fixture
def testbed_factory(tmp_path):
    beds = []

    def make(**queue_over):
        bed = Testbed(tmp_path / f"bed{len(beds)}", {QUEUE: queue_config(**queue_over)})
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()


def test_pull_mode_runs_jobs_and_explains(testbed_factory):
    bed = testbed_factory()
    trf = bed.script("echo.sh", ECHO)
    ids = bed.submit(3, transformation=trf)
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "3 jobs finished")
    bed.wait_for(lambda: all(w["status"] == "finished" for w in bed.workers()), "every worker finished")
    workers = bed.workers()
    assert 1 <= len(workers) <= 4  # maxWorkers; pilots only for activated jobs
    assert all(w["batchID"] for w in workers)
    # the server knows the workers harvester reported, with their final state
    reported = bed.wait_for(lambda: (lambda rows: rows if rows and all(r["status"] == "finished" for r in rows)
                                     else None)(bed.v1("harvester/list_workers", queue=QUEUE)),
                            "the server to know every worker finished")
    assert {r["workerID"] for r in reported} == {w["workerID"] for w in workers}
    # every pilot token minted for a worker is revoked once the worker ended
    def revoked():
        with bed.db() as conn:
            rows = conn.execute("SELECT pilot_token_jti, token_revoked FROM worker").fetchall()
        return rows and all(jti and done for jti, done in rows)

    bed.wait_for(revoked, "the pilot tokens of ended workers revoked")
    bed.stop()
    explain = bed.cli("explain", QUEUE)
    assert explain.returncode == 0 and "<- winner" in explain.stdout, explain.stdout + explain.stderr
    status = bed.cli("status")
    assert status.returncode == 0 and QUEUE in status.stdout and "monitor" in status.stdout
    one = bed.cli("explain", "--worker", str(workers[0]["workerID"]))
    assert "submitted -> running" in one.stdout or "submitted -> finished" in one.stdout, one.stdout


def test_push_mode_pilot_without_server_url(testbed_factory):
    bed = testbed_factory(mode="push", wnconnectivity="none")
    trf = bed.script("echo.sh", ECHO)
    ids = bed.submit(2, transformation=trf)
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "2 jobs finished")
    workers = bed.wait_for(lambda: all_finished(bed), "workers finished")
    assert len(workers) == 2
    for worker in workers:  # the pilot had no URL and no token: it only ever wrote files
        with open(os.path.join(worker["accessPoint"], "job.sh")) as handle:
            script = handle.read()
        assert "--url" not in script and "pilot.token" not in script and " -z " in script
        assert not os.path.exists(os.path.join(worker["accessPoint"], "pilot.token"))
    assert bed.db().execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0  # every report delivered


def test_many_to_one(testbed_factory):
    bed = testbed_factory(mode="push", mapType="ManyToOne", jobsPerWorker=3, wnconnectivity="none",
                          pilot={"timefloor": 10, "handoff_wait": 2})
    trf = bed.script("echo.sh", ECHO)
    ids = bed.submit(3, transformation=trf)
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "3 jobs finished")
    workers = bed.wait_for(lambda: all_finished(bed), "the worker finished")
    assert len(workers) == 1
    with bed.db() as conn:
        bound = {row[0] for row in conn.execute("SELECT panda_id FROM job_worker WHERE worker_id = ?",
                                                (workers[0]["workerID"],))}
    assert bound == set(ids)


def pilot_dirs_and_jobs(worker):
    """{pilot directory name: PandaIDs its pilot ran} of a worker's access point."""
    import json

    found = {}
    for name in sorted(os.listdir(worker["accessPoint"])):
        path = os.path.join(worker["accessPoint"], name, "worker_pandaids.json")
        if name.startswith("pilot-") and os.path.exists(path):
            with open(path) as handle:
                found[name] = json.load(handle)
    return found


def test_many_to_one_with_two_pilots_in_one_worker(testbed_factory):
    """pilot.per_worker 2: one batch job, two pilots side by side, each with its own handoff directory and half
    the worker's jobs (no network on the node: harvester relays both pilots' files)."""
    bed = testbed_factory(mode="push", mapType="ManyToOne", jobsPerWorker=4, wnconnectivity="none",
                          pilot={"timefloor": 10, "handoff_wait": 2, "per_worker": 2},
                          limits={"maxWorkers": 1, "nQueueLimitWorker": 1, "maxNewWorkersPerCycle": 1})
    trf = bed.script("echo.sh", ECHO)
    ids = bed.submit(4, transformation=trf)
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "4 jobs finished")
    workers = bed.wait_for(lambda: all_finished(bed), "the worker finished")
    assert len(workers) == 1 and workers[0]["cores"] == 2
    ran = pilot_dirs_and_jobs(workers[0])
    assert sorted(ran) == ["pilot-1", "pilot-2"]
    assert sorted(ran["pilot-1"] + ran["pilot-2"]) == sorted(ids)
    assert len(ran["pilot-1"]) == len(ran["pilot-2"]) == 2  # dealt out in turn
    with bed.db() as conn:
        bound = {row[0] for row in conn.execute("SELECT panda_id FROM job_worker WHERE worker_id = ?",
                                                (workers[0]["workerID"],))}
    assert bound == set(ids)


def rendezvous(directory, n):
    """A payload that returns only once ``n`` payloads are running at the same time (each leaves a file in
    ``directory`` and waits for the others; it fails after 2 minutes alone): jobs that finish ran side by side."""
    return (f"#!/bin/sh\ntouch {directory}/$$\ni=0\n"
            f"while [ \"$(ls {directory} | wc -l)\" -lt {n} ]; do\n"
            "  i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.1\ndone\n")


def test_pull_mode_with_three_pilots_in_one_worker(testbed_factory, tmp_path):
    """pilot.per_worker 3 in pull mode: one worker whose three pilots each fetch a job from the server and run it
    at the same time (the payloads wait for each other)."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    bed = testbed_factory(pilot={"timefloor": 10, "per_worker": 3, "environment": {"SCHEDCONF": "{queuedata}"}},
                          limits={"maxWorkers": 1, "nQueueLimitWorker": 1, "maxNewWorkersPerCycle": 1})
    ids = bed.submit(3, transformation=bed.script("meet.sh", rendezvous(meeting, 3)))
    bed.start()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "3 jobs finished")
    workers = bed.wait_for(lambda: all_finished(bed), "the worker finished")
    assert len(workers) == 1 and workers[0]["pilots"] == 3 and workers[0]["cores"] == 3
    ran = pilot_dirs_and_jobs(workers[0])
    assert sorted(ran) == ["pilot-1", "pilot-2", "pilot-3"]
    assert sorted(sum(ran.values(), [])) == sorted(ids) and all(len(jobs) == 1 for jobs in ran.values())
    with bed.db() as conn:  # the monitor saw no pilot left waiting for a job
        assert conn.execute("SELECT waiting_pilots FROM worker").fetchone()[0] == 0
    with open(os.path.join(workers[0]["accessPoint"], "job.sh")) as handle:
        script = handle.read()
    for index in (1, 2, 3):  # each pilot's own directory in its environment, placeholders included
        own = os.path.join(workers[0]["accessPoint"], f"pilot-{index}")
        assert f"HARVESTER_WORKDIR={own} SCHEDCONF={own}/queuedata.json " in script
