"""``harvester run`` (harvester/cli.py) against a live server: the harvester id it takes from its token; stop and
hang-up signals in bursts at any moment, stopping it every time."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import LiveServer, signal_burst
from harvesterhelp import QUEUE, Testbed, queue_config
from test_cli_service import HARVESTER, FakeSystemd


def test_a_harvester_acts_as_the_harvester_its_token_is_bound_to(tmp_path):
    """The server holds a harvester token to the harvester of its name, so harvester takes its id from the token
    (made as 'h1' by the testbed) instead of host name plus digest, and refuses at start an id the token cannot
    speak for."""
    bed = Testbed(tmp_path, {QUEUE: queue_config()})
    try:
        bed.once()
        assert [row["harvester_id"] for row in bed.v1("harvester/list_instances")] == ["h1"]
        proc = subprocess.run(bed.argv("--once", "--harvester-id", "h2"), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "speaks for harvester h1 only" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    finally:
        bed.close()


# ---- signals: the handlers only record; the main thread acts (queueconfig/signals.py) ---------------------------

@pytest.fixture
def server(tmp_path):
    live = LiveServer(tmp_path / "server", "sqlite:///" + str(tmp_path / "server" / "minipanda.db"))
    yield live
    live.stop()


def started_harvester(tmp_path, server, systemd, name):
    """``harvester run`` with its output in a log file, once it told systemd READY=1 (its handlers are in place)."""
    home = tmp_path / name
    home.mkdir()
    (home / "queues.yaml").write_text("queues:\n  LOCAL_PQ:\n    limits: {maxWorkers: 1}\n")
    log_path = home / "harvester.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(HARVESTER + ["run", "--home", str(home / "hv"), "--queues", str(home / "queues.yaml"),
                                             "--server", server.url, "--harvester-id", name],
                                env=dict(os.environ, NOTIFY_SOCKET=systemd.address), stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        assert systemd.message()["READY"] == "1"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, log_path


def test_bursts_of_stop_signals_at_random_moments_stop_harvester_every_time(tmp_path, server):
    """Two to four SIGTERMs (or SIGINTs), or SIGHUPs then SIGTERMs, milliseconds apart at a random moment of a
    running harvester: each run exits 0 with its 'stopped' line and tells systemd STOPPING=1, never hangs (a
    handler that set the runner's Events could deadlock on the lock its own thread held)."""
    systemd = FakeSystemd(tmp_path, abstract=True)
    try:
        for run in range(8):
            proc, log_path = started_harvester(tmp_path, server, systemd, f"h{run}")
            try:
                burst = signal_burst(proc, hangups=run % 3)
                assert proc.wait(90) == 0, (burst, log_path.read_text()[-3000:])
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert systemd.message() == {"STOPPING": "1"}
            text = log_path.read_text()
            assert f"harvester h{run} stopped" in text and "received SIG" in text, text[-3000:]
            assert "Traceback" not in text, text[-3000:]
    finally:
        systemd.close()


IN_THE_LOCK = """
import signal, sys
from harvester import cli
from harvester.runner import Runner

serve_forever = Runner.serve_forever


def signalled_inside_the_stop_events_lock(self, *args, **kwargs):
    # The moment the old handler deadlocked on: this thread inside the stop Event's lock (as in Event.wait's
    # re-acquire) when the signals arrive; raise_signal runs the Python handler before it returns.
    with self._stop._cond:
        for signum in sys.argv[1].split(","):
            signal.raise_signal(getattr(signal, signum))
    return serve_forever(self, *args, **kwargs)


Runner.serve_forever = signalled_inside_the_stop_events_lock
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("burst", ["SIGTERM", "SIGTERM,SIGTERM,SIGINT", "SIGHUP,SIGHUP,SIGTERM"])
def test_a_stop_signal_while_the_main_thread_holds_the_stop_lock_stops_harvester(tmp_path, burst):
    """The handler runs while the same thread holds the lock it would have taken (no server needed: the agents'
    failed cycles are logged and kept); a subprocess with a time limit, so a deadlock fails instead of hanging."""
    (tmp_path / "queues.yaml").write_text("queues:\n  LOCAL_PQ:\n    limits: {maxWorkers: 1}\n")
    argv = [sys.executable, "-c", IN_THE_LOCK, burst, "run", "--home", str(tmp_path / "hv"), "--queues",
            str(tmp_path / "queues.yaml"), "--server", "http://127.0.0.1:1", "--harvester-id", "locked"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"harvester deadlocked on {burst} inside the stop Event's lock: {str(exc.stderr)[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "received SIG" in proc.stderr and "harvester locked stopped" in proc.stderr, proc.stderr[-3000:]


def test_a_hangup_rereads_the_queue_file_at_once(tmp_path, server):
    """SIGHUP: the main thread re-reads the queue file (unchanged: forced) without waiting for its 10 s check."""
    systemd = FakeSystemd(tmp_path, abstract=True)
    proc, log_path = started_harvester(tmp_path, server, systemd, "hup")
    try:
        assert log_path.read_text().count("queues in force") == 1
        for _ in range(3):
            proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while log_path.read_text().count("queues in force") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log_path.read_text().count("queues in force") >= 2, log_path.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        systemd.close()
