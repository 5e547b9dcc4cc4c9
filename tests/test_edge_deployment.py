"""The edge deployment, for real, on hosts made of namespaces (tests/nethosts.py): ``minipanda serve`` and
``harvester run`` on edge; sshd and slurmctld on login, reached from edge over one link; two Slurm nodes that share
a directory with login only and have no route to edge. Harvester hands each pilot its job and inputs through files
on the login node, over SSH only, and relays everything back.

1. push jobs with inputs (from the queue's storage on the login node) and outputs (to the server's file store on
   edge) through the whole chain, beside a hostile "pilot" on another queue that tries each trick an outside probe
   found: an output under a symlinked directory, a final report that is a symlink, a foreign PandaID, a report far
   over the size cap, a report too large for the server's bulk update;
2. the edge <-> login link cut for 60 s while jobs end, then sshd and slurmctld on login restarted: no worker
   submitted twice, nothing lost, reports resume.

Each module starts and stops only its own namespaces and daemons. Nothing asserts on timing.
"""
import json
import os
import re
import time

import pytest

from edgehelp import EdgeSite, EdgeTestbed
from nethosts import EDGE_ADDRESS
from pilot.fileutil import adler32

pytestmark = [pytest.mark.multinode, pytest.mark.slurm, pytest.mark.ssh]

FINAL = {"finished", "failed", "cancelled", "missed"}
# reads its input, writes its output; waits for a go file first when given one
UPPER = ('#!/bin/sh\nif [ -n "$3" ]; then i=0; while [ ! -e "$3" ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); '
         'done; fi\ntr a-z A-Z < "$1" > "$2"\n')
