"""Every command block of every guide in docs/guides/, run as written, top to bottom, in one bash shell on a fresh
HOME and an empty working directory, as tests/test_readme.py does for the README.

How each guide runs, and the only changes made to its text (each one is listed with its reason where it is made):

- testbed.md and pilot3-and-panda-client.md: in a network namespace of their own (loopback only), so the fixed port
  25080 the guides use is free whatever else runs on this machine. The pilot3 guide's `pip download` and unpacking
  of pilot3 is replaced by a copy of the same release, already unpacked in the tests' cache (tests/pilot3/fetch.py:
  downloaded once, sha256 checked), and it runs only where pilot3 can (the skip/fail rule of the other pilot3
  tests).
- slurm-over-ssh.md and no-network-nodes.md: against a real munged + slurmctld + slurmd and a real sshd on loopback
  (tests/slurmhelp.py, the fixtures of tests/test_harvester_slurm_live.py). Slurm jobs start where slurmd runs, in
  this machine's network, and must reach the server there: so no namespace; the guide's port 25080 becomes a free
  port, and the site values at the top of the guide (login host, SSH port, user, key, shared directory, server
  host) become the fixture's.
- edge-harvester.md: on the hosts of tests/nethosts.py (edge, login, two Slurm nodes without a route to
  edge): the guide runs on edge (its own network: port 25080 stays), its site values become login's sshd and the
  site directory.
- htcondor.md: against the one-host HTCondor pool of tests/condorhelp.py (skipped without it, a failure under
  CI=true): the guide's remote schedd is the pool's, its token one the pool signed (the admin's condor_token_create
  is a block the guide shows, not one it runs), its worker directory one the pool cannot see; on the host network
  (the pilot jobs reach the server there), port 25080 a free port, and an empty HTCondor configuration on the
  harvester side.
- postgresql.md: only with MINIPANDA_TEST_PG_URL (a failure under CI=true without it), on the host network (that is
  where PostgreSQL listens): the guide's database URL becomes the test database's, port 25080 a free port.

Every process the blocks start is stopped: the guides stop their own, the script's EXIT trap kills its background
jobs by pid, and any process left with the test's HOME in its environment is killed by pid and fails the test.
"""
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

from conftest import IN_CI, PG_URL, free_port, own_network_namespace

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDES = ROOT / "docs" / "guides"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
PORT = "25080"


def guide_blocks(name):
    """The ```sh blocks of one guide, in order."""
    return BLOCK.findall((GUIDES / name).read_text(encoding="utf-8"))


def set_variables(text, values):
    """Give the site variables at the top of a guide the test's values: each `NAME=...` line (the guide marks them
    as the lines a reader changes) gets a new value; the rest of the line, its comment, stays."""
    for name, value in values.items():
        text, n = re.subn(rf"^{name}=.*?(?=\s+#|$)", lambda _: f"{name}={value}", text, count=1, flags=re.M)
        assert n == 1, f"the guide sets no variable {name} at the start of a line"
    return text


def guide_script(name, replace=(), variables=None):
    """The guide's blocks as one bash script: stop at the first failing command, and kill the background jobs the
    blocks started (by pid) when the script ends, whatever way it ends."""
    body = "\n".join(guide_blocks(name))
    for old, new in replace:
        assert old in body, f"{name} no longer contains {old!r}: update the test's substitution"
        body = body.replace(old, new)
    if variables:
        body = set_variables(body, variables)
    return "set -ex\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n" + body


def with_home(home):
    """Pids of the processes whose environment has HOME=home: what the guide's commands started."""
    marker = f"HOME={home}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    if marker in handle.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def leftovers(home):
    """Processes the guide left behind (a short grace for those already stopping), killed by pid; their command
    lines are returned for the assertion."""
    deadline = time.time() + 10
    while with_home(home) and time.time() < deadline:
        time.sleep(0.5)
    left = []
    for pid in with_home(home):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().replace(b"\0", b" ").decode(errors="replace")
            left.append(f"{pid}: {argv}")
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return left


def run_guide(tmp_path, script, prefix=(), env=None, timeout=300):
    """Run ``script`` with bash in tmp_path/work, HOME=tmp_path/home; return (stdout, log) after checking the exit
    code and that nothing the guide started is still running."""
    (tmp_path / "script.sh").write_text(script)
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIPANDA_", "HARVESTER_", "PANDA_"))}
    run_env.update(HOME=str(home), **(env or {}))
    try:
        proc = subprocess.run([*prefix, "bash", str(tmp_path / "script.sh")], cwd=work, env=run_env,
                              capture_output=True, text=True, timeout=timeout)
    finally:
        left = leftovers(home)
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    (tmp_path / "stderr.txt").write_text(proc.stderr)
    log = proc.stdout[-6000:] + "\n--- stderr ---\n" + proc.stderr[-8000:]
    assert proc.returncode == 0, log
    assert not left, f"processes the guide started were still running: {left}"
    return proc.stdout, log


