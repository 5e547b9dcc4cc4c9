"""The pilot's life through the zipapp: signals, the outbox, file mode, the multi-job loop and exit codes."""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import requests

from pilot.signals import REPEAT_WINDOW_S
from test_pilot_harness import QUEUE, PilotSite, marked_sleep, processes_with

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures

WAIT_FOR_GO = "-c 'while [ ! -e \"$1\" ]; do sleep 0.05; done; echo done > out.dat' sh {go}"


def test_sigterm_kills_payload_tree_and_reports_1201(site):
    marker = f"orphan-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    loop = f"(setsid {sleep} 300 &); {sleep} 301 & while true; do date > tick; sleep 0.1; done"
    pid = site.submit(transformation="/bin/sh", jobParameters=f"-c '{loop}'")
    proc = site.start()
    site.wait_for(lambda: site.status(pid) == "running" and len(processes_with(marker)) == 2, "payload running")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, site.log()
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1201), site.log()
    assert processes_with(marker) == []


def test_second_signal_is_a_cold_shutdown_into_the_outbox(site):
    marker = f"stubborn-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    pid = site.submit(transformation="/bin/sh",
                      jobParameters=f"-c 'trap \"\" TERM; {sleep} 300 & while true; do date > tick; sleep 0.1; done'")
    proc = site.start(qd=site.queuedata(pilot_kill_grace=60))
    site.wait_for(lambda: site.status(pid) == "running", "job running")
    proc.send_signal(signal.SIGTERM)
    site.wait_for(lambda: "got SIGTERM" in site.log(), "warm stop")
    time.sleep(REPEAT_WINDOW_S + 0.2)  # sooner, the same signal again counts as one delivered twice
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, site.log()
    assert processes_with(marker) == []
    assert site.status(pid) == "running"  # cold: nothing was sent, the report is in the outbox
    outbox = os.path.join(site.workdir, "outbox")
    assert len(os.listdir(outbox)) == 1
    replay = subprocess.run([sys.executable, site.zipapp, "replay-outbox", "-a", site.workdir, "--url",
                             site.server.url, "--token-file", site.token_file], capture_output=True, text=True)
    assert replay.returncode == 0 and "delivered 1, left 0" in replay.stdout, replay.stderr
    job = site.job(pid)
    assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1201)


def test_server_down_at_final_update_goes_to_outbox_and_is_replayed_once(site, tmp_path):
    from conftest import LiveServer

    go = tmp_path / "GO"
    pid = site.submit(transformation="/bin/sh", jobParameters=WAIT_FOR_GO.format(go=go),
                      Files=[{"type": "output", "lfn": "out.dat"}, {"type": "log", "lfn": "l.tgz"}])
    proc = site.start()
    site.wait_for(lambda: site.status(pid) == "running", "job running")
    site.server.stop()
    go.write_text("go")
    assert proc.wait(60) == 79, site.log()  # the report is safe in the outbox, the server was not reached
    outbox = os.path.join(site.workdir, "outbox")
    entries = os.listdir(outbox)
    assert entries == [f"final-{pid}-0.json"]
    spooled = json.load(open(os.path.join(outbox, entries[0])))
    assert spooled["params"]["state"] == "finished" and "out.dat" in json.loads(spooled["params"]["xml"])
    shutil.copy(os.path.join(outbox, entries[0]), tmp_path / "copy.json")

    again = LiveServer(site.server.home, site.server.db_url)
    try:
        site.server = again
        code, log = site.run()  # the next pilot on the node replays the outbox first
        assert code == 82, log  # ... then finds no job
        assert os.listdir(outbox) == []
        assert site.status(pid) == "finished"
        shutil.copy(tmp_path / "copy.json", os.path.join(outbox, entries[0]))  # harvester forwards it again
        replay = subprocess.run([sys.executable, site.zipapp, "replay-outbox", "-a", site.workdir, "--url",
                                 again.url, "--token-file", site.token_file], capture_output=True, text=True)
        assert replay.returncode == 0, replay.stderr
        assert "already done" in replay.stderr
        assert [h["to"] for h in site.history(pid)].count("finished") == 1
        files = {f["lfn"]: f for f in site.job(pid)["Files"]}
        assert files["out.dat"]["status"] == "finished" and files["out.dat"]["checksum"].startswith("ad:")
    finally:
        again.stop()


