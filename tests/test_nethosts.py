"""The multi-host topology of tests/nethosts.py is what it claims: who reaches whom, who sees which files, two real
Slurm nodes, and nothing left behind."""
import os
import socket
import subprocess
import sys

import pytest

from nethosts import EDGE_ADDRESS, LOGIN_EDGE_ADDRESS, LoginSshd, Site, TwoNodeSlurm, wait_for

pytestmark = [pytest.mark.multinode, pytest.mark.slurm, pytest.mark.ssh]

LISTEN = ("import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(); print('listening', flush=True); "
          "[s.accept()[0].close() for _ in iter(int, 1)]")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with Site(tmp_path_factory.mktemp("hosts")) as made:
        slurm = TwoNodeSlurm(made).start()
        sshd = LoginSshd(made, {"SLURM_CONF": slurm.conf}).start()
        yield made, slurm, sshd


def test_a_node_cannot_reach_the_edge_but_login_can(site):
    hosts, _, _ = site
    listener = hosts.edge.daemon("listener", [sys.executable, "-c", LISTEN, "25080"],
                                 os.path.join(hosts.edge_dir, "listener.log"))
    hosts.start(listener)
    wait_for(lambda: "listening" in listener.log(), "the listener on edge")
    assert hosts.login.can_connect(EDGE_ADDRESS, 25080) is None  # the control: it is there
    for node in hosts.nodes:
        reason = node.can_connect(EDGE_ADDRESS, 25080)
        assert reason is not None and "unreachable" in reason.lower(), reason
        assert node.can_connect(LOGIN_EDGE_ADDRESS, 22) is not None  # login's edge side is not on their link
    # as a real process on the node, too (not only a thread of this test)
    probe = hosts.nodes[0].run([sys.executable, "-c", f"import socket; socket.create_connection(('{EDGE_ADDRESS}', "
                                                       "25080), 3)"])
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower(), probe.stderr
    # and this machine's own network is no way out either: 127.0.0.1 on a node is the node's own loopback
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        assert hosts.nodes[0].can_connect("127.0.0.1", mine.getsockname()[1]) is not None
    listener.stop()


def test_who_sees_which_files(site):
    hosts, _, _ = site
    shared = os.path.join(hosts.site_dir, "shared.txt")
    with open(shared, "w") as handle:
        handle.write("site data")
    secret = os.path.join(hosts.edge_dir, "edge.txt")
    with open(secret, "w") as handle:
        handle.write("edge data")
    for host in (hosts.login, *hosts.nodes):
        assert host.run(["cat", shared]).stdout == "site data"
        assert host.run(["cat", secret]).returncode != 0
    assert hosts.edge.run(["cat", secret]).stdout == "edge data"
    assert hosts.edge.run(["cat", shared]).returncode != 0
    refused = hosts.edge.run(["touch", os.path.join(hosts.site_dir, "x")])
    assert refused.returncode != 0 and "Read-only" in refused.stderr  # a local write there fails, loudly
    written = hosts.nodes[1].run(["sh", "-c", f"echo from-node2 > {hosts.site_dir}/n2.txt"])
    assert written.returncode == 0 and hosts.login.run(["cat", f"{hosts.site_dir}/n2.txt"]).stdout == "from-node2\n"
    names = {host.name: host.run(["hostname"]).stdout.strip() for host in hosts.hosts}
    assert names == {"edge": "edge", "login": "login", "node1": "node1", "node2": "node2"}


def test_two_slurm_nodes_and_login_over_ssh_from_edge(site):
    hosts, slurm, sshd = site
    out = slurm.run("sbatch", "--parsable", "-N", "2", "--chdir", hosts.site_dir, "-o", "two.out", "--wrap",
                    "srun -N 2 hostname")
    assert out.returncode == 0, out.stderr + slurm.logs()
    two = os.path.join(hosts.site_dir, "two.out")
    wait_for(lambda: os.path.exists(two) and len(open(two).read().split()) == 2, "the two-node job", 90)
    assert sorted(open(two).read().split()) == ["node1", "node2"]
    # edge reaches login's sshd (and through it, Slurm), with the host key checked
    ssh = hosts.edge.run(["ssh", "-i", sshd.user_key, "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                          "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{LOGIN_EDGE_ADDRESS}",
                          "hostname; sinfo -h -N -o %N"])
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.split() == ["login", "node1", "node2"]


def test_the_edge_link_can_be_cut_and_mended(site):
    hosts, _, sshd = site
    hosts.cut_edge_link()
    try:
        assert hosts.edge.can_connect(LOGIN_EDGE_ADDRESS, 22, timeout=2) is not None
    finally:
        hosts.mend_edge_link()
    wait_for(lambda: hosts.edge.can_connect(LOGIN_EDGE_ADDRESS, 22, timeout=2) is None, "the link back")


def test_close_deletes_only_its_namespaces_and_stops_its_daemons(tmp_path):
    other = Site(tmp_path / "other").up()
    try:
        mine = Site(tmp_path / "mine").up()
        daemon = mine.start(mine.login.daemon("sleeper", ["sleep", "600"], str(tmp_path / "sleeper.log")))
        pid = daemon.proc.pid
        mine.close()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert mine.tag not in listed and other.tag in listed
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        other.close()
    assert other.tag not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
