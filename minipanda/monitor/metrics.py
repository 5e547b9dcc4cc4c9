"""Prometheus metrics (``/metrics``): one CollectorRegistry per server app, never prometheus_client's global one.

Database counts are read when Prometheus scrapes (:class:`DatabaseCollector`: a handful of GROUP BY queries),
never on each request. The one metric observed on the request path is the dispatch latency: the time a job
request spends claiming jobs, measured around ``dispatch.claim_jobs`` (one ``perf_counter`` pair and one
histogram observation).

==============================================  =====================  =============================================
metric                                          labels                 what
==============================================  =====================  =============================================
minipanda_jobs                                  queue, state           jobs in the job table (every attempt)
minipanda_tasks                                 state                  tasks in the task table
minipanda_job_heartbeat_age_seconds             queue                  oldest pilot heartbeat of the queue's active
                                                                       jobs (sent ... transferring)
minipanda_active_jobs_without_heartbeat         queue                  active jobs that never had a heartbeat
minipanda_workers                               queue, state           workers as harvester reported them
minipanda_allocation_charged_node_seconds_total queue                  node-seconds the scheduler charged for the
                                                                       queue's ended workers (nodes x elapsed)
minipanda_allocation_payload_wall_seconds_total queue                  wall seconds their pilots' payloads ran
minipanda_allocation_payload_cpu_seconds_total  queue                  CPU seconds of those payloads
minipanda_allocation_pilot_idle_seconds_total   queue, kind (wait,     pilot-slot seconds without a payload: a pilot
                                                drain)                 up and waiting, or no pilot (drain)
minipanda_harvester_worker_statistics           harvester, queue,      harvester's latest worker counts
                                                job_type,
                                                resource_type, state
minipanda_harvester_heartbeat_age_seconds       harvester              seconds since the harvester's heartbeat
minipanda_harvester_info                        harvester, host,       1 per harvester instance
                                                version
minipanda_harvester_agent_cycles_total          harvester, agent       cycles of each harvester agent (heartbeat)
minipanda_harvester_agent_errors_total          harvester, agent       failed cycles of each agent (heartbeat)
minipanda_harvester_agent_last_cycle_seconds    harvester, agent       duration of each agent's last cycle
minipanda_retention_total                       kind                   what the retention duty did, since the database
                                                                       was made: jobs_archived, tasks_archived,
                                                                       archived_jobs_expired, archived_tasks_expired,
                                                                       archive_files_expired, log, output, sandbox
minipanda_retention_bytes_total                 kind                   bytes of the files it deleted (log, output,
                                                                       sandbox)
minipanda_retention_last_run_timestamp_seconds  (none)                 when the retention duty last ran
minipanda_dispatch_seconds                      outcome (jobs, none)   histogram: time to claim jobs for a request
minipanda_scrape_database_seconds               (none)                 time the scrape's queries took
==============================================  =====================  =============================================

The home's disk, the workers that ended in the last hour, and harvester's paused and backed-off queues and its
home's disk: :mod:`minipanda.monitor.health`, for the shipped alerts (docs/monitoring/).
"""
import datetime
import json
import time

from peewee import fn
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from minipanda.core import counts as live_counts, models, states
from minipanda.core.db import database
from minipanda.monitor import queries
from minipanda.monitor.health import HealthCollector

