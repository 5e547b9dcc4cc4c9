"""Periodic duties: run on schedule, never overlap, survive their own errors, can be woken early."""
import threading
import time

from minipanda.server.daemon import DutyRunner


def test_duty_runs_and_survives_errors(database):
    runner = DutyRunner()
    calls = []

    def flaky(now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("first run breaks")

    runner.add("flaky", 0.05, flaky)
    runner.start()
    deadline = time.time() + 10
    while len(calls) < 3 and time.time() < deadline:
        time.sleep(0.01)
    runner.stop()
    duty = runner.duties["flaky"]
    assert len(calls) >= 3 and duty.failures == 1 and "first run breaks" in duty.last_error


def test_wake_runs_early_and_never_overlaps(database):
    runner = DutyRunner()
    active, overlaps, runs = [0], [0], []
    lock = threading.Lock()

    def slow(now):
        with lock:
            active[0] += 1
            overlaps[0] = max(overlaps[0], active[0])
        time.sleep(0.02)
        runs.append(now)
        with lock:
            active[0] -= 1

    runner.add("slow", 3600, slow)
    runner.start()
    for _ in range(5):
        runner.wake("slow")
        time.sleep(0.01)
    deadline = time.time() + 10
    while not runs and time.time() < deadline:
        time.sleep(0.01)
    runner.stop()
    assert runs and overlaps[0] == 1


def test_bad_period_refused():
    import pytest

    with pytest.raises(ValueError, match="period must be positive"):
        DutyRunner().add("x", 0, lambda now: None)
