"""The metrics the shipped alerts (``docs/monitoring/alerts.yml``) need beyond the counts of :mod:`metrics`.

==============================================  =====================  =============================================
metric                                          labels                 what
==============================================  =====================  =============================================
minipanda_home_filesystem_size_bytes            (none)                 size of the file system holding the home
minipanda_home_filesystem_avail_bytes           (none)                 bytes free there for the server's user
minipanda_workers_ended_last_hour               queue, state           workers that ended (finished, failed,
                                                                       cancelled, missed) in the last hour
minipanda_harvester_queue_paused                harvester, queue       1 while harvester pauses the queue (its
                                                                       configuration is invalid)
minipanda_harvester_queue_backoff_seconds       harvester, queue       seconds of backoff left after failures
minipanda_harvester_queue_failures              harvester, queue       consecutive submission failures
minipanda_harvester_home_filesystem_size_bytes  harvester              size of the file system of harvester's home
minipanda_harvester_home_filesystem_avail_bytes harvester              bytes free there
==============================================  =====================  =============================================

Harvester's figures come from its latest heartbeat (every ``heartbeat_period``, 300 s by default), so they are as
old as ``minipanda_harvester_heartbeat_age_seconds`` says.
"""
import datetime
import json
import os

from peewee import fn
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from minipanda.core import models, states
from minipanda.core.db import database
from minipanda.workers.harvesters import FINAL_WORKER_STATES

ENDED_WINDOW = datetime.timedelta(hours=1)


class HealthCollector(Collector):
    """Read at scrape time: the home's disk, the workers that ended lately, harvester's queue states and disk."""

    def __init__(self, home):
        self.home = home

    def describe(self):
        return []

    def collect(self):
        database.connect(reuse_if_open=True)
        now = states.utcnow()
        yield from self._home()
        yield self._workers_ended(now)
        yield from self._harvesters()

    def _home(self):
        try:
            stat = os.statvfs(self.home)
        except OSError:
            return
        yield GaugeMetricFamily("minipanda_home_filesystem_size_bytes", "Size of the file system holding the "
                                "server's home (database, file store)", value=stat.f_blocks * stat.f_frsize)
        yield GaugeMetricFamily("minipanda_home_filesystem_avail_bytes", "Bytes free for the server's user on the "
                                "file system holding its home", value=stat.f_bavail * stat.f_frsize)

    @staticmethod
    def _workers_ended(now):
        Worker = models.Worker
        ended = GaugeMetricFamily("minipanda_workers_ended_last_hour", "Workers that ended in the last hour, by "
                                  "queue and final state (as harvester reported them)", labels=["queue", "state"])
        when = fn.COALESCE(Worker.end_time, Worker.modification_time)
        for queue, state, n in (Worker.select(Worker.computing_site, Worker.status, fn.COUNT(Worker.id))
                                .where(Worker.status.in_(sorted(FINAL_WORKER_STATES)), when >= now - ENDED_WINDOW)
                                .group_by(Worker.computing_site, Worker.status).tuples()):
            ended.add_metric([queue or "", state], n)
        return ended

    @staticmethod
    def _harvesters():
        labels = ["harvester", "queue"]
        paused = GaugeMetricFamily("minipanda_harvester_queue_paused", "1 while harvester pauses the queue: its "
                                   "configuration is invalid (from the heartbeat)", labels=labels)
        backoff = GaugeMetricFamily("minipanda_harvester_queue_backoff_seconds", "Seconds harvester still waits "
                                    "before submitting to the queue again after failures (from the heartbeat)",
                                    labels=labels)
        failures = GaugeMetricFamily("minipanda_harvester_queue_failures", "Consecutive failures of the queue's "
                                     "submissions in harvester (from the heartbeat)", labels=labels)
        size = GaugeMetricFamily("minipanda_harvester_home_filesystem_size_bytes", "Size of the file system "
                                 "holding harvester's home (from the heartbeat)", labels=["harvester"])
        avail = GaugeMetricFamily("minipanda_harvester_home_filesystem_avail_bytes", "Bytes free on the file "
                                  "system holding harvester's home (from the heartbeat)", labels=["harvester"])
        Instance = models.HarvesterInstance
        for harvester_id, text in (Instance.select(Instance.harvester_id, Instance.report)
                                   .where(Instance.report.is_null(False)).tuples()):
            report = json.loads(text)
            for queue, state in sorted(report.get("queues", {}).items()):
                paused.add_metric([harvester_id, queue], 1 if state.get("paused") else 0)
                backoff.add_metric([harvester_id, queue], state.get("backoff_s", 0))
                failures.add_metric([harvester_id, queue], state.get("failures", 0))
            home = report.get("home") or {}
            if home:
                size.add_metric([harvester_id], home.get("size_bytes", 0))
                avail.add_metric([harvester_id], home.get("avail_bytes", 0))
        yield from (paused, backoff, failures, size, avail)
