"""End to end: files registered with the CLI, a flat task, minipanda's own pilot (the zipapp) runs its jobs, the
outputs are registered and the task is done."""
import json
import os
import subprocess
import sys

from test_pilot_harness import PilotSite
from taskhelp import set_queue, task_server, task_status  # noqa: F401 (task_server is a fixture)

pytest_plugins = ["test_pilot_harness"]  # the zipapp_path fixture


def test_task_runs_on_the_pilot(task_server, zipapp_path, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"in{i}.txt").write_text(f"line {i}\n")
    set_queue("TEST_PQ", maxrss=100000)
    subprocess.run([sys.executable, "-m", "minipanda", "dataset", "add", "e2e.in", str(data), "--url",
                    task_server.url, "--home", task_server.home], check=True, capture_output=True, timeout=60)
    command = "cat $(echo %IN | tr , ' ') > out.txt"  # %IN is comma-separated, as in prun
    out = subprocess.run([sys.executable, "-m", "minipanda", "task", "submit", "--exec", command,
                          "--inDS", "e2e.in", "--nFilesPerJob", "2", "--outputs", "out.txt", "--site", "TEST_PQ",
                          "--nScouts", "1", "--prodSourceLabel", "managed", "--taskName", "e2e", "--url",
                          task_server.url, "--home", task_server.home], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    task_id = int(out.split("jediTaskID=")[1])
    (tmp_path / "site").mkdir()
    site = PilotSite(task_server, zipapp_path, tmp_path / "site")
    try:
        qd = site.queuedata(copytool="copy", input_dir=str(data), timefloor=10, pilot_getjob_tries=50,
                            pilot_getjob_interval=0.2)
        site.start(qd=qd)  # one pilot: the scout, then the avalanche job (made once the scout finished)
        site.wait_for(lambda: task_status(task_server, task_id) == "done", "the task to be done")
    finally:
        site.stop_pilots()
    shown = task_server.call("dataset/show", {"name": "e2e_out.txt"}, method="GET")["data"]["files"]
    assert [f["lfn"] for f in shown] == [f"{task_id}._000001.out.txt", f"{task_id}._000002.out.txt"]
    first = os.path.join(shown[0]["location"], shown[0]["lfn"])
    with open(first) as handle:
        assert handle.read() == "line 0\nline 1\n"
    details = task_server.call("task/get_details", {"task_id": task_id}, method="GET")["data"]
    assert details["inputStatistics"] == {"finished": 3} and details["statistics"] == "finished:2"
    assert json.loads(json.dumps(details["nFilesFinished"])) == 3