# A hostile pilot (pilot.command on the EVIL queues): takes its job from the access point like a file-mode pilot,
# then does what the job's parameters say, as a compromised pilot or payload could.
EVIL = r'''
import json, os, sys, time
ap, outside, secret = sys.argv[1:4]
os.chdir(ap)
while not os.path.exists("pandaJobData.out"):
    time.sleep(0.2)
jobs = json.load(open("pandaJobData.out"))
os.unlink("pandaJobData.out")
[(pid, job)] = jobs.items()
mode, _, arg = str(job.get("jobPars") or job.get("jobParameters")).partition(":")

def write(name, data):
    with open(name + ".tmp", "w") as handle:
        json.dump(data, handle)
    os.replace(name + ".tmp", name)

def final(panda_id, state="finished", **extra):
    data = dict(jobId=int(panda_id), state=state, jobStatus=state, attemptNr=job.get("attemptNr", 0),
                pilotErrorCode=0, transExitCode=0)
    data.update(extra)
    return data

write("worker_pandaids.json", [int(pid)])
code = 0
if mode == "dirlink":  # an output "inside" the access point, through a symlinked directory
    os.symlink(outside, "evilscope")
    decoy = os.path.join(outside, "decoy.txt")
    write("event_status.dump.json", {pid: [{"type": "output", "path": os.path.join(ap, "evilscope", "decoy.txt"),
                                           "guid": "g", "fsize": os.path.getsize(decoy)}]})
    write("worker_attributes-%s.json" % pid, final(pid))
elif mode == "reportlink":  # the final report is a symlink to a file elsewhere
    os.symlink(secret, "worker_attributes-%s.json" % pid)
elif mode == "foreign":  # another pilot's job, claimed and reported failed
    write("worker_pandaids.json", [int(pid), int(arg)])
    write("worker_attributes-%s.json" % arg, final(arg, "failed", pilotErrorCode=1305))
    write("worker_attributes-%s.json" % pid, final(pid))
    code = 1
elif mode == "big":  # a report of int(arg) bytes
    write("worker_attributes-%s.json" % pid, final(pid, padding="x" * int(arg)))
open("kill_worker", "w").close()
sys.exit(code)
'''


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    made = EdgeSite(tmp_path_factory.mktemp("edge"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def beds(edge):
    made = []

    def make(name, queues, server_options=()):
        bed = EdgeTestbed(edge, name, queues, server_options)
        made.append(bed)
        return bed

    yield make
    for bed in made:
        bed.close()


def site_file(edge, rel, text):
    path = os.path.join(edge.site.site_dir, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def an_input(edge, lfn, text):
    path = site_file(edge, f"inputs/data/{lfn}", text)
    return {"type": "input", "lfn": lfn, "scope": "data", "fsize": os.path.getsize(path),
            "checksum": "ad:" + adler32(path), "GUID": f"guid-{lfn}"}


def storage(edge):
    """Inputs from the login node's file system, outputs to the server's file store on edge."""
    return {"input": {"type": "shared", "path": os.path.join(edge.site.site_dir, "inputs")},
            "output": {"type": "server"}}


def workers_final(bed, n):
    def check():
        workers = bed.workers()
        return workers if len(workers) >= n and all(w["status"] in FINAL and w["reported"] for w in workers) \
            else None
    return bed.wait_for(check, f"{n} workers final and reported", timeout=600)


def test_jobs_through_the_whole_chain_beside_a_hostile_pilot(edge, beds):
    site = edge.site
    outside = os.path.join(site.site_dir, "outside")
    site_file(edge, "outside/decoy.txt", "someone else's file\n")
    secret = site_file(edge, "secret.json", json.dumps({"jobId": 0, "state": "finished", "note": "s3cr3t"}))
    evil = site_file(edge, "evil.py", EVIL)
    python = "/usr/bin/python3"
    evil_pilot = {"command": [python, evil, "{access_point}", outside, secret]}
    good = edge.queue("chain", storage=storage(edge))
    queues = {"GOOD": good,
              "EVIL": edge.queue("chain", pilot=evil_pilot),
              "EVIL413": edge.queue("chain", pilot=dict(evil_pilot, handoff_max_bytes=4 << 20))}
    bed = beds("chain", queues, server_options=["--max-body-mb", "1"])
    go = site_file(edge, "go-chain", "")
    os.unlink(go)
    upper = bed.script("upper.sh", UPPER)
    good_ids = []
    for n, wait in ((1, ""), (2, go)):
        good_ids += bed.submit(1, queue="GOOD", transformation=upper, jobParameters=f"in{n}.dat out{n}.dat {wait}",
                               Files=[an_input(edge, f"in{n}.dat", f"line {n}\n"),
                                      {"type": "output", "lfn": f"out{n}.dat", "scope": "user.test"},
                                      {"type": "log", "lfn": f"log{n}.tgz", "scope": "user.test"}])
    tricks = {mode: bed.submit(1, queue="EVIL", transformation="/bin/true", jobParameters=mode, Files=[])[0]
              for mode in ("dirlink", "reportlink", f"foreign:{good_ids[1]}", "big:3000000")}
    [too_big_for_server] = bed.submit(1, queue="EVIL413", transformation="/bin/true", jobParameters="big:2000000",
                                      Files=[])
    bed.start()

    # the nodes have no way to the server harvester talks to
    assert site.login.can_connect(EDGE_ADDRESS, int(bed.server.url.rsplit(":", 1)[1])) is None
    for node in site.nodes:
        assert "unreachable" in (node.can_connect(EDGE_ADDRESS, int(bed.server.url.rsplit(":", 1)[1])) or "")

    evil_ids = list(tricks.values()) + [too_big_for_server]
    bed.wait_for(lambda: all(s in ("finished", "failed") for s in bed.statuses(evil_ids).values()),
                 "the hostile pilots' jobs ended", timeout=600)
    # claimed by a hostile pilot (which ended, its worker failed): untouched
    assert bed.statuses([good_ids[1]])[good_ids[1]] in ("sent", "starting", "running")
    open(go, "w").close()
    bed.wait_for(lambda: set(bed.statuses(good_ids).values()) == {"finished"}, "the honest jobs finished",
                 timeout=600)
    workers_final(bed, 7)

    # 1. the honest jobs: inputs in from the login node's storage, outputs in the server's file store, verified
    for n, panda_id in enumerate(good_ids, 1):
        stored = bed.get(f"/files/user.test/out{n}.dat")
        assert stored.status_code == 200 and stored.content == f"LINE {n}\n".encode(), stored.text
        job = bed.job(panda_id)
        assert job["jobStatus"] == "finished" and job["pilotErrorCode"] == 0, job
    assert bed.get("/files/user.test/log1.tgz").status_code == 200  # the log tarball too
    # 2. each trick refused, each only for its own job
    diag = {mode: bed.job(panda_id) for mode, panda_id in tricks.items()}
    assert diag["dirlink"]["jobStatus"] == "failed" and diag["dirlink"]["pilotErrorCode"] == 1137
    assert "symlink" in diag["dirlink"]["pilotErrorDiag"] and "evilscope" in diag["dirlink"]["pilotErrorDiag"]
    assert open(os.path.join(outside, "decoy.txt")).read() == "someone else's file\n"  # never moved
    assert diag["reportlink"]["pilotErrorCode"] == 1008 and "symlink" in diag["reportlink"]["pilotErrorDiag"]
    assert all("s3cr3t" not in json.dumps(job) for job in diag.values())
    own = diag[f"foreign:{good_ids[1]}"]
    assert own["jobStatus"] == "finished", {k: own.get(k) for k in ("pilotErrorCode", "pilotErrorDiag", "jobStatus")}
    assert diag["big:3000000"]["pilotErrorCode"] == 1008
    assert "over the queue's limit of 1048576 bytes" in diag["big:3000000"]["pilotErrorDiag"]
    # the report under the queue's cap but over the server's body limit: refused alone (413), the others went on
    with bed.db() as conn:
        rejected = conn.execute("SELECT key, last_error, worker_id FROM outbox WHERE rejected = 1").fetchall()
    assert len(rejected) == 1 and rejected[0][0].startswith(f"job:{too_big_for_server}:") and "413" in rejected[0][1]
    explained = bed.cli("explain", "--worker", str(rejected[0][2])).stdout
    assert "413" in explained and "rejected" in explained
    # harvester read and wrote the site's files only through SSH: nothing under edge's view of the site dir
    assert site.edge.run(["ls", "-A", site.site_dir]).stdout == ""
    log = bed.log()
    assert f"speaks for job {good_ids[1]}, which harvester did not bind to this worker" in log


def test_a_cut_link_and_restarted_login_daemons_lose_nothing(edge, beds):
    site = edge.site
    bed = beds("faults", {"GOOD": edge.queue("faults", storage=storage(edge))})
    go = os.path.join(site.site_dir, "go-faults")
    upper = bed.script("upper.sh", UPPER)

    def jobs(n, first):
        return [bed.submit(1, queue="GOOD", transformation=upper, jobParameters=f"in{i}.dat fault{i}.dat {go}",
                           Files=[an_input(edge, f"in{i}.dat", f"fault {i}\n"),
                                  {"type": "output", "lfn": f"fault{i}.dat", "scope": "user.test"}])[0]
                for i in range(first, first + n)]

    def running(ids):
        return set(bed.statuses(ids).values()) == {"running"}

    ids = jobs(2, 10)
    bed.start()
    bed.wait_for(lambda: running(ids), "the first jobs running on the nodes", timeout=600)
    site.cut_edge_link()  # mid-cycle: the monitor lists the access points every 0.5 s
    try:
        open(go, "w").close()  # the jobs end while harvester cannot see them
        time.sleep(60)  # the 60 s, not a wait for something: nothing here can tell when harvester is cut
        assert set(bed.statuses(ids).values()) == {"running"}  # nothing reached the server meanwhile
    finally:
        site.mend_edge_link()
    bed.wait_for(lambda: set(bed.statuses(ids).values()) == {"finished"}, "reports after the link is back",
                 timeout=600)
    assert re.search(r"timed out|cannot", bed.log())  # the cut was seen (and logged), not slept through

    os.unlink(go)
    more = jobs(2, 20)
    bed.wait_for(lambda: running(more), "two more jobs running", timeout=600)
    edge.sshd.restart()  # every kept connection cut, as by a reboot of the login node's sshd
    edge.slurm.restart_controller()
    open(go, "w").close()
    bed.wait_for(lambda: set(bed.statuses(more).values()) == {"finished"}, "the jobs after the restarts", timeout=600)
    workers = workers_final(bed, 4)
    assert {w["status"] for w in workers} == {"finished"}, workers
    assert sorted(edge.jobs("faults")) == sorted(w["batchID"] for w in workers)  # one Slurm job per worker: none twice
    with bed.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0  # every report delivered, none refused
    for job in (bed.job(panda_id) for panda_id in ids + more):
        history = bed.v1("job/get_status", job_ids=[job["PandaID"]])
        assert job["jobStatus"] == "finished" and history, job
