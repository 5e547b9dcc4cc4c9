"""Tuning of the task side: duty periods, watchdog timeouts, brokerage and scout knobs.

A value comes from, in order: ``minipanda serve --setting KEY=VALUE``, the ``config`` table (key as below, so
an operator can change it while the server runs), else the default here. Every value is a number; the duties
read them at each run, so a change in the table takes effect at the next run.
"""
import logging

from minipanda.core import models
from minipanda.core.db import database
from minipanda.errors import SettingError

log = logging.getLogger(__name__)
READ_SQL = f'SELECT "value" FROM "{models.Config._meta.table_name}" WHERE "key" = %s'

DEFAULTS = {
    # duty periods (seconds)
    "period.generator": 10.0,  # also woken at once by a task submission or command
    "period.settle": 5.0,  # final task jobs -> input states, outputs, retries, task completion
    "period.watchdog": 60.0,
    "period.priority": 1200.0,  # PanDA recomputes waiting jobs' priorities every 20 minutes
    "period.retention": 3600.0,  # archive old jobs and tasks, expire archives, clean the file store
    "period.counts": 5.0,  # PostgreSQL: fold the job and input count changes into the counts (minipanda.core.counts)
    # watchdog timeouts (seconds)
    "watchdog.sent_timeout": 1800.0,  # sent and no word from the pilot -> failed "no reply"
    # used when the queue's queuedata has no pilot_lost_heartbeat_timeout; the pilot's own default then
    # (pilot.queuedata.LOST_HEARTBEAT_TIMEOUT, PanDA's 2 h) is the same: tests/test_watchdog.py keeps them equal
    "watchdog.heartbeat_timeout": 7200.0,
    "watchdog.holding_timeout": 10800.0,
    # generator
    "generator.batch": 1000.0,  # jobs per transaction
    "generator.max_jobs_per_cycle": 200000.0,
    # brokerage: a queue with more queued jobs than max(2 x running, this) is skipped
    "brokerage.bootstrap_queued": 100.0,
    # scouts
    "scout.default_count": 3.0,
    "scout.ram_percentile": 75.0,
    "scout.ram_margin": 0.10,
    "scout.walltime_margin": 0.50,
    "priority.scout_boost": 1000.0,
    # retention (days; 0 keeps forever): see minipanda.tasks.retention and docs/operations.md
    "retention.job_days": 30.0,  # jobs (and tasks) in a final state this long move to the archive
    "retention.archive_days": 0.0,  # archived jobs and tasks that ended this long ago are deleted (0: keep)
    "retention.log_days": 14.0,  # log tarballs in the file store
    "retention.output_days": 30.0,  # outputs of a finished task in the file store, fetched or not
    "retention.fetched_output_days": 1.0,  # outputs of a finished task once a person downloaded them
    "retention.batch": 500.0,  # jobs (tasks) per move: the live write lock is held for one batch's delete
}


def parse_overrides(pairs):
    """``["KEY=VALUE", ...]`` from the command line -> {key: float}; raises SettingError naming the bad one."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep:
            raise SettingError(f"--setting {pair!r}: expected KEY=VALUE")
        out[key] = check(key, value)
    return out


def check(key, value):
    """The numeric value of ``key``, or SettingError."""
    if key not in DEFAULTS:
        raise SettingError(f"setting {key!r} is unknown; known settings: {', '.join(sorted(DEFAULTS))}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"setting {key}: expected a number, got {value!r}") from None
    if number < 0:
        raise SettingError(f"setting {key}: must not be negative, got {number}")
    return number


class Settings:
    """Reads settings: overrides, then the config table, then defaults."""

    def __init__(self, overrides=None):
        self.overrides = dict(overrides or {})

    def get(self, key):
        """The value of ``key`` (a float)."""
        if key in self.overrides:
            return self.overrides[key]
        # plain SQL: peewee's get_or_none built a query object each time, ~10x the cost of the lookup itself
        row = database.execute_sql(READ_SQL % database.param, (key,)).fetchone()
        if row is not None:
            try:
                return check(key, row[0])
            except SettingError as exc:
                log.warning("config table: %s; using the default %s", exc, DEFAULTS[key])
        return DEFAULTS[key]

    def get_int(self, key):
        """The value of ``key`` as an integer."""
        return int(self.get(key))
