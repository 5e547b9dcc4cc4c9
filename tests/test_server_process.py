"""``minipanda serve`` (minipanda/server/process.py): a server that cannot start changes nothing. It holds its
SQLite database's lock and its port before it touches the database, so a second server started by mistake, on
the same database or the same port, exits with a clear message and the running one's queues stay as they are.
Stop signals in bursts at any moment stop it every time."""
import os
import subprocess
import signal
import sys

import pytest
import requests
from conftest import ProcessServer, signal_burst


class QueueServer(ProcessServer):
    def __init__(self, home, queues_file):
        self.queues_file = str(queues_file)
        super().__init__(home, "sqlite:///" + os.path.join(str(home), "minipanda.db"))

    def argv(self):
        return super().argv() + ["--queues", self.queues_file]


def serve(home, port, queues_file):
    return subprocess.run([sys.executable, "-m", "minipanda", "serve", "--home", str(home), "--port", str(port),
                           "--queues", str(queues_file)], capture_output=True, text=True, timeout=60)


def queue_states(server):
    queues = requests.get(server.url + "/api/v1/queues", timeout=10).json()["data"]
    return {q["name"]: q["status"] for q in queues}


def test_a_second_server_on_the_same_database_refuses_and_leaves_the_first_ones_queues(tmp_path):
    (tmp_path / "q.yaml").write_text("queues:\n  TEST_PQ: {}\n")
    (tmp_path / "other.yaml").write_text("queues:\n  OTHER_PQ: {}\n")
    server = QueueServer(tmp_path / "home", tmp_path / "q.yaml")
    try:
        for port in (server.port, 1):  # the same port as the running server, and one it could not bind anyway
            proc = serve(server.home, port, tmp_path / "other.yaml")
            assert proc.returncode == 1
            assert "is in use by a running minipanda server" in proc.stderr and f"pid {server.proc.pid}" in \
                proc.stderr
        assert queue_states(server) == {"TEST_PQ": "online"}
    finally:
        server.stop()


def test_a_server_whose_port_is_taken_exits_before_creating_its_database(tmp_path):
    (tmp_path / "q.yaml").write_text("queues:\n  TEST_PQ: {}\n")
    server = QueueServer(tmp_path / "home", tmp_path / "q.yaml")
    try:
        proc = serve(tmp_path / "second", server.port, tmp_path / "q.yaml")
        assert proc.returncode == 1 and "cannot listen on" in proc.stderr
        assert not os.path.exists(tmp_path / "second" / "minipanda.db")
        assert queue_states(server) == {"TEST_PQ": "online"}
    finally:
        server.stop()


def test_the_lock_is_released_when_the_server_stops(tmp_path):
    (tmp_path / "q.yaml").write_text("queues:\n  TEST_PQ: {}\n")
    first = QueueServer(tmp_path / "home", tmp_path / "q.yaml")
    first.stop()
    second = QueueServer(tmp_path / "home", tmp_path / "q.yaml")
    try:
        assert queue_states(second) == {"TEST_PQ": "online"}
    finally:
        second.stop()


FREEZE_PROBE = """
import gc, sys, threading
from minipanda.server import process

def ready(server):
    print("frozen", gc.get_freeze_count(), flush=True)
    server.request_stop()

def serve():
    process.serve(sys.argv[1], host="127.0.0.1", port=0, ready=ready)

if sys.argv[2] == "thread":  # as the testbed runs it: on a thread of a bigger process
    thread = threading.Thread(target=serve)
    thread.start()
    thread.join()
else:
    serve()
"""


def test_a_server_process_leaves_its_start_up_objects_out_of_later_collections(tmp_path):
    """``serve`` as a process of its own freezes what it holds once started (gc.freeze), so the full collections
    that a 5,000-job submission sets off no longer walk the modules and the app; serve on a thread of another
    process (the testbed) leaves that process's collector alone."""
    def frozen(how):
        proc = subprocess.run([sys.executable, "-c", FREEZE_PROBE, str(tmp_path / how), how], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split("frozen", 1)[1].split()[0])

    assert frozen("main") > 20000  # the server's modules' objects: ~53,000 when this was written
    assert frozen("thread") == 0


# ---- signals: the handlers only record; the serving thread acts (queueconfig/signals.py) ------------------------

def test_bursts_of_stop_signals_at_random_moments_stop_the_server_every_time(tmp_path):
    """Two to four SIGTERMs (or SIGINTs), or SIGHUPs then SIGTERMs, milliseconds apart at a random moment of a
    serving server: each run exits 0 with its 'minipanda stopped' line, never hangs."""
    (tmp_path / "q.yaml").write_text("queues:\n  TEST_PQ: {}\n")
    for run in range(6):
        server = QueueServer(tmp_path / f"home{run}", tmp_path / "q.yaml")
        try:
            burst = signal_burst(server.proc, hangups=run % 3)
            assert server.proc.wait(60) == 0, (burst, server.read_log()[-3000:])
        finally:
            server.stop()
        text = server.read_log()
        assert "received SIG" in text and "minipanda stopped" in text and "Traceback" not in text, text[-3000:]


IN_THE_LOCK = """
import logging, signal, sys
from minipanda.server import process

logging.basicConfig(level=logging.INFO)


def ready(server):
    # The moment the old handler deadlocked on: this thread (the serving loop's) inside the stop Event's lock, as
    # in Event.wait's re-acquire, when the signals arrive; raise_signal runs the Python handler before returning.
    with server.stop_requested._cond:
        for signum in sys.argv[2].split(","):
            signal.raise_signal(getattr(signal, signum))


process.serve(sys.argv[1], host="127.0.0.1", port=0, ready=ready, queues_file=sys.argv[3])
"""


@pytest.mark.parametrize("burst", ["SIGTERM", "SIGINT,SIGTERM,SIGTERM", "SIGHUP,SIGHUP,SIGTERM"])
def test_a_stop_signal_while_the_serving_thread_holds_the_stop_lock_stops_the_server(tmp_path, burst):
    """In a subprocess with a time limit, so a deadlock fails instead of hanging."""
    (tmp_path / "q.yaml").write_text("queues:\n  TEST_PQ: {}\n")
    try:
        proc = subprocess.run([sys.executable, "-c", IN_THE_LOCK, str(tmp_path / "home"), burst,
                               str(tmp_path / "q.yaml")], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the server deadlocked on {burst} inside the stop Event's lock: {str(exc.stderr)[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "received SIG" in proc.stderr and "minipanda stopped" in proc.stderr, proc.stderr[-3000:]


def test_a_crash_in_native_code_leaves_every_threads_python_stack_in_the_log(tmp_path):
    """faulthandler is on in ``minipanda serve``: a SIGSEGV (what a crash in the HTTP server's or a driver's native
    code raises) writes the Python stack of each thread to the server's log before the process dies of it."""
    server = ProcessServer(tmp_path / "home", "sqlite:///" + str(tmp_path / "db.sqlite"))
    try:
        os.kill(server.proc.pid, signal.SIGSEGV)
        assert server.proc.wait(30) == -signal.SIGSEGV
    finally:
        server.stop()
    log = server.read_log()
    assert "Fatal Python error: Segmentation fault" in log
    assert "Current thread" in log and 'File "' in log and "serve" in log
