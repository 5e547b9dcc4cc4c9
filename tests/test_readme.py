"""README.md's command blocks, run as written, top to bottom, in one shell, as a newcomer would: in a copy of the
repository (what a fresh clone holds), with a new virtual environment and a fresh home directory.

Every line of the Quick start runs, ``pip install -e .`` and the pilot3 block included. The blocks above it are
left out: the first installs the test extras and runs this whole test suite, and the testbed's is run by
tests/test_testbed.py.

The new virtual environment has no minipanda: ``pip install -e .`` installs it there from the copy. The libraries
minipanda needs are found through a ``.pth`` file naming the test environment's site-packages; the shell has no
network (below), so pip finds what it still needs in ``PIP_FIND_LINKS`` with ``PIP_NO_INDEX``: its build tools
(setuptools and wheel, fetched before the shell starts) and the pilot3 sdist that CI pre-fetches
(tests/pilot3/fetch.py), for the README's ``pip download``. The shell runs in its own network namespace, so the
README's fixed port 25080 is free whatever else runs on this machine; pilot3 runs in its own PID namespace, as the
README says.
"""
import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

from conftest import IN_CI, own_network_namespace

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def readme_blocks(section=None):
    """The sh blocks of README.md, or of one of its sections (from its heading to the next '## ' heading)."""
    text = README.read_text(encoding="utf-8")
    if section is not None:
        text = text[text.index(section):]
        text = text[:text.index("\n## ", 1)]
    return BLOCK.findall(text)


def readme_script():
    """The Quick start's blocks as one bash script that stops its background processes at the end."""
    return "set -ex\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + "\n".join(readme_blocks("## Quick start"))


def test_every_wait_in_the_readme_has_a_limit():
    loops = [line for block in readme_blocks() for line in block.splitlines()
             if re.search(r"\b(until|while)\b", line)]
    assert loops and all(line.startswith("timeout ") for line in loops), loops


def test_the_readme_queue_files_lint_clean():
    """Every queue file the README writes passes 'queueconfig lint' without an error or a warning."""
    import queueconfig

    files = [body for block in readme_blocks()
             for body in re.findall(r"cat > queues\.yaml <<'EOF'\n(.*?)^EOF", block, re.S | re.M)]
    assert len(files) == 2
    for body in files:
        assert queueconfig.loads(body, source="README queues.yaml").warnings == ()


def copy_of_the_repository(dest):
    """The files a clone holds, as they are in this working tree (new ones too, ignored ones not)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def new_virtual_environment(path, wheels):
    """A new venv (pip and setuptools, no minipanda) that finds the test environment's libraries, and in ``wheels``
    the build tools pip's isolated build of minipanda asks for (the README's shell has no network)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=300)
    # for 'pip install -e .', and for 'pip download --no-binary panda-pilot', which builds the sdist's metadata
    fetched = subprocess.run([str(path / "bin" / "pip"), "download", "--dest", str(wheels), "setuptools", "wheel"],
                             capture_output=True, text=True, timeout=900)
    if fetched.returncode:
        pytest.fail(f"cannot fetch pip's build tools for the README's pip lines: {fetched.stderr[-2000:]}")
    purelib = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
    # Plain path lines: the test environment's own .pth files (its editable minipanda) are not processed.
    ours = dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
    pathlib.Path(purelib, "test-environment.pth").write_text("\n".join(ours) + "\n")
    return path / "bin"


def pilot3_sdist_dir():
    sys.path.insert(0, str(REPO / "tests" / "pilot3"))
    try:
        import fetch
    finally:
        sys.path.pop(0)
    try:
        fetch.pilot3_dir()
    except fetch.Pilot3FetchError as exc:
        if IN_CI:
            pytest.fail(f"pilot3 is not pre-fetched and cannot be fetched: {exc}")
        pytest.skip(f"pilot3 cannot be fetched: {exc}")
    return fetch.default_cache_dir()


@pytest.mark.netns
@pytest.mark.pilot3
def test_every_readme_block_runs_as_written(tmp_path):
    prefix = own_network_namespace()
    if prefix is None:
        pytest.skip("needs a network namespace of its own (unshare -n), so that port 25080 is free")
    if subprocess.run(["unshare", "-pf", "--mount-proc", "--kill-child", "true"], capture_output=True).returncode:
        if IN_CI:
            pytest.fail("unshare -pf --mount-proc is not available: the README's pilot3 block needs it")
        pytest.skip("the README's pilot3 block needs unshare -pf --mount-proc (root or user namespaces)")
    sdists = pilot3_sdist_dir()
    clone = copy_of_the_repository(tmp_path / "minipanda")
    bin_dir = new_virtual_environment(tmp_path / "venv", tmp_path / "wheels")
    (tmp_path / "script.sh").write_text(readme_script())
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINIPANDA_", "HARVESTER_", "PANDA_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(HOME=str(home), PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
               PIP_FIND_LINKS=f"{sdists} {tmp_path / 'wheels'}", PIP_NO_INDEX="1",
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR") or os.path.expanduser("~/.cache/pip"),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run(prefix + ["bash", str(tmp_path / "script.sh")], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1500)
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    (tmp_path / "stderr.txt").write_text(proc.stderr)
    log = proc.stdout[-6000:] + proc.stderr[-8000:]
    assert proc.returncode == 0, log
    work = tmp_path / "minipanda-try"  # ../minipanda-try from the clone: the README's own directory
    assert (work / "job.json").is_file() and not (clone / "job.json").exists()
    # What the README says the blocks produce: job 1 run by our pilot, job 2 by pilot3, the task done with both
    # outputs registered, the harvester's job finished; the queue files lint clean.
    shown = re.findall(r"^jobStatus\s+(\w+)", proc.stdout, re.M)
    assert shown == ["activated", "finished", "finished"], (shown, log)  # job show 1, 1 again, then 2
    assert (work / "pilot3-work" / "pilot3.log").stat().st_size > 0
    assert re.search(r"\bdone\b", proc.stdout), log
    assert "10000000._000001.out.txt" in proc.stdout and "10000000._000002.out.txt" in proc.stdout, log
    assert "ok, 1 queues" in proc.stdout and "warning:" not in proc.stderr, log
