"""PanDA's prun (panda-client 2.2.0) runs a user's code on minipanda end to end: the sandbox is uploaded to the
server's cache, the task's jobs are run by minipanda's pilot (and one by PanDA's pilot3) with minipanda's runGen
fetched over /trf/user/, and the outputs come back with ``minipanda dataset show`` / ``dataset get``."""
import json
import os
import subprocess
import sys

import pytest
import requests

from conftest import run_panda_client
from taskhelp import set_queue, task_server, task_status, wait_for  # noqa: F401 (task_server is a fixture)
from test_pilot_harness import QUEUE, PilotSite

pytest_plugins = ["test_pilot_harness"]  # the zipapp_path fixture
pytest.importorskip("pandaclient", reason="panda-client is a test dependency: pip install -e '.[test]'")

RUN_SH = "echo \"job $1\" > out.txt\ncat data.txt >> out.txt\n"


def prun(server, token, tmp_path, workdir, *args):
    """Run the real ``prun`` in ``workdir`` against ``server``; (exit code, output)."""
    base = server.url + "/server/panda"
    token_file = tmp_path / "prun.token"
    token_file.write_text(token)  # no trailing newline: httpx refuses it in a header
    env = dict(os.environ, PANDA_URL_SSL=base, PANDA_URL=base, PANDACACHE_URL=base, PANDA_BEHIND_REAL_LB="1",
               PANDA_CONFIG_ROOT=str(tmp_path / "pandacfg"), PANDA_AUTH="oidc", PANDA_AUTH_VO="minipanda",
               OIDC_AUTH_TOKEN_FILE=str(token_file), PANDA_VERIFY_HOST="off", PANDA_SYS=sys.prefix,
               VIRTUAL_ENV=sys.prefix)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "prun"), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=180)
    return proc.returncode, proc.stdout + proc.stderr


def user_code(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "run.sh").write_text(RUN_SH)
    (code / "data.txt").write_text("data from the sandbox\n")
    return code


