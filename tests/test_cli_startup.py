"""The console scripts start cheaply: building a command's parser (``--help``) imports no part of the server, the
database layer or the queue schema, and a command that only talks to a server over HTTP does not import the server.

Each command runs as its console script does (``python -m PACKAGE ARGS``, in a fresh interpreter), and the modules
it imported are listed when it exits. A module named here imported at start costs every ``--help``, every
``minipanda job list`` and every test that runs a command a second of CPU (bench/cli_startup.py measures it)."""
import os
import subprocess
import sys

import pytest

# Third-party packages and our own modules that a command imports only once it runs what needs them.
SERVER = ["granian", "bottle", "jwt", "peewee", "psycopg2", "minipanda.api", "minipanda.server.process",
          "minipanda.core.models", "minipanda.core.auth", "minipanda.tasks.datasets", "rich"]
SCHEMA = ["pydantic", "yaml", "queueconfig.schema", "queueconfig.loader"]
HARVESTER = ["peewee", "harvester.db", "harvester.models", "harvester.client", "htcondor", "paramiko", "requests"]

# Prints the names of every module imported by ``python -m PACKAGE ARGS`` once the command has returned.
PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
package = sys.argv[0]
try:
    runpy.run_module(package, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("MODULES " + " ".join(sorted(sys.modules)))
"""


def imported_by(tmp_path, *argv):
    """The set of modules imported by the command ``argv`` (package first), run as its console script is."""
    env = dict(os.environ, MINIPANDA_HOME=str(tmp_path / "home"), HARVESTER_HOME=str(tmp_path / "hhome"))
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("MODULES ")]
    assert lines, f"{argv}: no module list (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return set(lines[-1].split()[1:])


def loaded(modules, names):
    """The names (a package or a module) of which ``modules`` holds the module or one below it."""
    return sorted(name for name in names if any(m == name or m.startswith(name + ".") for m in modules))


@pytest.mark.parametrize("argv, unwanted", [pytest.param(argv, unwanted, id=" ".join(argv)) for argv, unwanted in (
    (["minipanda", "--help"], SERVER + SCHEMA + ["requests"]),
    (["minipanda", "token", "--help"], SERVER + SCHEMA + ["requests"]),
    (["harvester", "--help"], HARVESTER + SCHEMA),
    (["queueconfig", "--help"], SCHEMA),
    (["pilot", "--help"], ["requests", "minipanda", "harvester", "queueconfig"]),
)])
def test_help_imports_nothing_heavy(tmp_path, argv, unwanted):
    modules = imported_by(tmp_path, *argv)
    assert "argparse" in modules  # the probe saw the command run
    assert loaded(modules, unwanted) == []


def test_an_http_command_does_not_import_the_server(tmp_path):
    """``minipanda job list`` needs the HTTP client (requests), not the server, its database layer or the schema;
    against a port where nothing listens it fails with the client's own error."""
    modules = imported_by(tmp_path, "minipanda", "job", "list", "--url", "http://127.0.0.1:1")
    assert "requests" in modules and "minipanda.cli.client" in modules
    assert loaded(modules, SERVER + SCHEMA) == []


def test_a_harvester_table_command_does_not_import_the_schema(tmp_path):
    """``harvester workers`` reads harvester.db (peewee), never the queue schema (pydantic) nor the transports."""
    modules = imported_by(tmp_path, "harvester", "workers")  # no database yet: a clear exit 2, after the import
    assert "harvester.db" in modules
    assert loaded(modules, SCHEMA + ["htcondor", "paramiko", "requests"]) == []


def test_every_name_the_queueconfig_package_exports_is_there():
    """The package imports its modules when a name is first used: each exported name still resolves, to the
    object its module defines."""
    import importlib

    import queueconfig

    for name in queueconfig.__all__:
        assert getattr(queueconfig, name) is not None, name
    assert queueconfig.schedconfig is importlib.import_module("queueconfig.schedconfig").schedconfig  # a function
    assert queueconfig.Queue is importlib.import_module("queueconfig.schema").Queue
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        queueconfig.nothing  # noqa: B018


def test_the_server_starts_without_the_monitor_pages_template_engine(tmp_path):
    """jinja2 and the monitor's page module are loaded by the first monitor page served, not by every server start
    (the testbed's, each test's)."""
    proc = subprocess.run([sys.executable, "-c", "import sys, minipanda.server.process, minipanda.api.monitor; "
                           "print('MODULES ' + ' '.join(sorted(sys.modules)))"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    modules = set(proc.stdout.split("MODULES ", 1)[1].split()) if "MODULES " in proc.stdout else set()
    assert "minipanda.api.monitor" in modules, proc.stderr[-2000:]  # the routes are there, their pages are not
    assert loaded(modules, ["jinja2", "minipanda.monitor.pages"]) == []


OTHER_COMMANDS = ["minipanda.cli.tasks", "minipanda.cli.queues", "minipanda.cli.harvester", "minipanda.cli.service"]


@pytest.mark.parametrize("argv, unwanted", [
    (["minipanda", "testbed", "--help"], OTHER_COMMANDS),
    (["minipanda", "serve", "--help"], OTHER_COMMANDS + ["testbed"]),
    (["minipanda", "job", "list", "--url", "http://127.0.0.1:1"], OTHER_COMMANDS + ["testbed"]),
])
def test_a_command_builds_only_its_own_parser(tmp_path, argv, unwanted):
    """The other commands' parsers (and the modules adding them) were ~10-20 ms of CPU at every command's start."""
    modules = imported_by(tmp_path, *argv)
    assert "argparse" in modules
    assert loaded(modules, unwanted) == []


def test_the_command_table_names_every_command():
    """minipanda.cli.commands.COMMANDS says which function adds which command: a name missing there would still run
    (the whole parser is built for a name it does not know), but at the whole parser's cost."""
    import argparse

    from minipanda.cli import commands

    def names(parser):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return list(action.choices)

    assert names(commands.build_parser()) == [name for names_, _ in commands.COMMANDS for name in names_]
    for names_, _ in commands.COMMANDS:
        for name in names_:
            assert commands.command_named([name, "--help"]) == name
            assert set(names(commands.build_parser(only=name))) == set(names_)
    assert commands.command_named(["--help"]) is None and commands.command_named(["tesbed"]) is None
