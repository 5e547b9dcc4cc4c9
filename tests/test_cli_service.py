"""Running as a service: ``minipanda service-unit`` units pass ``systemd-analyze verify``; ``serve`` and
``harvester run`` read one --config file and tell a (fake) systemd notify socket READY=1 and STOPPING=1;
``harvester run`` with no valid queue at start exits non-zero with the errors."""
import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
import requests

from conftest import IN_CI, LiveServer, debian_tool, free_port

MINIPANDA = [sys.executable, "-m", "minipanda"]
HARVESTER = [sys.executable, "-m", "harvester"]


def service_unit(*args):
    return subprocess.run(MINIPANDA + ["service-unit", *args], capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def running(argv, env, log_path):
    """A command started with its output in ``log_path``; killed if the test leaves it running."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("service", ["serve", "harvester"])
def test_the_units_pass_systemd_analyze_verify(tmp_path, service):
    analyze = debian_tool("systemd-analyze", "systemd")
    home = tmp_path / "home"
    home.mkdir()
    (home / f"{service}.yaml").write_text("{}\n")
    made = service_unit(service, "--home", str(home))
    assert made.returncode == 0 and made.stderr == "", made.stderr
    unit = made.stdout
    lines = unit.splitlines()
    command = os.path.join(os.path.dirname(sys.executable), "minipanda" if service == "serve" else "harvester")
    wanted = "serve" if service == "serve" else "run"
    assert f"ExecStart={command} {wanted} --home {home} --config {home}/{service}.yaml" in lines
    for line in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 f"ReadWritePaths={home}", f"User={getpass.getuser()}"):
        assert line in lines, (line, unit)
    assert ("KillMode=process" in lines) == (service == "harvester")  # harvester's restart leaves pilots running
    path = tmp_path / f"minipanda-{service}.service"
    path.write_text(unit)
    # verify works without systemd as PID 1 (as in a container): it checks the syntax, every key, the user and
    # that ExecStart is an executable file.
    checked = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "Unknown" not in checked.stderr, checked.stderr
    # ... and it does catch a broken unit: the check is not a formality
    path.write_text(unit.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes").replace(command, command + ".gone"))
    broken = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "not executable" in broken.stderr and "Unknown key" in broken.stderr


def test_service_unit_refuses_what_it_cannot_write(tmp_path):
    made = service_unit("serve", "--home", str(tmp_path / "my home"))
    assert made.returncode == 1 and "a path with spaces" in made.stderr and made.stdout == ""
    made = service_unit("serve", "--user", f"nobody-{uuid.uuid4().hex[:8]}")
    assert made.returncode == 1 and "no such user" in made.stderr
    made = service_unit("harvester", "--exec", "harvester")
    assert made.returncode == 1 and "absolute path" in made.stderr
    made = service_unit("serve", "--home", str(tmp_path / "new"))
    assert made.returncode == 0 and f"note: create {tmp_path}/new and {tmp_path}/new/serve.yaml" in made.stderr


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: a datagram socket (a file, or an abstract name)."""

    def __init__(self, tmp_path, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"minipanda-notify-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(tmp_path / "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(60)

    def message(self):
        return dict(line.split("=", 1) for line in self.sock.recv(4096).decode().splitlines())

    def close(self):
        self.sock.close()


def test_serve_reads_its_config_file_and_tells_systemd_ready_and_stopping(tmp_path):
    systemd = FakeSystemd(tmp_path)
    port = free_port()
    config = tmp_path / "etc" / "serve.yaml"
    config.parent.mkdir()
    config.write_text("port: 1\nhome: ../home\nauth: none\nthreads: 2\nsetting: {period.settle: 7}\n")
    env = dict(os.environ, NOTIFY_SOCKET=systemd.address)
    with running(MINIPANDA + ["serve", "--config", str(config), "--port", str(port)], env,
                 tmp_path / "serve.log") as proc:
        ready = systemd.message()
        assert ready == {"READY": "1", "STATUS": f"serving on http://127.0.0.1:{port}"}
        # ready means answering: no retry loop needed; the port from the command line beat the file's port 1
        reply = requests.get(f"http://127.0.0.1:{port}/api/v1/system/is_alive", timeout=10)
        assert reply.status_code == 200
        assert (tmp_path / "home" / "minipanda.db").exists()  # home from the file, relative to its directory
        proc.send_signal(signal.SIGTERM)
        assert systemd.message() == {"STOPPING": "1"}
        assert proc.wait(30) == 0
    systemd.close()
    text = (tmp_path / "serve.log").read_text()
    assert "auth none" in text and "2 threads" in text, text


def test_serve_with_a_bad_config_file_says_every_problem_and_starts_nothing(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("port: lots\nauht: none\n")
    proc = subprocess.run(MINIPANDA + ["serve", "--config", str(config), "--home", str(tmp_path / "home")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"{config}:1: port: expected a whole number, got text 'lots'",
                                        f"{config}:2: auht: unknown key; did you mean 'auth'?",
                                        f"2 error(s) in {config}"]
    assert not (tmp_path / "home").exists()


def test_a_repeatable_option_takes_a_list_in_the_config_file(tmp_path):
    from minipanda.cli import commands
    from queueconfig.service import parse_with_settings_file

    config = tmp_path / "serve.yaml"
    config.write_text("server-name: [panda.example.org, panda2.example.org]\nbody-timeout: 5\n")
    args = parse_with_settings_file(commands.build_parser(), ["serve", "--config", str(config)], ("serve",))
    assert (args.server_name, args.body_timeout) == (["panda.example.org", "panda2.example.org"], 5.0)
    config.write_text("server-name: panda.example.org\n")  # one name alone is a list of one
    args = parse_with_settings_file(commands.build_parser(), ["serve", "--config", str(config)], ("serve",))
    assert args.server_name == ["panda.example.org"]


@pytest.fixture
def server(tmp_path):
    live = LiveServer(tmp_path / "server", "sqlite:///" + str(tmp_path / "server" / "minipanda.db"))
    yield live
    live.stop()


def test_harvester_run_reads_its_config_file_and_tells_systemd_ready_and_stopping(tmp_path, server):
    systemd = FakeSystemd(tmp_path, abstract=True)
    # a harvester token speaks for the harvester of its name: the one the command line (not the file) names
    (tmp_path / "h.token").write_text(server.token("harvester", "from-the-command-line"))
    (tmp_path / "queues.yaml").write_text("queues:\n  LOCAL_PQ:\n    limits: {maxWorkers: 1}\n")
    config = tmp_path / "harvester.yaml"
    config.write_text(f"queues: queues.yaml\ntoken-file: h.token\nserver: {server.url}\nhome: hv\n"
                      "harvester-id: from-the-file\nsetting: {adjuster_period: 2}\n")
    env = dict(os.environ, NOTIFY_SOCKET=systemd.address)
    with running(HARVESTER + ["run", "--config", str(config), "--harvester-id", "from-the-command-line"], env,
                 tmp_path / "harvester.log") as proc:
        assert systemd.message() == {"READY": "1", "STATUS": f"1 queues, server {server.url}"}
        proc.send_signal(signal.SIGTERM)
        assert systemd.message() == {"STOPPING": "1"}
        assert proc.wait(60) == 0
    systemd.close()
    text = (tmp_path / "harvester.log").read_text()
    assert "harvester from-the-command-line" in text and f"home {tmp_path}/hv" in text, text


def test_harvester_run_without_one_valid_queue_exits_with_the_errors(tmp_path):
    queues = tmp_path / "queues.yaml"
    queues.write_text("queues:\n  A:\n    batch: {system: slurmm}\n  B:\n    limits: {maxWorkers: -1}\n")
    proc = subprocess.run(HARVESTER + ["run", "--queues", str(queues), "--home", str(tmp_path / "hv"),
                                       "--server", "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no valid queue in it (2 errors)" in proc.stderr
    assert f"{queues}:3: queue A: batch.system" in proc.stderr and f"{queues}:5: queue B: limits" in proc.stderr
    assert not (tmp_path / "hv" / "harvester.db").exists()  # stopped before anything was written
    proc = subprocess.run(HARVESTER + ["run", "--home", str(tmp_path / "hv")], capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k != "HARVESTER_QUEUES"})
    assert proc.returncode == 2 and "no queue file: give --queues FILE" in proc.stderr


@pytest.mark.postgres
def test_serve_with_worker_processes_is_ready_once_and_stops_once(tmp_path):
    """--workers N (PostgreSQL): the parent, which systemd watches (NotifyAccess=main), says READY=1 when its
    workers serve the port, and STOPPING=1 once on SIGTERM; the workers say nothing."""
    from conftest import PG_URL, reset_postgres

    if not PG_URL:
        if IN_CI:
            pytest.fail("CI must set MINIPANDA_TEST_PG_URL (see .ci/run)")
        pytest.skip("needs PostgreSQL: MINIPANDA_TEST_PG_URL")
    reset_postgres(PG_URL)
    systemd = FakeSystemd(tmp_path)
    port = free_port()
    env = dict(os.environ, NOTIFY_SOCKET=systemd.address)
    argv = MINIPANDA + ["serve", "--home", str(tmp_path / "home"), "--db", PG_URL, "--port", str(port),
                        "--workers", "2", "--threads", "2"]
    with running(argv, env, tmp_path / "serve.log") as proc:
        assert systemd.message() == {"READY": "1", "STATUS": f"2 worker processes on 127.0.0.1:{port}"}
        reply = requests.get(f"http://127.0.0.1:{port}/api/v1/system/is_alive", timeout=30)
        assert reply.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert systemd.message() == {"STOPPING": "1"}
        assert proc.wait(60) == 0
        systemd.sock.settimeout(1)
        with pytest.raises(socket.timeout):  # nothing more: not a READY or STOPPING from each worker
            systemd.sock.recv(4096)
    systemd.close()
