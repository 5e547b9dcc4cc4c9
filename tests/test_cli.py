"""The minipanda command against a live server: job submit/list/show/kill, tokens, and clear errors."""
import json
import subprocess
import sys

from conftest import make_job


def run(*args, server=None, check=True):
    argv = [sys.executable, "-m", "minipanda", *args]
    if server is not None:
        argv += ["--url", server.url, "--home", server.home]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_job_commands(sqlite_server, tmp_path):
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps([make_job(jobName="cli.a"), make_job(jobName="cli.b")]))
    out = run("job", "submit", str(spec), "--json", server=sqlite_server)
    ids = [row[0] for row in json.loads(out.stdout)]
    table = run("job", "list", server=sqlite_server).stdout
    assert table.splitlines()[0].split()[:3] == ["PandaID", "jobStatus", "computingSite"]
    assert "cli.a" in table and "cli.b" in table and "activated" in table
    rows = json.loads(run("job", "list", "--json", "--status", "activated", server=sqlite_server).stdout)
    assert sorted(r["PandaID"] for r in rows) == sorted(ids)
    show = run("job", "show", str(ids[0]), server=sqlite_server).stdout
    assert "cli.a" in show and "history:" in show and "submitted by admin" in show
    shown = json.loads(run("job", "show", str(ids[0]), "--json", server=sqlite_server).stdout)
    assert shown["job"]["jobStatus"] == "activated" and shown["history"][0]["to"] == "activated"
    kill = run("job", "kill", str(ids[0]), "424242", server=sqlite_server, check=False)
    assert kill.returncode == 1 and "kill registered" in kill.stdout and "not killed" in kill.stdout


def test_cli_errors_are_clear(sqlite_server, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    proc = run("job", "submit", str(bad), server=sqlite_server, check=False)
    assert proc.returncode == 1 and "bad.json: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    bad.write_text(json.dumps({"jobName": "x"}))
    proc = run("job", "submit", str(bad), server=sqlite_server, check=False)
    assert proc.returncode == 1 and "jobs[0].computingSite: required" in proc.stderr
    proc = run("job", "show", "999999", server=sqlite_server, check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = run("job", "list", "--url", "http://127.0.0.1:1", check=False)
    assert proc.returncode == 1 and "cannot reach" in proc.stderr


def test_token_commands(tmp_path):
    home = str(tmp_path / "home")
    created = run("token", "create", "--role", "user", "--name", "fred", "--home", home)
    assert created.stdout.count(".") == 2 and "revoke with" in created.stderr
    listing = run("token", "list", "--home", home).stdout
    assert "fred" in listing and "valid" in listing
    jti = listing.splitlines()[1].split()[0]
    run("token", "revoke", jti, "--home", home)
    assert "revoked" in run("token", "list", "--home", home).stdout
    proc = run("token", "create", "--role", "wizard", "--name", "x", "--home", home, check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_help_explains():
    out = run("serve", "--help").stdout
    for option in ("--host", "--port", "--db", "--home", "--auth", "--max-body-mb"):
        assert option in out
    assert "MINIPANDA_HOME" in run("--help").stdout


def test_every_option_and_positional_of_every_command_has_help_text():
    import argparse

    from minipanda.cli.commands import build_parser

    def missing(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from missing(sub, path + [name])
            elif not action.help and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield " ".join(path + ["/".join(action.option_strings or [action.dest])])

    assert list(missing(build_parser(), ["minipanda"])) == []
