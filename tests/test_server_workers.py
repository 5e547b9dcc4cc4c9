"""``minipanda serve --workers N`` (minipanda/server/prefork.py) and the duties' leader lock
(minipanda/server/daemon.py LeaderLock): on PostgreSQL N processes serve one port and the duties run in one
process only, across processes and hosts; on SQLite more than one worker is refused."""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from conftest import IN_CI, PG_URL, ProcessServer, free_port, reset_postgres, signal_burst, eventually as wait_for

LEADS = "this process leads the duties"


@pytest.fixture
def pg_url():
    if not PG_URL:
        if IN_CI:
            pytest.fail("CI must set MINIPANDA_TEST_PG_URL (see .ci/run)")
        pytest.skip("needs PostgreSQL: set MINIPANDA_TEST_PG_URL")
    reset_postgres(PG_URL)
    return PG_URL


class WorkersServer(ProcessServer):
    def __init__(self, home, db_url, workers):
        self.workers = workers
        super().__init__(home, db_url, threads=4)

    def argv(self):
        return super().argv() + ["--workers", str(self.workers), "--leader-retry", "0.3"]


def test_more_than_one_worker_on_sqlite_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minipanda", "serve", "--home", str(tmp_path / "home"), "--port",
                           str(free_port()), "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "needs a PostgreSQL database" in proc.stderr
    assert not os.path.exists(tmp_path / "home" / "minipanda.db")


@pytest.mark.postgres
def test_leader_lock_is_held_by_one_holder_and_taken_over(pg_url):
    from minipanda.server.daemon import LeaderLock

    first, second = LeaderLock(pg_url, retry=0), LeaderLock(pg_url, retry=0)
    try:
        assert first.held() and not second.held() and first.held()
        first.close()
        assert second.held() and not first.held()
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_leader_lock_is_released_before_its_connection_is_gone(pg_url):
    """A closed connection's backend releases the lock only once it has exited: close() unlocks first, so another
    process takes the lead at once (here the connection is kept open, as a backend still exiting would be)."""
    from minipanda.server.daemon import LeaderLock

    first, second = LeaderLock(pg_url, retry=0), LeaderLock(pg_url, retry=0)
    kept = []
    try:
        assert first.held()
        kept.append(first._conn)
        first._drop = lambda: setattr(first, "_conn", None)  # the connection stays open, out of first's hands
        first.close()
        assert second.held()
    finally:
        for conn in kept:
            conn.close()
        second.close()


@pytest.mark.postgres
def test_n_workers_serve_one_port_and_one_of_them_and_one_host_leads(tmp_path, pg_url):
    server = WorkersServer(tmp_path / "a", pg_url, workers=3)
    other = None
    try:
        assert wait_for(lambda: server.read_log().count("minipanda serving on") == 3), server.read_log()
        for _ in range(20):
            assert requests.get(server.url + "/api/v1/system/is_alive", timeout=10).status_code == 200
        assert wait_for(lambda: LEADS in server.read_log())
        other = WorkersServer(tmp_path / "b", pg_url, workers=2)  # a second host on the same database
        time.sleep(2)
        assert server.read_log().count(LEADS) == 1 and LEADS not in other.read_log()
        server.stop()
        assert "minipanda stopped (all worker processes)" in server.read_log()
        assert wait_for(lambda: LEADS in other.read_log()), other.read_log()  # the duties move to the other host
        assert other.read_log().count(LEADS) == 1
    finally:
        server.stop()
        if other is not None:
            other.stop()


def test_bursts_of_stop_signals_stop_the_parent_and_every_worker(tmp_path, pg_url):
    """The parent's handlers only record (queueconfig/signals.py): SIGHUPs then SIGTERM/SIGINT bursts at a random
    moment stop every worker and the parent with 0, every time."""
    for run in range(3):
        server = WorkersServer(tmp_path / f"h{run}", pg_url, workers=2)
        try:
            assert wait_for(lambda: server.read_log().count("minipanda serving on") == 2), server.read_log()
            burst = signal_burst(server.proc, hangups=run % 3)
            assert server.proc.wait(60) == 0, (burst, server.read_log()[-3000:])
        finally:
            server.stop()
        text = server.read_log()
        assert text.count("minipanda stopped\n") == 2 and "minipanda stopped (all worker processes)" in text, text
        assert "Traceback" not in text, text[-3000:]


def test_a_worker_that_dies_stops_the_others_and_the_parent_exits_1(tmp_path, pg_url):
    server = WorkersServer(tmp_path / "a", pg_url, workers=2)
    try:
        assert wait_for(lambda: server.read_log().count("minipanda serving on") == 2), server.read_log()
        pids = [int(pid) for pid in server.read_log().split("worker processes on ")[1].split("pids ")[1].split()[:2]]
        os.kill(pids[0], signal.SIGKILL)
        assert server.proc.wait(60) == 1, server.read_log()[-3000:]
    finally:
        server.stop()
    text = server.read_log()
    assert f"worker process {pids[0]} exited on its own" in text and "minipanda stopped (all worker processes)" in \
        text, text[-3000:]
    with pytest.raises(ProcessLookupError):  # the other worker was stopped and reaped, not left running
        os.kill(pids[1], 0)
