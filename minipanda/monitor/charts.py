"""The monitor's pictures: time series read from the database, and their drawing as SVG geometry.

Three series, each also in the page's ``?json`` (under ``charts``):

- ``jobs``: jobs that reached ``finished`` and ``failed`` in each interval of the last hours (a final state never
  changes, so its ``state_changed_time`` is when the job got there), counted by the database in one GROUP BY;
- ``workers``: workers by state at the end of each interval, from the times harvester reported for each worker:
  ``submitted`` (in the batch system, not started), ``running`` (started, not ended); a worker in a final state
  without an end time ended when it was reported so;
- ``progress`` (a task's page): its jobs finished and failed so far at each point from the task's creation on,
  against the number of jobs its split plans.

The pages draw them as inline SVG from the geometry made here (rectangles, polylines, labels: numbers only, no
script and no inline style, so the Content-Security-Policy stays as it is); every bar carries its count
(``data-count``, and a ``<title>`` a browser shows on hover).
"""
import datetime

import peewee
from peewee import fn

from minipanda.core import models
from minipanda.core.db import database
from minipanda.workers.harvesters import FINAL_WORKER_STATES

HOURS, INTERVALS = 6, 24  # the last 6 hours in quarters of an hour
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 160, 40, 20, 8
PROGRESS_POINTS = 40


def stamp(when):
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _interval_index(column, start, seconds):
    """SQL: the interval (0, 1, ...) of ``column`` counted from ``start`` in steps of ``seconds``."""
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        elapsed = peewee.NodeList([peewee.SQL("EXTRACT(EPOCH FROM ("), column, peewee.SQL("-"), start,
                                   peewee.SQL("))")], glue="")
        return fn.FLOOR(elapsed / seconds)
    return peewee.Cast((fn.julianday(column) - fn.julianday(stamp(start))) * 86400 / seconds, "INTEGER")


def job_series(now, queue=None, hours=HOURS, intervals=INTERVALS):
    """{interval_s, times (each interval's start), finished, failed}: jobs that reached each state per interval."""
    step = hours * 3600 // intervals
    start = now - datetime.timedelta(seconds=step * intervals)
    Job = models.Job
    index = _interval_index(Job.state_changed_time, start, step)
    query = (Job.select(index, Job.status, fn.COUNT(Job.panda_id))
             .where(Job.status.in_(["finished", "failed"]), Job.state_changed_time >= start,
                    Job.state_changed_time < now)
             .group_by(index, Job.status))
    if queue:
        query = query.where(Job.computing_site == queue)
    counts = {"finished": [0] * intervals, "failed": [0] * intervals}
    for slot, status, n in query.tuples():
        slot = int(slot)
        if 0 <= slot < intervals:
            counts[status][slot] += n
    times = [stamp(start + datetime.timedelta(seconds=step * i)) for i in range(intervals)]
    return {"interval_s": step, "start": stamp(start), "end": stamp(now), "times": times, **counts}


def worker_series(now, queue=None, hours=HOURS, intervals=INTERVALS):
    """{interval_s, times (each interval's end), submitted, running}: live workers by state at each time."""
    step = hours * 3600 // intervals
    start = now - datetime.timedelta(seconds=step * intervals)
    Worker = models.Worker
    ended = fn.COALESCE(Worker.end_time, peewee.Case(None, [(Worker.status.in_(sorted(FINAL_WORKER_STATES)),
                                                              Worker.modification_time)], None))
    query = (Worker.select(Worker.submit_time, Worker.start_time, ended.alias("ended"))
             .where(Worker.status.is_null(False), Worker.submit_time.is_null(False), Worker.submit_time <= now,
                    (ended.is_null()) | (ended > start)))
    if queue:
        query = query.where(Worker.computing_site == queue)
    times = [start + datetime.timedelta(seconds=step * (i + 1)) for i in range(intervals)]
    submitted, running = [0] * intervals, [0] * intervals
    for submit, started, end in query.tuples():
        submit, started, end = _time(submit), _time(started), _time(end)
        for i, when in enumerate(times):
            if submit > when or (end is not None and end <= when):
                continue
            if started is not None and started <= when:
                running[i] += 1
            else:
                submitted[i] += 1
    return {"interval_s": step, "start": stamp(start), "end": stamp(now), "times": [stamp(t) for t in times],
            "submitted": submitted, "running": running}