class ConnectionCounter:
    """A listener that only counts connections: proof that file mode makes no HTTP call."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.count, self.running = 0, True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
                self.count += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def dispatch(site, n_jobs=1):
    """What harvester does for a no-network node: getJob on the pilot's behalf."""
    reply = requests.post(site.server.url + "/server/panda/getJob",
                          json={"computingElement": QUEUE, "nJobs": n_jobs, "remainingTime": 100000},
                          headers=site.server.headers(open(site.token_file).read().strip()), timeout=30)
    return {str(j["PandaID"]): j for j in reply.json()["jobs"]}


def test_file_mode_round_trip_without_any_http(site, tmp_path):
    trf = site.script("make.sh", "#!/bin/sh\necho \"$PandaID\" > out.dat\n")
    ids = [site.submit(transformation=trf, jobParameters="", Files=[
        {"type": "output", "lfn": "out.dat", "scope": f"s{i}"}, {"type": "log", "lfn": f"l{i}.tgz"}])
        for i in range(2)]
    jobs = dispatch(site, 2)
    hwd = tmp_path / "access_point"
    hwd.mkdir()
    shutil.copy(os.path.join(site.server.home, "trf", "make.sh"), hwd / "make.sh")  # harvester stages the trf
    (hwd / "pandaJobData.out").write_text(json.dumps({str(ids[0]): jobs[str(ids[0])]}))
    counter = ConnectionCounter()

    def harvester():  # answers the pilot's first job request with the second job
        request = hwd / "worker_requestjob.json"
        site.wait_for(request.exists, "job request")
        assert json.loads(request.read_text()) == {"nJobs": 1}
        (hwd / "pandaJobData.out").write_text(json.dumps({str(ids[1]): jobs[str(ids[1])]}))

    helper = threading.Thread(target=harvester)
    helper.start()
    try:
        code, log = site.run("-z", "--harvester-workdir", str(hwd), "--harvester-submit-mode", "PUSH",
                             url=counter.url, qd=site.queuedata(timefloor=10, pilot_handoff_wait=5))  # ends the pilot's last wait; not the first
    finally:
        helper.join(30)
        counter.close()
    assert code == 0, log
    assert counter.count == 0
    assert not (hwd / "pandaJobData.out").exists() and not (hwd / "worker_requestjob.json").exists()
    attributes = json.loads((hwd / "worker_attributes.json").read_text())
    assert attributes["jobStatus"] == "finished" and attributes["jobId"] == ids[1] and "xml" not in attributes
    assert json.loads((hwd / "jobReport.json").read_text())["exitCode"] == 0
    status = json.loads((hwd / "event_status.dump.json").read_text())
    assert sorted(status) == sorted(str(i) for i in ids)
    for i, panda_id in enumerate(ids):
        entries = {e["type"]: e for e in status[str(panda_id)]}
        assert open(entries["output"]["path"]).read() == f"{panda_id}\n"
        assert entries["output"]["path"] == str(hwd / f"s{i}" / "out.dat")
        assert os.path.getsize(entries["log"]["path"]) == entries["log"]["fsize"]
    assert json.loads((hwd / "worker_pandaids.json").read_text()) == ids
    assert (hwd / "kill_worker").exists() and (hwd / "worker_heartbeat.json").exists()
    assert [n for n in os.listdir(hwd) if n.endswith(".tmp")] == []


