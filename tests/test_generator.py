"""The job generator over real HTTP: splitting, placeholders, names, scouts -> avalanche, waking on submit."""
import shlex
import subprocess

from taskhelp import (TaskServer, acquire, add_dataset, jobs_of, open_db, run_job, set_queue, submit, wait_jobs,
                     wait_status)
from taskhelp import task_server  # noqa: F401 (a fixture)


def inputs(job):
    return [f["lfn"] for f in job["Files"] if f["type"] == "input"]


def command(job):
    """The shell command of a flat-form job (transformation /bin/sh, jobParameters -c '...')."""
    assert job["transformation"] == "/bin/sh"
    return shlex.split(job["jobParameters"])[1]


def test_files_split_names_and_placeholders(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ds", 5)
    tid = submit(task_server, {"taskName": "split", "exec": "run %IN --seed %RNDM:100 -o %OUT:out.txt %OUT",
                               "inDS": "ds", "nFilesPerJob": 2, "outputs": ["out.txt", "h.root"], "nScouts": 0})
    jobs = wait_jobs(task_server, tid, 3)
    assert [inputs(j) for j in jobs] == [["ds.0000.dat", "ds.0001.dat"], ["ds.0002.dat", "ds.0003.dat"],
                                         ["ds.0004.dat"]]
    first = jobs[0]
    outs = [f["lfn"] for f in first["Files"] if f["type"] == "output"]
    assert outs == [f"{tid}._000001.out.txt", f"{tid}._000001.h.root"]
    assert [f["lfn"] for f in first["Files"] if f["type"] == "log"] == [f"{tid}._000001.log.tgz"]
    assert command(first) == (f"run ds.0000.dat,ds.0001.dat --seed 100 -o {tid}._000001.out.txt "
                              f"{tid}._000001.out.txt,{tid}._000001.h.root")
    assert "--seed 102" in command(jobs[2]) and f"{tid}._000003.log.tgz" in {f["lfn"] for f in jobs[2]["Files"]}
    assert {j["jediTaskID"] for j in jobs} == {tid} and {j["attemptNr"] for j in jobs} == {1}
    assert {f["dataset"] for f in first["Files"] if f["type"] == "output"} == {"user.admin.split_out.txt",
                                                                                  "user.admin.split_h.root"}


def test_outputs_renamed_when_exec_writes_plain_names(task_server, tmp_path):
    set_queue("Q1")
    tid = submit(task_server, {"taskName": "plain", "exec": "echo hi > out.txt", "nJobs": 1, "nScouts": 0,
                               "outputs": ["out.txt"]})
    (job,) = wait_jobs(task_server, tid, 1)
    script = command(job)
    assert script == f"{{ echo hi > out.txt\n}} && mv -f -- out.txt {tid}._000001.out.txt"
    subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, check=True)
    assert (tmp_path / f"{tid}._000001.out.txt").read_text() == "hi\n"
    assert subprocess.run(["/bin/sh", "-c", "{ false\n} && mv -f -- a b"], cwd=tmp_path).returncode == 1


def test_events_split_with_remainder(task_server):
    set_queue("Q1")
    add_dataset(task_server, "ev", 2, events=25)
    tid = submit(task_server, {"taskName": "ev", "exec": "gen %IN skip=%SKIPEVENTS max=%MAXEVENTS", "inDS": "ev",
                               "nEventsPerJob": 10, "nScouts": 0})
    jobs = wait_jobs(task_server, tid, 5)
    assert [command(j).split(" ", 1)[1] for j in jobs] == [
        "ev.0000.dat skip=0 max=10", "ev.0000.dat skip=10 max=10", "ev.0000.dat,ev.0001.dat skip=20 max=10",
        "ev.0001.dat skip=5 max=10", "ev.0001.dat skip=15 max=10"]


