"""queueconfig/service.py: the settings file of ``serve`` and ``harvester run`` (every option a key, the same clear
errors as the queue file, the command line wins), and the systemd notify datagram."""
import os
import socket
import uuid

import pytest

from queueconfig import ConfigError
from queueconfig.service import Notifier, parse_with_settings_file, read_settings_file, subparser


def serve_parser():
    from minipanda.cli.commands import build_parser

    return build_parser()


def harvester_parser():
    from harvester.cli import parser

    return parser()


def write(tmp_path, text, name="serve.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_option_of_serve_is_a_key_and_the_command_line_wins(tmp_path):
    from minipanda.cli.commands import _check_setting

    path = write(tmp_path, "host: 127.0.0.2\nport: 26001\nmax_body_mb: 8\nauth: none\nthreads: 4\nqueues: q/queues.yaml\nhome: state\ndebug: true\n"
                 "tls-cert: /etc/ssl/c.pem\ntls-key: k.pem\nreload-period: 2.5\n"
                 "setting: {watchdog.sent_timeout: 600, period.settle: 30}\n")
    args = parse_with_settings_file(serve_parser(), ["serve", "--config", path, "--port", "27000",
                                                     "--setting", "period.settle=5"], ("serve",), _check_setting)
    assert (args.host, args.port, args.max_body_mb, args.auth, args.threads, args.debug) == \
        ("127.0.0.2", 27000, 8.0, "none", 4, True)
    # relative paths are taken from the file's directory; absolute ones stay
    assert args.queues == str(tmp_path / "q" / "queues.yaml") and args.home == str(tmp_path / "state")
    assert args.tls_cert == "/etc/ssl/c.pem" and args.tls_key == str(tmp_path / "k.pem")
    assert args.reload_period == 2.5
    # the file's settings first, the command line's after them: the last one of a key is in force
    assert args.setting == ["watchdog.sent_timeout=600", "period.settle=30", "period.settle=5"]


def test_errors_name_the_file_line_and_key_all_at_once(tmp_path):
    from minipanda.cli.commands import _check_setting

    path = write(tmp_path, "prot: 25080\nthreads: many\nauth: tokn\ndebug: 1\nqueues: [a, b]\n"
                           "setting: {watchdog.sent_timeot: 600, period.settle: soon}\nhost: yes\n")
    with pytest.raises(ConfigError) as raised:
        read_settings_file(path, subparser(serve_parser(), "serve"), _check_setting)
    errors = raised.value.errors
    assert [e.split(":")[1] for e in errors] == ["1", "2", "3", "4", "5", "6", "6", "7"], errors
    assert errors[0] == f"{path}:1: prot: unknown key; did you mean 'port'?"
    assert errors[1] == f"{path}:2: threads: expected a whole number, got text 'many'"
    assert "'tokn' is not allowed; expected one of token, none; did you mean 'token'?" in errors[2]
    assert errors[3] == f"{path}:4: debug: expected true or false, got integer 1"
    assert errors[4] == f"{path}:5: queues: expected a single value, got a list"
    assert "serve.yaml:6: setting.watchdog.sent_timeot: unknown setting; known settings: " in errors[5]
    assert errors[6].endswith("serve.yaml:6: setting.period.settle: expected a number, got 'soon'")
    assert "host: expected text, got boolean True (YAML reads yes/no" in errors[7]


def test_not_a_mapping_a_duplicate_key_and_a_missing_file(tmp_path):
    parser = subparser(serve_parser(), "serve")
    with pytest.raises(ConfigError, match=r"expected a mapping of option names to values, got a list"):
        read_settings_file(write(tmp_path, "- port\n"), parser)
    with pytest.raises(ConfigError, match=r"serve.yaml:2: key 'port' appears twice"):
        read_settings_file(write(tmp_path, "port: 1\nport: 2\n"), parser)
    with pytest.raises(ConfigError, match=r"nothere.yaml: cannot read the settings file: No such file"):
        read_settings_file(str(tmp_path / "nothere.yaml"), parser)
    with pytest.raises(ConfigError, match=r"config: unknown key"):  # a settings file names no other one
        read_settings_file(write(tmp_path, "config: other.yaml\n"), parser)
    with pytest.raises(ConfigError, match=r"serve.yaml:1: setting: expected a mapping of setting names"):
        read_settings_file(write(tmp_path, "setting: watchdog.sent_timeout=600\n"), parser)
    with pytest.raises(ConfigError, match=r"max-body-mb: the same option as an earlier key; keep one"):
        read_settings_file(write(tmp_path, "max_body_mb: 8\nmax-body-mb: 9\n"), parser)


def test_harvester_run_keys_and_its_settings_checked(tmp_path):
    from harvester.cli import _check_setting

    path = write(tmp_path, "queues: queues.yaml\nserver: http://127.0.0.1:26000\ntoken-file: h.token\n"
                           "harvester-id: edge1\nlog-level: DEBUG\nhome: ~/harvester\n"
                           "setting: {monitor_period: 5, backoff_max_s: 60}\n", "harvester.yaml")
    args = parse_with_settings_file(harvester_parser(), ["run", "--config", path], ("run",), _check_setting)
    assert args.queues == str(tmp_path / "queues.yaml") and args.token_file == str(tmp_path / "h.token")
    assert (args.server, args.harvester_id, args.log_level, args.home) == \
        ("http://127.0.0.1:26000", "edge1", "DEBUG", os.path.expanduser("~/harvester"))
    assert args.setting == ["monitor_period=5", "backoff_max_s=60"]
    bad = write(tmp_path, "setting: {monitor_periods: 5, lease_s: long}\n", "bad.yaml")
    with pytest.raises(ConfigError) as raised:
        read_settings_file(bad, subparser(harvester_parser(), "run"), _check_setting)
    assert "setting.monitor_periods: unknown setting; known settings: adjuster_period" in raised.value.errors[0]
    assert "setting.lease_s: expected a float, got 'long'" in raised.value.errors[1]


# ---- the notify socket --------------------------------------------------------------------------------------------

@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    yield sock, str(tmp_path / "notify")
    sock.close()


def test_notify_sends_one_datagram_to_a_path_socket(listener):
    sock, path = listener
    assert Notifier(path).send("READY=1", "STATUS=serving")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_to_an_abstract_socket():
    name = f"minipanda-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert Notifier("@" + name).send("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"


def test_notify_without_systemd_or_with_its_socket_gone_never_raises(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier.from_environment().send("READY=1") is False
    import logging

    gone = Notifier(str(tmp_path / "gone"), logging.getLogger("test"))
    assert gone.send("READY=1") is False and "cannot tell systemd READY=1" in caplog.text
    assert Notifier("vsock:2:1234", logging.getLogger("test")).send("READY=1") is False


def test_the_notify_socket_is_not_handed_down_to_child_processes(monkeypatch, listener):
    monkeypatch.setenv("NOTIFY_SOCKET", listener[1])
    notifier = Notifier.from_environment()
    assert "NOTIFY_SOCKET" not in os.environ and notifier.send("READY=1")
