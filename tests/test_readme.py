"""README.md's command blocks, run as written, top to bottom, in one shell on a fresh home directory.

Left out, and why: the first block (installing, and running this very test suite), the `pip install -e .` line
(the package under test is installed already) and the pilot3 block (it downloads pilot3 from PyPI;
tests/test_pilot3_compat.py runs pilot3 itself). The shell runs in its own network namespace, so the README's
fixed port 25080 is free whatever else runs on this machine, and its HOME is a fresh directory, so
~/.minipanda and ~/.harvester are new.
"""
import os
import pathlib
import re
import subprocess

import pytest

from conftest import own_network_namespace

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
NETWORK_DOWNLOADS = "pip download"  # the pilot3 block


def readme_script():
    """The README's runnable blocks as one bash script that stops its background processes at the end."""
    blocks = [block for block in BLOCK.findall(README.read_text(encoding="utf-8"))[1:]
              if NETWORK_DOWNLOADS not in block]
    body = "\n".join(blocks).replace("pip install -e .\n", ":  # installed already\n")
    return "set -ex\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + body


def test_every_readme_block_runs_as_written(tmp_path):
    prefix = own_network_namespace()
    if prefix is None:
        pytest.skip("needs a network namespace of its own (unshare -n), so that port 25080 is free")
    (tmp_path / "script.sh").write_text(readme_script())
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIPANDA_", "HARVESTER_"))}
    env.update(HOME=str(home))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(prefix + ["bash", str(tmp_path / "script.sh")], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    log = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, log
    # What the README says the blocks produce: the job finished, the task done with both outputs registered.
    assert re.search(r"jobStatus\s+finished", proc.stdout), log
    assert re.search(r"\bdone\b", proc.stdout), log
    assert "10000000._000001.out.txt" in proc.stdout and "10000000._000002.out.txt" in proc.stdout, log