# ---- the Slurm guides: a real Slurm behind a real sshd on loopback --------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """munged + slurmctld + slurmd and an sshd whose sessions find that Slurm (SLURM_CONF, as a login node's
    profile would set it), exactly as in tests/test_harvester_slurm_live.py; stopped by pid at the end."""
    from slurmhelp import Slurm, Sshd

    base = tmp_path_factory.mktemp("cluster")
    slurm = Slurm(base / "slurm")
    sshd = Sshd(base / "sshd", {"SLURM_CONF": slurm.conf})
    try:
        slurm.start()
        sshd.start()
        yield slurm, sshd
    finally:
        sshd.stop()
        slurm.stop()


def site_values(sshd, tmp_path):
    """The guide's site variables for the loopback cluster: the login node is this host's sshd (port, key and user
    of the fixture), the shared directory a temporary one, and the compute node (slurmd, this host) reaches the
    server on 127.0.0.1."""
    return {"LOGIN_HOST": "127.0.0.1", "LOGIN_PORT": str(sshd.port), "LOGIN_USER": "root",
            "SSH_KEY": sshd.user_key, "SHARED": str(tmp_path / "shared"), "SERVER_HOST": "127.0.0.1"}


@pytest.mark.slurm
@pytest.mark.ssh
def test_slurm_over_ssh_guide(cluster, tmp_path):
    slurm, sshd = cluster
    # 25080 -> a free port: the guide runs on this host's network (the Slurm job must reach the server there)
    script = guide_script("slurm-over-ssh.md", replace=[(PORT, str(free_port()))],
                          variables=site_values(sshd, tmp_path))
    out, log = run_guide(tmp_path, script)
    assert "system: slurm" in out and "partition: debug" in out, log          # discover found the partition
    assert re.search(r"jobStatus\s+finished", out), log
    assert "accepted by slurm as batch job" in out and "COMPLETED" in out, log   # harvester explain --worker 1
    assert re.search(r"ok, 2 queues.*\n(.*\n)*\s+pilot\.per_node\s+4", out), log   # the multi-node queues lint clean


@pytest.mark.slurm
@pytest.mark.ssh
def test_no_network_nodes_guide(cluster, tmp_path):
    slurm, sshd = cluster
    values = site_values(sshd, tmp_path)
    del values["SERVER_HOST"]  # the server stays on 127.0.0.1: only harvester talks to it
    port = str(free_port())
    # 25080 -> a free port (the guide runs on this host's network, see test_slurm_over_ssh_guide); the commands that
    # use the default URL (minipanda job/task/dataset, harvester run) get it from MINIPANDA_URL
    script = guide_script("no-network-nodes.md", replace=[(PORT, port)], variables=values)
    out, log = run_guide(tmp_path, script, env={"MINIPANDA_URL": f"http://127.0.0.1:{port}"})
    assert re.search(r"\bdone\b", out), log
    assert "line 1\nline 2" in out, log
    assert "10000000._000001.out.txt" in out and "10000000._000002.out.txt" in out, log


# ---- the testbed ------------------------------------------------------------------------------------------------------

@pytest.mark.netns
def test_testbed_guide(tmp_path):
    prefix = own_network_namespace()
    if prefix is None:
        pytest.skip("needs a network namespace of its own (unshare -n), so that port 25080 is free")
    out, log = run_guide(tmp_path, guide_script("testbed.md"), prefix=prefix)
    assert "20 of 20 jobs finished" in out, log
    assert "s warm (demo task submitted, " in out and "s cold (warm-up task submitted, no pilot up" in out, log
    assert "\nTrue\n" in out, log  # the warm makespan is the shorter one
    assert "<title>" in out and 'minipanda_jobs{queue="TESTBED",state="finished"} 20.0' in out, log
    assert "nothing left running" in out, log


# ---- pilot3 and panda-client ------------------------------------------------------------------------------------------

PILOT3_DOWNLOAD = "pip download --no-deps --no-binary panda-pilot panda-pilot==3.7.0.36 && tar xzf panda-pilot-3.7.0.36.tar.gz"


def pilot3_or_skip():
    from pilot3.harness import pilot3_or_skip as shared

    return shared("pilot3 guide")


@pytest.mark.netns
@pytest.mark.pilot3
def test_pilot3_and_panda_client_guide(tmp_path):
    pytest.importorskip("pandaclient", reason="panda-client is a test dependency: pip install -e '.[test]'")
    prefix = own_network_namespace()
    if prefix is None:
        pytest.skip("needs a network namespace of its own (unshare -n), so that port 25080 is free")
    pilot3 = pilot3_or_skip()
    # the guide's download of pilot3 from PyPI -> a copy of the same release from the tests' cache (sha256-checked
    # by tests/pilot3/fetch.py): the namespace has no network, and the tests fetch pilot3 once
    script = guide_script("pilot3-and-panda-client.md",
                          replace=[(PILOT3_DOWNLOAD, f"cp -r {pilot3} panda-pilot-3.7.0.36")])
    out, log = run_guide(tmp_path, script, prefix=prefix)
    assert "status 0 PandaID 1 jobName hello-pilot3" in out, log
    assert "1 activated TEST_PQ" in out and "1 finished TEST_PQ 0 0" in out, log
    assert "payload args: --n 3" in out, log


# ---- PostgreSQL ---------------------------------------------------------------------------------------------------------

@pytest.mark.postgres
def test_postgresql_guide(tmp_path):
    if not PG_URL:
        if IN_CI:
            pytest.fail("CI=true: MINIPANDA_TEST_PG_URL must be set for the PostgreSQL guide (see .ci/run)",
                        pytrace=False)
        pytest.skip("set MINIPANDA_TEST_PG_URL=postgresql://... to run the PostgreSQL guide")
    from conftest import reset_postgres

    reset_postgres(PG_URL)  # an empty database, as the guide's administrator made it
    port = str(free_port())
    # DB -> the test database (the guide's one marked variable); 25080 -> a free port, since the guide runs on this
    # host's network, where PostgreSQL listens; the commands that use the default URL get it from MINIPANDA_URL
    script = guide_script("postgresql.md", replace=[(PORT, port)], variables={"DB": PG_URL})
    out, log = run_guide(tmp_path, script, env={"MINIPANDA_URL": f"http://127.0.0.1:{port}"})
    assert re.search(r"1 \| hello-pg\s+\| finished", out), log
    assert re.search(r"sent\s+\| finished\s+\| pilot reported finished", out), log  # no input, shorter than the delay
    assert re.search(r"jobStatus\s+finished", out), log
    assert (tmp_path / "work" / "minipanda-backup.sql").stat().st_size > 0


# ---- HTCondor: the one-host pool of tests/condorhelp.py -------------------------------------------------------------

@pytest.mark.htcondor
def test_htcondor_guide(condor_pool, tmp_path):
    """The guide's remote schedd is the pool's, located through its collector; the token is one the pool signed
    (the guide's admin step, condor_token_create, is not a block the guide runs); the pilots' directories are where
    the pool cannot see them, so only file transfer can bring the pilot to the execute side. The pilot jobs run in
    this machine's network and reach the server there: no namespace, a free port instead of 25080."""
    token = tmp_path / "condor.token"
    token.write_text(condor_pool.token() + "\n")
    config = tmp_path / "empty_condor_config"  # a harvester host without any HTCondor configuration
    config.write_text("")
    workdir = os.path.join(condor_pool.unseen, f"guide-{os.getpid()}-{time.time_ns()}")
    values = {"POOL": condor_pool.collector, "SCHEDD": condor_pool.schedd_name(), "TOKEN_FILE": str(token),
              "WORKDIR": workdir, "SERVER_HOST": "127.0.0.1"}
    script = guide_script("htcondor.md", replace=[(PORT, str(free_port()))], variables=values)
    out, log = run_guide(tmp_path, script, env={"CONDOR_CONFIG": str(config)})
    assert "-rw-------" in out and "ok, 1 queues" in out, log
    assert re.search(r"jobStatus\s+finished", out) and re.search(r"batchID\s+\d+\.\d+", out), log
    assert "accepted by htcondor as batch job" in out and "JobStatus 4 (completed); exit code 0" in out, log
    assert f"work area {condor_pool.base}/local/lib/condor/execute/dir_" in out, log  # ran in the scratch directory


# ---- the edge deployment: hosts made of namespaces (tests/nethosts.py) -----------------------------------------------

@pytest.mark.multinode
@pytest.mark.slurm
@pytest.mark.ssh
def test_edge_harvester_guide(tmp_path, tmp_path_factory):
    """The guide runs on edge (its own network, which has 127.0.0.1:25080 free, and a view without the site's
    directory); its login node is login's sshd, whose sessions find the two-node Slurm, and the pilots run on the
    nodes, which have no route to edge. The site values at the top become the topology's; nothing else changes."""
    from edgehelp import EdgeSite
    from nethosts import LOGIN_EDGE_ADDRESS

    edge = EdgeSite(tmp_path_factory.mktemp("hosts"))  # short: slurmstepd's socket paths must fit in 108 bytes
    try:
        values = {"LOGIN_HOST": LOGIN_EDGE_ADDRESS, "LOGIN_PORT": "22", "LOGIN_USER": "root",
                  "SSH_KEY": edge.sshd.user_key, "SITE": os.path.join(edge.site.site_dir, "minipanda"),
                  "PARTITION": "debug"}
        script = guide_script("edge-harvester.md", variables=values)
        out, log = run_guide(tmp_path, script, prefix=edge.site.edge.argv([]), timeout=600)
        assert re.search(r"\bdone\b", out), log
        assert "in1.txt" in out and "line 1\nline 2" in out, log
        assert "pilot.token" not in out, log
        # the pilots' directories were on the site only; the edge host never saw them
        assert os.path.isdir(os.path.join(values["SITE"], "workers", "1")), log
        assert edge.site.edge.run(["ls", "-A", edge.site.site_dir]).stdout == ""
    finally:
        edge.slurm.run("scancel", "--user=root")
        edge.close()
