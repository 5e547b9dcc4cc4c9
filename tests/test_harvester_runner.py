"""The runner's wake-ups and idle back-off: an agent whose cycles find work runs at its period, an idle one sleeps
twice as long each time up to ``idle_factor`` periods, each cycle is counted, and a wake-up ends the sleep at once
(one that comes during a cycle too). Then, with a real server, harvester and local pilots: a worker the adjuster
decides is submitted at once, long before the sleeping submitter would have run by itself.

The agents of the first tests are small Agent subclasses on the real runner and a real harvester database. The
waits compared are far apart (a tenth of a second against several seconds, seconds against a minute), so load on
the machine does not decide a result.
"""
import datetime
import glob
import sqlite3
import threading
import time
import zipfile

import pytest

from harvester import db, models
from harvester.agents.base import Agent
from harvester.context import Context, Settings
from harvester.runner import Runner, next_wait
from harvesterhelp import QUEUE, Testbed, queue_config


class Probe(Agent):
    """Counts its cycles; each reports ``work`` found. ``period`` overrides the setting."""

    name, period, work = "probe", 0.1, 0

    def __init__(self, context):
        super().__init__(context)
        self.cycles = []
        self.during = None  # called inside a cycle

    def run_once(self, now):
        self.cycles.append(time.monotonic())
        if self.during is not None:
            self.during()
        return self.work


class Busy(Probe):
    name, work = "busy", 1


class Idle(Probe):
    name = "idle"


class Sleepy(Probe):
    name, period = "sleepy", 30.0  # after its first cycle it sleeps 60 s unless woken


@pytest.fixture
def runner_for(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    runners = []

    def make(classes, idle_factor):
        context = Context(str(tmp_path), None, Settings(idle_factor=idle_factor), "h1", owner="test")
        runner = Runner(context, agent_classes=classes)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        assert runner.stop(timeout=10) == []
    db.close_database()


def runs(name):
    row = models.AgentRun.get_or_none(models.AgentRun.agent == name)
    return row.runs if row else 0


def test_the_pilot_zipapp_is_built_at_start_before_any_submission(runner_for, tmp_path):
    """The first worker's submission need not wait for the zipapp to be compiled: the runner's start builds it."""
    runner = runner_for((Idle,), idle_factor=4)
    assert glob.glob(str(tmp_path / "pilot" / "*.pyz")) == []
    runner.start()
    deadline = time.monotonic() + 120
    while not glob.glob(str(tmp_path / "pilot" / "*.pyz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    [built] = glob.glob(str(tmp_path / "pilot" / "*.pyz"))
    assert zipfile.is_zipfile(built) and "pilot/worker.py" in zipfile.ZipFile(built).namelist()


def test_next_wait_doubles_per_idle_cycle_up_to_the_idle_factor():
    assert [next_wait(0.5, n, 4) for n in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert [next_wait(10, n, 3) for n in range(3)] == [10, 20, 30]
    assert next_wait(10, 7, 1) == next_wait(10, 7, 0) == 10  # a factor of 1: never backed off
    assert next_wait(10, 10 ** 6, 4) == 40  # no overflow after a long idle time


def test_an_agent_with_work_keeps_its_period_and_an_idle_one_backs_off(runner_for):
    runner = runner_for((Busy, Idle), idle_factor=8)  # the idle one: 0.1, 0.2, 0.4, then 0.8 s
    runner.start()
    time.sleep(3.0)
    assert runner.stop(timeout=10) == []
    busy, idle = runner.agents["busy"].cycles, runner.agents["idle"].cycles
    assert len(busy) >= 15, busy  # ~30 at its period; backed off it would be ~6
    assert 3 <= len(idle) <= 10, idle  # ~6 backed off; ~30 at its period
    gaps = [b - a for a, b in zip(idle, idle[1:])]
    assert max(gaps) >= 0.6, gaps  # it did sleep up to 8 periods
    assert (runs("busy"), runs("idle")) == (len(busy), len(idle))  # every cycle counted


def test_a_wake_up_ends_a_long_idle_sleep_at_once(runner_for):
    runner = runner_for((Sleepy,), idle_factor=4)
    agent = runner.agents["sleepy"]
    runner.start()
    deadline = time.monotonic() + 10
    while len(agent.cycles) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # asleep now, for 60 s
    woken_at = time.monotonic()
    runner.wake("sleepy")
    while len(agent.cycles) < 2 and time.monotonic() < woken_at + 30:
        time.sleep(0.01)
    assert len(agent.cycles) == 2 and agent.cycles[1] - woken_at < 10, agent.cycles


def test_a_wake_up_during_a_cycle_is_not_lost(runner_for):
    runner = runner_for((Sleepy,), idle_factor=4)
    agent = runner.agents["sleepy"]
    first = threading.Event()

    def wake_once():  # work for it arrives while its first cycle runs
        if not first.is_set():
            first.set()
            runner.wake("sleepy")

    agent.during = wake_once
    runner.start()
    deadline = time.monotonic() + 30
    while len(agent.cycles) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(agent.cycles) == 2 and agent.cycles[1] - agent.cycles[0] < 10, agent.cycles


def utc(text):
    return datetime.datetime.fromisoformat(text)


def first_value(bed, sql):
    """The first column of the first row of ``sql`` on the harvester's database, or None (none yet, or the
    database not made yet)."""
    try:
        with bed.db() as conn:
            row = conn.execute(sql).fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def test_a_worker_the_adjuster_decides_is_submitted_before_the_idle_submitter_would_wake(tmp_path):
    """submitter_period 30: after its first (idle) cycle the submitter sleeps 60 s. The adjuster (0.5 s, idle up to
    2 s) sees the job, decides a worker and wakes it: submitted within seconds, not at the submitter's own next
    cycle a minute after its first."""
    bed = Testbed(tmp_path / "bed", {QUEUE: queue_config()})
    try:
        trf = bed.script("ok.sh", "#!/bin/sh\nexit 0\n")
        bed.start("submitter_period=30")
        first = bed.wait_for(lambda: first_value(bed, "SELECT last_start FROM agent_run WHERE agent = 'submitter'"),
                             "the submitter's first cycle", timeout=120, poll=0.1)
        time.sleep(1.0)  # the submitter sleeps now; the adjuster has backed off too (nothing to do yet)
        asked = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        bed.submit(1, transformation=trf)
        submitted = bed.wait_for(lambda: first_value(bed, "SELECT submit_time FROM worker WHERE batch_id IS NOT NULL "
                                                          "ORDER BY worker_id LIMIT 1"), "a worker submitted",
                                 timeout=150, poll=0.1)
        latency = (utc(submitted) - asked).total_seconds()
        assert latency < 20, f"submitted {latency:.1f} s after the job came (the submitter's own next cycle: 60 s " \
                             f"after {first})"
        assert (utc(submitted) - utc(first)).total_seconds() < 40
    finally:
        bed.close()