def test_multi_job_loop_stops_at_timefloor(site):
    ids = [site.submit(transformation="/bin/sleep", jobParameters="1") for _ in range(3)]
    code, log = site.run(qd=site.queuedata(timefloor=0.5 / 60))  # 0.5 s: used up by the first 1 s job
    assert code == 0, log
    assert [site.status(i) for i in ids] == ["finished", "activated", "activated"]
    code, log = site.run(qd=site.queuedata(timefloor=10))
    assert code == 0, log
    assert [site.status(i) for i in ids] == ["finished", "finished", "finished"]


def test_without_j_the_pilot_asks_for_what_its_queue_serves(site):
    user, managed = (site.submit(transformation="/bin/true", jobParameters="", prodSourceLabel=label)
                     for label in ("user", "managed"))
    code, log = site.run(qd=site.queuedata(prodsourcelabels=["user"]))
    assert code == 0, log
    assert (site.status(user), site.status(managed)) == ("finished", "activated")
    user = site.submit(transformation="/bin/true", jobParameters="", prodSourceLabel="user")
    code, log = site.run(qd=site.queuedata(prodsourcelabels=["managed", "user"], timefloor=10))  # unified
    assert code == 0, log
    assert (site.status(user), site.status(managed)) == ("finished", "finished")


def test_job_that_does_not_fit_the_remaining_walltime_is_not_taken(site):
    big = site.submit(transformation="/bin/true", jobParameters="", maxWalltime=3600)
    small = site.submit(transformation="/bin/true", jobParameters="", maxWalltime=30)
    code, log = site.run(lifetime=100, qd=site.queuedata(timefloor=10))
    assert code == 0, log
    assert (site.status(small), site.status(big)) == ("finished", "activated")
    code, log = site.run(lifetime=100)
    assert code == 82, log  # no job fits: pilot3's "no jobs" exit code
    assert site.status(big) == "activated"


def test_exit_codes_for_queue_problems(site):
    assert site.run(qd=site.queuedata(status="offline", state="OFFLINE"))[0] == 64
    assert site.run(qd=site.queuedata(state="BROKEN"))[0] == 78
    bad = os.path.join(site.base, "bad.json")
    open(bad, "w").write("{not json")
    assert site.run(qd=bad)[0] == 72
    assert site.run(qd=os.path.join(site.base, "missing.json"))[0] == 71


def test_exit_codes_for_server_problems(site):
    counter = ConnectionCounter()
    counter.close()  # nothing listens on that port any more
    assert site.run(url=counter.url)[0] == 79
    open(site.token_file, "w").write("not-a-token")
    assert site.run()[0] == 68


def test_queuedata_from_the_server_and_old_pilot_dirs_cleaned(site):
    site.submit(transformation="/bin/true", jobParameters="")
    old = os.path.join(site.workdir, "PanDA_Pilot-1_1000")
    os.makedirs(os.path.join(old, "PandaJob_1"))
    for path in (os.path.join(old, "PandaJob_1"), old):
        os.utime(path, (1000, 1000))
    argv = site.argv()
    del argv[argv.index("--queuedata"):argv.index("--queuedata") + 2]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # default queuedata: one job, then done
    assert not os.path.exists(old)
    pilot_dirs = [d for d in os.listdir(site.workdir) if d.startswith("PanDA_Pilot-")]
    qd = json.load(open(os.path.join(site.workdir, pilot_dirs[0], "queuedata.json")))
    assert qd["raw"]["maxrss"] == 2000 and qd["effective"]["pilot_looping_limit"] == 7200


def test_each_log_tarball_holds_the_pilot_log_of_its_own_job(site):
    import tarfile

    ids = [site.submit(transformation="/bin/true", Files=[{"type": "log", "lfn": f"job{n}.log.tgz", "scope": "user"}])
           for n in (1, 2)]
    code, log = site.run(qd=site.queuedata(timefloor=10))
    assert code == 0, log
    texts = []
    for n in (1, 2):
        with tarfile.open(os.path.join(site.outputs(), "user", f"job{n}.log.tgz")) as tar:
            [member] = [m for m in tar.getnames() if m.endswith("pilotlog.txt")]
            texts.append(tar.extractfile(member).read().decode())
    assert f"PandaID {ids[0]} " in texts[0] and f"PandaID {ids[1]} " not in texts[0]
    assert f"PandaID {ids[1]} " in texts[1] and f"PandaID {ids[0]} " not in texts[1]


