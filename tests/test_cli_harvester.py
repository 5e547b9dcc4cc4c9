"""``minipanda worker list`` and ``minipanda harvester list|kill-workers|set-n-workers`` against a live server."""
import json

import requests

from test_cli import run


def harvester_call(server, token, path, payload):
    reply = requests.post(f"{server.url}/api/v1/harvester/{path}", json=payload, headers=server.headers(token))
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]


def test_token_create_harvester_role(tmp_path):
    home = str(tmp_path / "home")
    created = run("token", "create", "--role", "harvester", "--name", "h1", "--home", home)
    assert created.stdout.count(".") == 2 and "(harvester)" in created.stderr


def test_worker_and_harvester_commands(sqlite_server):
    token = sqlite_server.token("harvester", "h1")
    harvester_call(sqlite_server, token, "heartbeat", {"harvester_id": "h1", "version": "0.3", "host": "hostA",
                                                      "start_time": "2026-01-01T00:00:00Z"})
    harvester_call(sqlite_server, token, "update_workers", {"harvester_id": "h1", "workers": [
        {"workerID": 1, "batchID": "101", "computingSite": "QA", "status": "running", "pandaid_list": [5]},
        {"workerID": 2, "batchID": "102", "computingSite": "QB", "status": "failed", "diagMessage": "killed -9"}]})
    table = run("worker", "list", server=sqlite_server).stdout.splitlines()
    assert table[0].split()[:4] == ["workerID", "harvester", "queue", "status"] and len(table) == 3
    rows = json.loads(run("worker", "list", "--json", "--status", "failed", server=sqlite_server).stdout)
    assert [(r["workerID"], r["batchID"], r["queue"], r["status"], r["diag"], r["harvester"]) for r in rows] == [
        (2, "102", "QB", "failed", "killed -9", "h1")]
    rows = json.loads(run("worker", "list", "--json", "--queue", "QA", "--harvester", "h1", "--limit", "5",
                          server=sqlite_server).stdout)
    assert [r["pandaid_list"] for r in rows] == [[5]]
    assert "(none)" in run("worker", "list", "--harvester", "h9", server=sqlite_server).stdout

    listing = run("harvester", "list", server=sqlite_server).stdout
    assert "h1" in listing and "hostA" in listing and "last_heartbeat" in listing
    out = run("harvester", "kill-workers", "--queue", "QA", "--worker", "1", "--worker", "3", server=sqlite_server)
    assert "KILL_WORKERS" in out.stdout and "queued" in out.stdout
    capped = json.loads(run("harvester", "set-n-workers", "--queue", "QA", "--n", "4", "--harvester", "h1", "--json",
                            server=sqlite_server).stdout)
    lifted = json.loads(run("harvester", "set-n-workers", "--queue", "QA", "--n", "none", "--json",
                            server=sqlite_server).stdout)
    commands = harvester_call(sqlite_server, token, "acquire_commands", {"harvester_id": "h1", "n_commands": 10})
    assert [(c["command"], c["params"]) for c in commands] == [
        ("KILL_WORKERS", {"queue": "QA", "worker_ids": [1, 3]}), ("SET_N_WORKERS", {"queue": "QA", "n_workers": 4}),
        ("SET_N_WORKERS", {"queue": "QA", "n_workers": None})]
    assert [c["command_id"] for c in commands][1:] == [capped["command_id"], lifted["command_id"]]


def test_harvester_cli_errors(sqlite_server):
    proc = run("harvester", "set-n-workers", "--queue", "QA", "--n", "lots", server=sqlite_server, check=False)
    assert proc.returncode == 2 and "--n" in proc.stderr
    proc = run("harvester", "kill-workers", "--queue", "QA", "--harvester", "bad id", server=sqlite_server,
               check=False)
    assert proc.returncode == 1 and "harvester_id:" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("worker", "list", "--limit", "0", server=sqlite_server, check=False)
    assert proc.returncode == 1 and "limit: must be" in proc.stderr


def test_help_names_every_option():
    for argv, options in ((("worker", "list"), ("--queue", "--status", "--harvester", "--limit", "--json")),
                          (("harvester", "kill-workers"), ("--queue", "--worker", "--harvester")),
                          (("harvester", "set-n-workers"), ("--queue", "--n", "--harvester")),
                          (("harvester", "list"), ("--json", "--url"))):
        out = run(*argv, "--help").stdout
        for option in options:
            assert option in out, (argv, option)
