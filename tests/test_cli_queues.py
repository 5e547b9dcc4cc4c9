"""``minipanda queue list|show`` against a real server with a queue file, and a closed pipe ends quietly."""
import json
import subprocess
import sys

import requests
from conftest import make_job
from test_server_process import QueueServer

QUEUES = """queues:
  TEST_PQ:
    prodSourceLabels: [managed, user]
  DOWN:
    status: offline
"""


def minipanda(server, *args):
    return subprocess.run([sys.executable, "-m", "minipanda", *args, "--url", server.url, "--home", server.home],
                          capture_output=True, text=True, timeout=60)


def test_queue_list_and_show_say_status_labels_resources_waiting_jobs_and_why_offline(tmp_path):
    (tmp_path / "q.yaml").write_text(QUEUES)
    server = QueueServer(tmp_path / "home", tmp_path / "q.yaml")
    try:
        reply = requests.post(server.url + "/api/v1/job/submit", json={"jobs": [make_job(), make_job()]},
                              headers=server.headers())
        assert reply.status_code == 200, reply.text
        listing = minipanda(server, "queue", "list")
        assert listing.returncode == 0, listing.stderr
        lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
        assert lines["TEST_PQ"].split()[1:3] == ["online", "managed,user"] and " 2 " in lines["TEST_PQ"]
        assert "offline" in lines["DOWN"] and "status offline in the queue configuration" in lines["DOWN"]
        shown = json.loads(minipanda(server, "queue", "show", "TEST_PQ", "--json").stdout)
        assert shown["waiting"] == 2 and shown["queuedata"]["prodsourcelabels"] == ["managed", "user"]
        unknown = minipanda(server, "queue", "show", "NOPE")
        assert unknown.returncode == 1 and "NOPE" in unknown.stderr
    finally:
        server.stop()


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    from minipanda.core import auth, schema

    home = tmp_path / "home"
    database = schema.open_database("sqlite:///" + str(home / "minipanda.db"))
    database.connect(reuse_if_open=True)
    secret = auth.load_secret(str(home))
    with database.atomic():
        for n in range(1500):  # a listing far larger than the pipe's buffer
            auth.create_token(secret, f"user{n}", "user")
    database.close()
    proc = subprocess.Popen([sys.executable, "-m", "minipanda", "token", "list", "--home", str(home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone, as with `| head -1` once it has its line
    _, stderr = proc.communicate(timeout=60)
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