def test_n_jobs_without_input_and_jedi_no_input(task_server):
    set_queue("Q1")
    tid = submit(task_server, {"taskName": "gen", "exec": "sim --seed %RNDM:7", "nJobs": 3, "nScouts": 0})
    assert [command(j) for j in wait_jobs(task_server, tid, 3)] == ["sim --seed 7", "sim --seed 8", "sim --seed 9"]
    jedi = {"taskName": "user.alice.gen/", "noInput": True, "nEvents": 5, "nEventsPerJob": 2, "skipScout": True,
            "vo": "wlcg", "prodSourceLabel": "user", "site": "Q1", "transPath": "/usr/bin/env",
            "cliParams": "prun ...", "processingType": "panda-client-2.2.0-jedi-run",
            "log": {"type": "template", "param_type": "log", "dataset": "user.alice.gen.log/",
                    "value": "user.alice.gen.log.$JEDITASKID.${SN}.log.tgz"},
            "jobParameters": [{"type": "constant", "value": "echo first=${FIRSTEVENT} n=${MAXEVENTS}"},
                              {"type": "constant", "value": "-o", "padding": False},
                              {"type": "constant", "value": "=x"},
                              {"type": "constant", "value": "__delimiter__", "hidden": True},
                              {"type": "template", "param_type": "output", "hidden": True,
                               "dataset": "user.alice.gen_out/", "value": "$JEDITASKID._${SN/P}.out.txt"}]}
    tid = submit(task_server, jedi)
    jobs = wait_jobs(task_server, tid, 3)
    assert [j["jobParameters"] for j in jobs] == ["echo first=1 n=2 -o=x", "echo first=3 n=2 -o=x",
                                                  "echo first=5 n=1 -o=x"]
    assert jobs[0]["transformation"] == "/usr/bin/env"
    assert {f["lfn"] for f in jobs[1]["Files"]} == {f"user.alice.gen.log.{tid}.000002.log.tgz",
                                                    f"{tid}._000002.out.txt"}