def test_jobs_in_hand_are_given_back_on_a_stop(site):
    """Short jobs seen, the pilot takes the following ones in one getJob when the next starts; on SIGTERM the
    running payload is killed and every job in hand not started is reported failed at once with why (the server
    retries it), never left dispatched."""
    marker = f"inhand-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    ids = [site.submit(transformation="/bin/true")] + [site.submit(transformation=sleep, jobParameters="30")
                                                       for _ in range(4)]
    proc = site.start("--getjob-lookahead", "30", qd=site.queuedata(timefloor=10))
    site.wait_for(lambda: processes_with(marker) and all(site.status(i) == "sent" for i in ids[1:]),
                  "the second job running, the others in hand")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, site.log()  # SIGTERM's exit code
    assert site.status(ids[0]) == "finished", site.log()
    killed = site.job(ids[1])
    assert (killed["jobStatus"], killed["pilotErrorCode"]) == ("failed", 1201), site.log()
    for panda_id in ids[2:]:
        job = site.job(panda_id)
        assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1201), site.log()
        assert "before the job started" in job["pilotErrorDiag"]
        assert [h["to"] for h in site.history(panda_id)] == ["activated", "sent", "failed"]
    assert processes_with(marker) == []


def job_dirs(site, panda_id):
    return glob.glob(os.path.join(site.workdir, "PanDA_Pilot-*", f"PandaJob_{panda_id}"))


def test_the_next_job_in_hand_is_made_ready_while_a_payload_runs_and_removed_when_given_back(site):
    """Two short jobs teach the pilot the pace, so the second one's getJob (sent while it runs) brings the three
    long ones; while the first of them runs, the next in hand already has its directory, definition and payload
    output files (only the payload's start then comes between two payloads), the one after it not yet. On SIGTERM the job made ready is
    given back like any other in hand (failed 1201, never left sent), with no log, and its directory removed."""
    marker = f"ready-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    ids = [site.submit(transformation="/bin/true") for _ in range(2)] + [
        site.submit(transformation=sleep, jobParameters="30") for _ in range(3)]
    proc = site.start("--getjob-lookahead", "30", qd=site.queuedata(timefloor=10))
    site.wait_for(lambda: processes_with(marker) and site.status(ids[1]) == "finished", "the third job running")
    site.wait_for(lambda: any(os.path.isfile(os.path.join(d, "job_definition.json")) and
                              os.path.isfile(os.path.join(d, "payload.stdout")) for d in job_dirs(site, ids[3])),
                  "the next job in hand made ready while the payload runs (its payload's output files too)")
    assert job_dirs(site, ids[4]) == [] and len(processes_with(marker)) == 1, site.log()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, site.log()
    for panda_id in ids[2:]:
        job = site.job(panda_id)
        assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1201), site.log()
    for panda_id in ids[3:]:
        assert "before the job started" in site.job(panda_id)["pilotErrorDiag"]
        assert [h["to"] for h in site.history(panda_id)] == ["activated", "sent", "failed"]
        assert job_dirs(site, panda_id) == [], site.log()
    assert site.log().count("staged out log.tgz") == 3, site.log()  # no log for a job given back
    assert processes_with(marker) == []


