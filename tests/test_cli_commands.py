"""All four command lines (minipanda, harvester, pilot, queueconfig): ``--help`` of every command and subcommand
works, and every command ends quietly, exit 0, when the reader of its output goes away (``cmd | head -1``)."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from conftest import make_job


def command_paths(parser, path=()):
    """Every command path of an argparse parser: (), ("job",), ("job", "list"), ..."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, path + (name,))


def every_command():
    from harvester.cli import parser as harvester_parser
    from minipanda.cli.commands import build_parser as minipanda_parser
    from pilot.cli import commands as pilot_commands
    from queueconfig.cli import build_parser as queueconfig_parser

    for cli, parser in (("minipanda", minipanda_parser()), ("harvester", harvester_parser()),
                        ("queueconfig", queueconfig_parser())):
        for path in command_paths(parser):
            yield cli, path
    yield "pilot", ()
    for name in pilot_commands():  # the pilot dispatches its subcommands itself, each with its own parser
        yield "pilot", (name,)


def main_of(cli):
    import harvester.cli
    import minipanda.cli
    import pilot.cli
    import queueconfig.cli

    return {"minipanda": minipanda.cli.main, "harvester": harvester.cli.main, "pilot": pilot.cli.main,
            "queueconfig": queueconfig.cli.main}[cli]


COMMANDS = list(every_command())


def test_the_list_covers_the_commands_a_newcomer_reads_about():
    listed = {" ".join((cli,) + path) for cli, path in COMMANDS}
    for expected in ("minipanda task submit", "minipanda serve", "minipanda job list", "minipanda testbed",
                     "minipanda worker list", "harvester run", "harvester discover", "pilot build-zipapp",
                     "pilot queuedata-keys", "queueconfig lint", "queueconfig schema"):
        assert expected in listed
    assert len(listed) > 40


@pytest.mark.parametrize("cli,path", COMMANDS, ids=[" ".join((c,) + p) for c, p in COMMANDS])
def test_help_of_every_command_prints_usage_and_exits_0(cli, path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main_of(cli)(list(path) + ["--help"])
    out, err = capsys.readouterr()
    assert stopped.value.code == 0, err
    assert out.startswith("usage: ") and err == ""
    assert " ".join((cli,) + path) in out.splitlines()[0] or cli in out.splitlines()[0]


def run_into_closed_pipe(argv, **kwargs):
    """Run ``argv`` with stdout a pipe whose reader is already gone; (exit code, stderr)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, **kwargs)
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("argv", [
    ["minipanda", "--help"], ["harvester", "settings"], ["harvester", "--help"], ["pilot", "queuedata-keys"],
    ["pilot", "--help"], ["queueconfig", "schema"], ["queueconfig", "--help"]], ids=" ".join)
def test_every_cli_ends_quietly_on_a_closed_pipe(argv):
    code, err = run_into_closed_pipe([sys.executable, "-m"] + argv)
    assert (code, err) == (0, "")


def test_a_job_list_into_a_closed_pipe_ends_quietly(sqlite_server, tmp_path):
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps([make_job(jobName=f"pipe.{n}") for n in range(30)]))
    subprocess.run([sys.executable, "-m", "minipanda", "job", "submit", str(spec), "--url", sqlite_server.url,
                    "--home", sqlite_server.home], check=True, capture_output=True)
    for argv in (["job", "list", "--limit", "1000"], ["token", "list", "--db", sqlite_server.db_url]):
        code, err = run_into_closed_pipe([sys.executable, "-m", "minipanda", *argv, "--home", sqlite_server.home] +
                                         (["--url", sqlite_server.url] if argv[0] == "job" else []))
        assert (code, err) == (0, ""), argv


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error():
    from queueconfig.service import quiet_on_closed_pipe

    @quiet_on_closed_pipe
    def main(argv):
        raise BrokenPipeError("a socket, not stdout")

    with pytest.raises(BrokenPipeError):
        main([])