def cli(server, *args, token_file=None):
    out = subprocess.run([sys.executable, "-m", "minipanda", *args, "--url", server.url, "--home", server.home,
                          *(["--token-file", str(token_file)] if token_file else [])],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def site_for(server, zipapp, tmp_path, input_dir=None):
    (tmp_path / "site").mkdir(exist_ok=True)
    site = PilotSite(server, zipapp, tmp_path / "site")
    qd = site.queuedata(acopytools={"pr": ["copy"], "pw": ["http"], "pl": ["http"]}, output_url="/files/{scope}/{lfn}",
                        input_dir=str(input_dir or tmp_path), timefloor=10, pilot_getjob_tries=100,
                        pilot_getjob_interval=0.2)
    return site, qd


def task_id_of(output):
    assert "jediTaskID=" in output, output
    return int(output.split("jediTaskID=")[1].split()[0])


def test_prun_sandbox_rungen_outputs_and_pbook(task_server, zipapp_path, tmp_path):
    set_queue(QUEUE)
    token = task_server.token("user", "alice")
    code = user_code(tmp_path)
    rc, out = prun(task_server, token, tmp_path, code, "--exec", "sh run.sh %RNDM:100", "--nJobs", "2", "--outputs",
                   "out.txt", "--outDS", "user.alice.prun.test1", "--site", QUEUE, "--noBuild")
    assert rc == 0, out
    task_id = task_id_of(out)
    sandboxes = os.listdir(os.path.join(task_server.home, "files", "user.alice"))
    assert len(sandboxes) == 1 and sandboxes[0].startswith("jobO.") and sandboxes[0].endswith(".tar.gz")

    site, qd = site_for(task_server, zipapp_path, tmp_path)
    try:
        site.start("-j", "user", qd=qd)
        wait_for(lambda: task_status(task_server, task_id) == "done", "the prun task to be done", timeout=120)
    finally:
        site.stop_pilots()

    token_file = tmp_path / "alice.token"
    token_file.write_text(token)
    rc, shown = cli(task_server, "dataset", "show", "user.alice.prun.test1/", "--json", token_file=token_file)
    assert rc == 0, shown
    shown = json.loads(shown)
    outputs = sorted(f["lfn"] for f in shown["files"] if f["dataset"] == "user.alice.prun.test1_out.txt/")
    assert outputs == [f"user.alice.{task_id}._000001.out.txt", f"user.alice.{task_id}._000002.out.txt"]
    assert len([f for f in shown["files"] if f["lfn"].endswith(".log.tgz")]) == 2
    rc, got = cli(task_server, "dataset", "get", "user.alice.prun.test1/", "--no-logs", "--dir",
                  str(tmp_path / "dl"), token_file=token_file)
    assert rc == 0, got
    texts = sorted((tmp_path / "dl" / name).read_text() for name in outputs)
    assert texts == ["job 100\ndata from the sandbox\n", "job 101\ndata from the sandbox\n"]
    # the same file over HTTP with the user's token; another user may not read it
    url = f"{task_server.url}/files/user.alice/{outputs[0]}"
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).text.endswith("sandbox\n")
    other = task_server.token("user", "bob")
    assert requests.get(url, headers={"Authorization": f"Bearer {other}"}, timeout=10).status_code == 403

    # pbook's show (panda_api.get_tasks) lists the task
    listed = run_panda_client(task_server, token, tmp_path, "import json\nfrom pandaclient import panda_api\n"
                              "tasks = panda_api.get_api().get_tasks()\n"
                              "print('RESULT ' + json.dumps([[t['jediTaskID'], t['status'], t['taskName']] "
                              "for t in tasks]))\n")
    assert [task_id, "done", "user.alice.prun.test1/"] in listed

    # the same sandbox again: panda-client finds it by checksum and does not upload it twice
    rc, out = prun(task_server, token, tmp_path, code, "--exec", "sh run.sh 1", "--nJobs", "1", "--outputs",
                   "out.txt", "--outDS", "user.alice.prun.test2", "--site", QUEUE, "--noBuild")
    assert rc == 0, out
    assert os.listdir(os.path.join(task_server.home, "sandboxes", "alice")) == [sandboxes[0] + ".json"]


def test_prun_over_an_input_dataset_with_percent_in(task_server, zipapp_path, tmp_path):
    set_queue(QUEUE)
    token = task_server.token("user", "alice")
    data = tmp_path / "indata"
    data.mkdir()
    for i in range(3):
        (data / f"in{i}.txt").write_text(f"line {i}\n")
    token_file = tmp_path / "alice.token"
    token_file.write_text(token)
    rc, out = cli(task_server, "dataset", "add", "user.alice.indata", str(data), token_file=token_file)
    assert rc == 0, out
    code = tmp_path / "code"
    code.mkdir()
    (code / "merge.sh").write_text("for f in $(echo \"$1\" | tr , ' '); do cat \"$f\"; done > merged.txt\n")
    rc, out = prun(task_server, token, tmp_path, code, "--exec", "sh merge.sh %IN", "--inDS", "user.alice.indata",
                   "--nFilesPerJob", "2", "--outputs", "merged.txt", "--outDS", "user.alice.prun.in1", "--site",
                   QUEUE, "--noBuild")
    assert rc == 0, out
    task_id = task_id_of(out)
    site, qd = site_for(task_server, zipapp_path, tmp_path, input_dir=data)
    try:
        site.start("-j", "user", qd=qd)
        wait_for(lambda: task_status(task_server, task_id) == "done", "the prun task to be done", timeout=120)
    finally:
        site.stop_pilots()
    rc, got = cli(task_server, "dataset", "get", "user.alice.prun.in1_merged.txt/", "--dir", str(tmp_path / "dl"),
                  token_file=token_file)
    assert rc == 0, got
    texts = sorted(p.read_text() for p in (tmp_path / "dl").iterdir())
    assert texts == ["line 0\nline 1\n", "line 2\n"]
