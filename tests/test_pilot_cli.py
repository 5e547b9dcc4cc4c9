"""The command line: options, the zipapp, and the helper commands."""
import os
import subprocess
import sys
import zipfile

from pilot import cli, queuedata
from test_pilot_harness import ROOT

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def test_options_close_to_pilot3():
    opts = cli.run_parser().parse_args(["-q", "Q", "--url", "http://h", "-p", "1234", "-j", "user", "-a", "/w",
                                        "-l", "60", "-d", "--harvester-workdir", "/h", "--harvester-submit-mode",
                                        "push", "-z", "--token-file", "/t", "--queuedata", "/qd.json"])
    assert (opts.queue, opts.url, opts.port, opts.job_label, opts.workdir, opts.lifetime) == (
        "Q", "http://h", 1234, "user", "/w", 60)
    assert opts.debug and opts.no_server_updates and opts.harvester_submit_mode == "PUSH"


def test_zipapp_is_self_contained(zipapp_path, tmp_path):
    with zipfile.ZipFile(zipapp_path) as archive:
        names = archive.namelist()
    assert "__main__.py" in names and "pilot/worker.py" in names and "pilot/worker.pyc" in names
    assert not [n for n in names if "__pycache__" in n or not (n.startswith("pilot/") or n == "__main__.py")]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no PYTHONPATH: only the archive itself
    out = subprocess.run([sys.executable, zipapp_path, "--version"], capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0 and "minipanda pilot" in out.stdout
    copy = tmp_path / "again.pyz"
    out = subprocess.run([sys.executable, zipapp_path, "build-zipapp", str(copy)], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0 and copy.read_bytes() == open(zipapp_path, "rb").read()


def test_queuedata_keys_command(zipapp_path):
    out = subprocess.run([sys.executable, zipapp_path, "queuedata-keys"], capture_output=True, text=True)
    listed = [line.split()[0] for line in out.stdout.splitlines()]
    assert listed == [name for name, _, _ in queuedata.documented_keys()]


def test_missing_queue_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pilot", "-a", str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 2 and "--queue" in out.stderr


def test_help_lists_the_subcommands_and_every_option_has_help(zipapp_path):
    out = subprocess.run([sys.executable, zipapp_path, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in cli.commands():
        assert f"pilot {name}" in out.stdout
        sub = subprocess.run([sys.executable, zipapp_path, name, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and f"usage: pilot {name}" in sub.stdout
    for action in cli.run_parser()._actions:
        assert action.help, action.option_strings