# Observed in the dispatch path: registered in every app's registry, never in the global one.
DISPATCH_SECONDS = Histogram(
    "minipanda_dispatch_seconds", "Time a job request spent claiming jobs (getJob, pilot/acquire_jobs)",
    ["outcome"], registry=None,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
_WITH_JOBS = DISPATCH_SECONDS.labels("jobs")
_NO_JOBS = DISPATCH_SECONDS.labels("none")


def observe_dispatch(seconds, got_jobs):
    """Record one claim's duration (called by the dispatch handler)."""
    (_WITH_JOBS if got_jobs else _NO_JOBS).observe(seconds)


class DatabaseCollector(Collector):
    """Counts read from the database at scrape time."""

    def describe(self):
        return []  # the label values come from the database; nothing to check at registration

    def collect(self):
        started = time.perf_counter()
        database.connect(reuse_if_open=True)
        now = states.utcnow()
        families = list(self._jobs(now)) + list(self._tasks()) + list(self._workers()) + \
            list(self._harvesters(now)) + list(self._retention())
        elapsed = GaugeMetricFamily("minipanda_scrape_database_seconds",
                                    "Time this scrape's database queries took", value=time.perf_counter() - started)
        return families + [elapsed]

    def _jobs(self, now):
        Job = models.Job
        jobs = GaugeMetricFamily("minipanda_jobs", "Jobs by queue and state (every attempt)", labels=["queue", "state"])
        for queue, by_state in sorted(live_counts.jobs_by_queue().items()):  # kept by the database: no scan
            for state, n in sorted(by_state.items()):
                jobs.add_metric([queue or "", state], n)
        yield jobs
        age = GaugeMetricFamily("minipanda_job_heartbeat_age_seconds",
                                "Seconds since the oldest pilot heartbeat among the queue's active jobs",
                                labels=["queue"])
        silent = GaugeMetricFamily("minipanda_active_jobs_without_heartbeat",
                                   "Active jobs of the queue that never had a heartbeat", labels=["queue"])
        rows = (Job.select(Job.computing_site, fn.MIN(Job.heartbeat_time),
                           fn.COUNT(Job.panda_id) - fn.COUNT(Job.heartbeat_time))
                .where(Job.status.in_(queries.ACTIVE_STATES)).group_by(Job.computing_site).tuples())
        for queue, oldest, never in rows:
            oldest = _datetime(oldest)
            if oldest is not None:
                age.add_metric([queue or ""], max(0.0, (now - oldest).total_seconds()))
            silent.add_metric([queue or ""], int(never or 0))
        yield age
        yield silent

    def _tasks(self):
        Task = models.Task
        tasks = GaugeMetricFamily("minipanda_tasks", "Tasks by state", labels=["state"])
        for state, n in Task.select(Task.status, fn.COUNT(Task.jedi_task_id)).group_by(Task.status).tuples():
            tasks.add_metric([state], n)
        yield tasks

    def _workers(self):
        Worker = models.Worker
        workers = GaugeMetricFamily("minipanda_workers", "Workers by queue and state, as harvester reported them",
                                    labels=["queue", "state"])
        for queue, state, n in (Worker.select(Worker.computing_site, Worker.status,
                                              fn.COUNT(Worker.id)).where(Worker.status.is_null(False))
                                .group_by(Worker.computing_site, Worker.status).tuples()):
            workers.add_metric([queue or "", state], n)
        yield workers
        yield from self._allocations()
        stats = GaugeMetricFamily("minipanda_harvester_worker_statistics",
                                  "Worker counts in harvester's latest statistics report",
                                  labels=["harvester", "queue", "job_type", "resource_type", "state"])
        for row in queries.worker_statistics():
            for count in row["counts"]:
                stats.add_metric([row["harvester"], row["queue"], str(count["jobType"]), str(count["resourceType"]),
                                  str(count["status"])], _number(count["n"]))
        yield stats

    def _allocations(self):
        """What the queues' ended allocations delivered, summed over the workers harvester reported figures for
        (harvester.handoff.usage; docs/harvester.md)."""
        Worker = models.Worker
        families = [CounterMetricFamily(f"minipanda_allocation_{name}", text, labels=labels) for name, text, labels in (
            ("charged_node_seconds", "Node-seconds the scheduler charged for the queue's ended workers", ["queue"]),
            ("payload_wall_seconds", "Wall seconds the pilots' payloads ran in those workers", ["queue"]),
            ("payload_cpu_seconds", "CPU seconds of those payloads", ["queue"]),
            ("pilot_idle_seconds", "Pilot-slot seconds without a payload: wait (a pilot up, asking for a job, "
                                   "staging, reporting), drain (no pilot: starting, or ended before the allocation)",
             ["queue", "kind"]))]
        charged, wall, cpu, idle = families
        rows = (Worker.select(Worker.computing_site, fn.SUM(fn.COALESCE(Worker.n_nodes, 1) * Worker.elapsed_s),
                              fn.SUM(Worker.payload_wall_s), fn.SUM(Worker.payload_cpu_s),
                              fn.SUM(Worker.pilot_wait_s), fn.SUM(Worker.pilot_drain_s))
                .where(Worker.elapsed_s.is_null(False) | Worker.payload_wall_s.is_null(False))
                .group_by(Worker.computing_site).tuples())
        for queue, node_s, wall_s, cpu_s, wait_s, drain_s in rows:
            queue = queue or ""
            charged.add_metric([queue], float(node_s or 0))
            wall.add_metric([queue], float(wall_s or 0))
            cpu.add_metric([queue], float(cpu_s or 0))
            idle.add_metric([queue, "wait"], float(wait_s or 0))
            idle.add_metric([queue, "drain"], float(drain_s or 0))
        return families

    def _harvesters(self, now):
        age = GaugeMetricFamily("minipanda_harvester_heartbeat_age_seconds",
                                "Seconds since the harvester's last heartbeat", labels=["harvester"])
        info = GaugeMetricFamily("minipanda_harvester_info", "Harvester instances (value 1)",
                                 labels=["harvester", "host", "version"])
        cycles = CounterMetricFamily("minipanda_harvester_agent_cycles", "Cycles each harvester agent has run "
                                     "(from its heartbeat)", labels=["harvester", "agent"])
        errors = CounterMetricFamily("minipanda_harvester_agent_errors", "Cycles of each harvester agent that "
                                     "failed (from its heartbeat)", labels=["harvester", "agent"])
        last = GaugeMetricFamily("minipanda_harvester_agent_last_cycle_seconds", "Duration of each harvester "
                                 "agent's last cycle (from its heartbeat)", labels=["harvester", "agent"])
        for h in models.HarvesterInstance.select():
            age.add_metric([h.harvester_id], max(0.0, (now - h.last_heartbeat).total_seconds()))
            info.add_metric([h.harvester_id, h.host or "", h.version or ""], 1)
            for agent, figures in sorted(json.loads(h.agents or "{}").items()):
                cycles.add_metric([h.harvester_id, agent], _number(figures.get("runs")))
                errors.add_metric([h.harvester_id, agent], _number(figures.get("errors")))
                last.add_metric([h.harvester_id, agent], _number(figures.get("last_duration")))
        yield age
        yield info
        yield cycles
        yield errors
        yield last


    def _retention(self):
        done = CounterMetricFamily("minipanda_retention", "What the retention duty archived, expired or deleted "
                                   "(jobs, tasks, archive files, files of the file store)", labels=["kind"])
        size = CounterMetricFamily("minipanda_retention_bytes", "Bytes of the files the retention duty deleted from "
                                   "the file store", labels=["kind"])
        last = None
        for row in models.RetentionStat.select():
            done.add_metric([row.kind], row.count)
            if row.kind in ("log", "output", "sandbox"):
                size.add_metric([row.kind], row.bytes)
            last = max(last, row.last_time) if last and row.last_time else (row.last_time or last)
        yield done
        yield size
        if last is not None:
            yield GaugeMetricFamily("minipanda_retention_last_run_timestamp_seconds", "When the retention duty last "
                                    "ran (Unix time)", value=last.replace(tzinfo=datetime.timezone.utc).timestamp())


def _datetime(value):
    """MIN() of a datetime column comes back as text on SQLite."""
    if value is None or hasattr(value, "year"):
        return value
    return datetime.datetime.fromisoformat(str(value))


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def make_registry(home=None):
    """The server's registry: database counts, what the alerts need (:mod:`health`, when the ``home`` is given),
    the dispatch histogram and this process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    if home is not None:
        registry.register(HealthCollector(home))
    registry.register(DISPATCH_SECONDS)
    ProcessCollector(registry=registry)
    return registry


def exposition(registry, accept=None):
    """(body, content type): the text format, or OpenMetrics when the scraper's Accept header asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