def test_prun_parameters_map_or_are_refused(task_server):
    set_queue("TEST_PQ")
    prun = {"taskName": "user.testuser.prun.001/", "uniqueTaskName": True, "vo": "wlcg", "architecture": None,
            "transUses": "", "transHome": None, "processingType": "panda-client-2.2.0-jedi-run",
            "prodSourceLabel": "user", "site": "TEST_PQ", "excludedSite": [], "includedSite": None, "nEvents": 2,
            "nEventsPerJob": 1, "cliParams": "prun --exec \"sh run.sh\"", "osInfo": "Linux", "nMaxFilesPerJob": 200,
            "respectSplitRule": True, "sourceURL": "http://127.0.0.1:28471",
            "log": {"dataset": "user.testuser.prun.001.log/", "container": "user.testuser.prun.001.log/",
                    "type": "template", "param_type": "log",
                    "value": "user.testuser.prun.001.log.$JEDITASKID.${SN}.log.tgz"},
            "jobParameters": [{"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
                              {"type": "constant", "value": "-r ."},
                              {"type": "constant", "value": "__delimiter__", "hidden": True},
                              {"type": "constant", "value": "-l ${LIB}"},
                              {"type": "constant", "value": "-p \"", "padding": False},
                              {"type": "constant", "value": "sh%20run.sh", "padding": False},
                              {"type": "constant", "value": "\""}],
            "noInput": True, "buildSpec": {"prodSourceLabel": "panda", "archiveName": "sources.x.tar.gz"}}
    body = task_server.call("task/submit", {"task_parameters": prun})
    assert body["success"] is False and body["data"] == 4
    assert "buildSpec: build jobs are not supported" in body["message"] and "${LIB}" in body["message"]
    del prun["buildSpec"]
    prun["jobParameters"][3] = {"type": "constant", "value": "-a sources.x.tar.gz"}
    body = task_server.call("task/submit", {"task_parameters": prun})
    assert body["success"] is False and "-a sources.x.tar.gz: no sandbox of that name was uploaded" in body["message"]
    upload_sandbox(task_server, "sources.x.tar.gz")
    tid = submit(task_server, prun)
    jobs = wait_jobs(task_server, tid, 2)
    # ${SURL} becomes the server's URL as the pilot that gets the job reaches it (tests/test_prun_sandbox.py)
    assert jobs[0]["jobParameters"] == ('-j "" --sourceURL ${SURL} -r . -a sources.x.tar.gz -p "sh%20run.sh"')
    assert jobs[0]["transformation"].endswith("/trf/user/runGen-00-00-02")
    assert jobs[0]["computingSite"] == "TEST_PQ"


def upload_sandbox(server, name, token=None):
    """A small gzipped tar uploaded as prun does (multipart field ``file``)."""
    import io
    import tarfile

    import requests

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("run.sh")
        info.size = 8
        archive.addfile(info, io.BytesIO(b"echo hi\n"))
    reply = requests.post(server.url + "/api/v1/file_server/upload_cache_file",
                          files={"file": (name, buffer.getvalue())}, headers=server.headers(token), timeout=30)
    assert reply.status_code == 200 and reply.json()["success"], reply.text


def test_scouts_then_avalanche_with_measured_memory(task_server):
    set_queue("Q1", maxrss=4000)
    add_dataset(task_server, "sc", 6)
    tid = submit(task_server, {"taskName": "scout", "exec": "x %IN", "inDS": "sc", "nFilesPerJob": 1, "nScouts": 2,
                               "ramCount": 500})
    wait_status(task_server, tid, "scouting")
    scouts = wait_jobs(task_server, tid, 2)
    assert len(jobs_of(task_server, tid)) == 2
    assert {j["currentPriority"] for j in scouts} == {2000}  # formula 1000 + scout boost 1000
    taken = acquire(task_server, "Q1", n=2)
    run_job(task_server, taken[0], maxPSS=1_000_000)  # kB
    run_job(task_server, taken[1], maxPSS=2_000_000, maxRSS=2_500_000)
    wait_status(task_server, tid, "running", "done")
    rest = wait_jobs(task_server, tid, 6)[2:]
    assert {j["minRamCount"] for j in rest} == {2149}  # 75th percentile (1953.1 MB) + 10 %
    assert all(j["currentPriority"] < 1000 + 1 for j in rest)
    details = task_server.call("task/get_details", {"task_id": tid}, method="GET")["data"]
    assert details["ramCount"] == 2149
    log = task_server.call("task/get_status_log", {"task_id": tid}, method="GET")["data"]
    assert [h["to"] for h in log][:6] == ["registered", "defined", "ready", "scouting", "scouted", "running"]
    assert "memory 2149 MB" in log[4]["reason"]


def test_all_scouts_failing_breaks_the_task(task_server):
    set_queue("Q1")
    add_dataset(task_server, "bad", 5)
    tid = submit(task_server, {"taskName": "bad", "exec": "x %IN", "inDS": "bad", "nScouts": 2, "maxAttempt": 1})
    wait_jobs(task_server, tid, 2)
    for job in acquire(task_server, "Q1", n=2):
        run_job(task_server, job, "failed", pilot_error_code=1305, pilot_error_diag="segfault in payload")
    wait_status(task_server, tid, "broken")
    details = task_server.call("task/get_details", {"task_id": tid}, method="GET")["data"]
    assert "all 2 scout jobs failed" in details["errorDialog"] and "segfault in payload" in details["errorDialog"]
    assert len(jobs_of(task_server, tid)) == 2
    body = task_server.call("task/retry", {"task_id": tid})
    assert body["data"] == 4 and "a broken task cannot be retried" in body["message"]


def test_submission_wakes_the_generator(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url, {"period.generator": 3600})
    try:
        open_db(server)
        set_queue("Q1")
        tid = submit(server, {"taskName": "woken", "exec": "true", "nJobs": 2, "nScouts": 0})
        assert len(wait_jobs(server, tid, 2)) == 2  # the periodic run is an hour away
    finally:
        server.stop()