def test_a_getjob_answer_is_read_when_it_comes_and_its_first_job_made_ready_while_a_payload_runs(site):
    """The getJob sent ahead while the last job in hand runs is read as soon as its answer is there (the payload's
    watch wakes on its socket), not when that payload has ended: the first job of the new batch is made ready
    while the payload still runs. On SIGTERM those jobs are given back as any in hand."""
    running, waiting = f"running-{os.getpid()}-{id(site)}", f"waiting-{os.getpid()}-{id(site)}"
    ids = [site.submit(transformation="/bin/true"), site.submit(transformation=marked_sleep(site.base, running),
                                                                jobParameters="30")]
    later = marked_sleep(site.base, waiting)
    ids += [site.submit(transformation=later, jobParameters="30") for _ in range(2)]
    proc = site.start("--getjob-lookahead", "30", qd=site.queuedata(timefloor=10))
    site.wait_for(lambda: processes_with(running) and all(site.status(i) == "sent" for i in ids[2:]),
                  "the second job running, the getJob for the others answered")
    site.wait_for(lambda: any(os.path.isfile(os.path.join(d, "job_definition.json")) for d in job_dirs(site, ids[2])),
                  "the new batch's first job made ready while the payload runs")
    assert processes_with(running) and not processes_with(waiting), site.log()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, site.log()
    for panda_id in ids[2:]:
        job = site.job(panda_id)
        assert (job["jobStatus"], job["pilotErrorCode"]) == ("failed", 1201), site.log()
        assert "before the job started" in job["pilotErrorDiag"] and job_dirs(site, panda_id) == []


def test_a_pilot_killed_with_jobs_in_hand_leaves_none_dispatched_for_ever(zipapp_path, tmp_path):
    """kill -9: the pilot reports nothing, so its jobs in hand stay sent until the server's watchdog fails them
    after watchdog.sent_timeout (supErrorCode 102, retried as its rules say): none stays dispatched for ever."""
    from taskhelp import TaskServer

    server = TaskServer(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "minipanda.db"),
                        {"watchdog.sent_timeout": 2})
    (tmp_path / "site").mkdir()
    site = PilotSite(server, zipapp_path, tmp_path / "site")
    try:
        marker = f"killed-{os.getpid()}-{id(site)}"
        sleep = marked_sleep(site.base, marker)
        ids = [site.submit(transformation="/bin/true")] + [site.submit(transformation=sleep, jobParameters="30")
                                                           for _ in range(3)]
        proc = site.start("--getjob-lookahead", "30", qd=site.queuedata(timefloor=10, pilot_running_delay=600))
        site.wait_for(lambda: processes_with(marker) and all(site.status(i) == "sent" for i in ids[1:]),
                      "the second job running, the others in hand")
        proc.kill()
        proc.wait(60)
        site.wait_for(lambda: "sent" not in [site.status(i) for i in ids[1:]], "the watchdog's verdict")
        for panda_id in ids[1:]:
            job = site.job(panda_id)
            assert (job["jobStatus"], job["supErrorCode"]) == ("failed", 102), job
        site.wait_for(lambda: processes_with(marker) == [], "the payload gone with its pilot")
    finally:
        site.stop_pilots()
        server.stop()


def test_a_getjob_that_found_no_job_forgets_the_pace(site):
    """A pilot that ran short jobs and then found the queue empty asks for ONE job when work comes again: the
    pace it learned need not hold for the next jobs (here 30 s ones after a no-op), and a look-ahead on the old
    pace would take them all at once and leave the other pilots idle."""
    marker = f"pace-{os.getpid()}-{id(site)}"
    sleep = marked_sleep(site.base, marker)
    first = site.submit(transformation="/bin/true")
    proc = site.start("--getjob-lookahead", "30", qd=site.queuedata(timefloor=10, pilot_getjob_tries=200,
                                                                     pilot_getjob_interval=0.2))
    try:
        site.wait_for(lambda: site.status(first) == "finished" and "no job for this pilot" in site.log(),
                      "the no-op job done and the queue found empty")
        ids = [site.submit(transformation=sleep, jobParameters="30") for _ in range(3)]
        site.wait_for(lambda: processes_with(marker), "the next job running")
        assert [site.status(i) for i in ids].count("activated") == 2, site.log()  # one taken, not three
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert processes_with(marker) == []