def task_progress(task, planned, now):
    """{times, finished, failed, planned}: the task's jobs finished and failed so far at each of the points from its
    creation to now (or, once it has ended, to its last job's end), and the jobs its split plans."""
    Job = models.Job
    ends = sorted((_time(when), status) for when, status in (
        Job.select(Job.state_changed_time, Job.status)
        .where(Job.task_id == task.jedi_task_id, Job.status.in_(["finished", "failed"])).tuples()))
    first = _time(task.creation_time)
    last = max([first] + [when for when, _ in ends]) if task.status in ("done", "finished", "failed", "broken",
                                                                       "aborted") else now
    span = max((last - first).total_seconds(), 1.0)
    times = [first + datetime.timedelta(seconds=span * i / (PROGRESS_POINTS - 1)) for i in range(PROGRESS_POINTS)]
    finished, failed, seen = [], [], 0
    done = {"finished": 0, "failed": 0}
    for when in times:
        while seen < len(ends) and ends[seen][0] <= when:
            done[ends[seen][1]] += 1
            seen += 1
        finished.append(done["finished"])
        failed.append(done["failed"])
    return {"times": [stamp(t) for t in times], "finished": finished, "failed": failed, "planned": planned}


def _time(value):
    """A datetime column as a datetime (a computed column comes back as text on SQLite)."""
    if value is None or isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


# ---- drawing --------------------------------------------------------------------------------------------------

def _scale(top):
    """The y axis's upper bound: the first of 1, 2, 5, 10, 20, 50, ... at or above ``top``."""
    bound = 1
    while bound < top:
        bound = bound * 5 // 2 if str(bound)[0] == "2" else bound * 2
    return bound


def bars(series, keys, stacked=True, levels=False):
    """The geometry of a bar chart of ``series[key]`` per interval: {width, height, top, bars, ticks, legend,
    totals}; ``totals`` are the sums over the intervals, or for ``levels`` (workers at each time) the last values."""
    count = len(series["times"])
    totals = [sum(series[key][i] for key in keys) if stacked else max(series[key][i] for key in keys)
              for i in range(count)]
    top = _scale(max(totals + [1]))
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(count, 1)
    out = []
    for i in range(count):
        base = 0
        for k, key in enumerate(keys):
            n = series[key][i]
            if not n:
                continue
            height = plot_h * n / top
            if stacked:
                y = TOP + plot_h * (1 - (base + n) / top)
                x, width = LEFT + i * slot + 1, slot - 2
            else:
                y = TOP + plot_h - height
                width = (slot - 2) / len(keys)
                x = LEFT + i * slot + 1 + k * width
            out.append({"key": key, "count": n, "time": series["times"][i], "x": round(x, 1), "y": round(y, 1),
                        "width": round(max(width, 1), 1), "height": round(max(height, 1), 1)})
            base += n
    return {"width": WIDTH, "height": HEIGHT, "top": top, "bars": out, "ticks": _ticks(series["start"], series["end"]),
            "left": LEFT, "plot_top": TOP, "plot_bottom": HEIGHT - BOTTOM, "legend": list(keys),
            "totals": {key: series[key][-1] if levels else sum(series[key]) for key in keys}}


def lines(series, keys, ceiling):
    """The geometry of a line chart of cumulative ``series[key]`` against ``ceiling`` (the task's planned jobs)."""
    count = len(series["times"])
    top = _scale(max([ceiling or 0, 1] + [max(series[key] or [0]) for key in keys]))
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP

    def point(i, value):
        return f"{LEFT + plot_w * i / max(count - 1, 1):.1f},{TOP + plot_h * (1 - value / top):.1f}"

    drawn = [{"key": key, "last": series[key][-1] if series[key] else 0,
              "points": " ".join(point(i, v) for i, v in enumerate(series[key]))} for key in keys]
    ceiling_y = round(TOP + plot_h * (1 - (ceiling or 0) / top), 1)
    return {"width": WIDTH, "height": HEIGHT, "top": top, "lines": drawn,
            "ticks": _ticks(series["times"][0], series["times"][-1]),
            "left": LEFT, "plot_top": TOP, "plot_bottom": HEIGHT - BOTTOM, "ceiling": ceiling,
            "ceiling_y": ceiling_y, "legend": list(keys)}


def _ticks(first, last):
    """Time labels (HH:MM) at the start, the middle and the end of the x axis, from two 'YYYY-MM-DD hh:mm:ss'."""
    start, end = (datetime.datetime.fromisoformat(t) for t in (first, last))
    middle = start + (end - start) / 2
    return [{"x": LEFT, "anchor": "start", "label": first[11:16]},
            {"x": round(LEFT + (WIDTH - LEFT) / 2, 1), "anchor": "middle", "label": middle.strftime("%H:%M")},
            {"x": WIDTH, "anchor": "end", "label": last[11:16]}]


def activity(now, queue=None):
    """The dashboard's (or one queue's) two series: jobs finished and failed, workers by state."""
    return {"jobs": job_series(now, queue), "workers": worker_series(now, queue)}
