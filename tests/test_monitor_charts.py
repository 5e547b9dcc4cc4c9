"""minipanda/monitor/charts.py: the series (counted by the database, per interval, on SQLite and PostgreSQL) and
their SVG geometry. The pages drawing them in a browser: tests/test_monitor_browser.py."""
import datetime

import pytest

from minipanda.core import models
from minipanda.monitor import charts

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0)


def minutes_ago(n):
    return NOW - datetime.timedelta(minutes=n)


def job(status, changed, queue="QA", task=None):
    return models.Job.create(status=status, computing_site=queue, creation_time=changed - datetime.timedelta(hours=1),
                             modification_time=changed, state_changed_time=changed, task_id=task)


def worker(worker_id, status, submit=None, start=None, end=None, queue="QA", modified=None):
    return models.Worker.create(harvester_id="h1", worker_id=worker_id, computing_site=queue, status=status,
                                submit_time=submit, start_time=start, end_time=end,
                                modification_time=modified or NOW)


def test_jobs_finished_and_failed_per_interval(database):
    for ago in (1, 14, 16):  # 16 min ago is in the interval before the last (15 min each)
        job("finished", minutes_ago(ago))
    job("failed", minutes_ago(20))
    job("failed", minutes_ago(20), queue="QB")
    job("finished", minutes_ago(359))  # the first interval
    job("finished", minutes_ago(361))  # before the window
    job("running", minutes_ago(5))  # not a final state
    series = charts.job_series(NOW)
    assert series["interval_s"] == 900 and len(series["times"]) == 24
    assert series["times"][0] == "2026-12-01 06:00:00" and series["times"][-1] == "2026-12-01 11:45:00"
    assert series["finished"][-1] == 2 and series["finished"][-2] == 1 and series["finished"][0] == 1
    assert sum(series["finished"]) == 4 and series["failed"][-2] == 2 and sum(series["failed"]) == 2
    one = charts.job_series(NOW, queue="QB")
    assert sum(one["finished"]) == 0 and one["failed"][-2] == 1


def test_workers_by_state_at_each_time(database):
    worker(1, "running", submit=minutes_ago(100), start=minutes_ago(50))
    worker(2, "submitted", submit=minutes_ago(10))
    worker(3, "finished", submit=minutes_ago(300), start=minutes_ago(290), end=minutes_ago(200))
    worker(4, "failed", submit=minutes_ago(40), modified=minutes_ago(20))  # no end time: ended when reported
    worker(5, "running", submit=minutes_ago(30), start=minutes_ago(29), queue="QB")
    worker(6, "finished", submit=minutes_ago(700), start=minutes_ago(690), end=minutes_ago(600))  # before
    series = charts.worker_series(NOW)
    at = dict(zip(series["times"], zip(series["submitted"], series["running"])))
    assert at["2026-12-01 12:00:00"] == (1, 2)  # now: 2 waits for its start; 1 and 5 run; 4 ended at 11:40
    assert at["2026-12-01 11:30:00"] == (2, 1)  # 4 and 5 (submitted at 11:30) wait, 1 runs
    assert at["2026-12-01 08:30:00"] == (0, 1)  # 3 ran from 07:10 to 08:40
    assert at["2026-12-01 08:45:00"] == (0, 0)
    assert at["2026-12-01 06:15:00"] == (0, 0)
    assert charts.worker_series(NOW, queue="QB")["running"][-1] == 1


def test_a_tasks_progress_from_its_start(database):
    task = models.Task.create(task_name="t", user_name="u", status="running", params="{}", spec="{}",
                              creation_time=minutes_ago(100), modification_time=NOW, state_changed_time=NOW)
    for ago, status in ((90, "finished"), (80, "failed"), (50, "finished"), (10, "finished")):
        job(status, minutes_ago(ago), task=task.jedi_task_id)
    job("running", minutes_ago(5), task=task.jedi_task_id)
    progress = charts.task_progress(task, 5, NOW)
    assert progress["times"][0] == "2026-12-01 10:20:00" and progress["times"][-1] == "2026-12-01 12:00:00"
    assert progress["finished"][-1] == 3 and progress["failed"][-1] == 1 and progress["planned"] == 5
    assert progress["finished"] == sorted(progress["finished"]) and progress["finished"][0] == 0


@pytest.mark.parametrize("top,bound", [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (21, 50), (99, 100)])
def test_the_y_axis_ends_at_a_round_number(top, bound):
    assert charts._scale(top) == bound


def test_bar_geometry_stacks_within_the_plot_and_keeps_each_count():
    series = {"times": ["2026-12-01 11:00:00", "2026-12-01 11:15:00", "2026-12-01 11:30:00"], "interval_s": 900,
              "start": "2026-12-01 11:00:00", "end": "2026-12-01 11:45:00",
              "finished": [3, 0, 10], "failed": [1, 0, 0]}
    drawn = charts.bars(series, ["finished", "failed"])
    assert drawn["top"] == 10 and drawn["totals"] == {"finished": 13, "failed": 1}
    assert [(b["key"], b["count"]) for b in drawn["bars"]] == [("finished", 3), ("failed", 1), ("finished", 10)]
    tallest = drawn["bars"][-1]
    assert tallest["y"] == drawn["plot_top"] and tallest["y"] + tallest["height"] == drawn["plot_bottom"]
    first, on_top = drawn["bars"][:2]
    assert on_top["y"] + on_top["height"] == pytest.approx(first["y"])  # stacked: failed sits on finished
