"""The task side's periodic duties, registered on the server's :class:`minipanda.server.daemon.DutyRunner`.

========== ==================== ==========================================================================
duty       default period       what
========== ==================== ==========================================================================
generator  10 s, and on wake    split new tasks, make and broker jobs, scouts -> avalanche (generator.py)
settle     5 s, and on wake     final jobs -> input states, outputs, retries; task completion (settle.py)
watchdog   60 s                 no reply, lost heartbeat, holding too long (watchdog.py)
priority   1200 s               recompute waiting jobs' priorities (priority.py)
retention  3600 s               archive old jobs and tasks, expire archives, clean the file store
                                (retention.py, storeclean.py)
counts     5 s (PostgreSQL)     fold the changes of the kept job and input counts into them
                                (minipanda.core.counts; SQLite's triggers change the counts in place)
========== ==================== ==========================================================================

Periods are settings (``period.<duty>``, see :mod:`minipanda.tasks.settings`). A task submission or command wakes the
generator at once; the settle duty wakes it when retries or scout results are waiting.
"""
import logging

from minipanda.core import counts, db
from minipanda.core.db import database
from minipanda.tasks import generator, priority, retention, retry, settle, watchdog

log = logging.getLogger(__name__)


def register_duties(runner, settings, home=None):
    """Add the task duties to ``runner``, reading periods from ``settings``; a duty wakes another through
    ``runner.wake``. The retention duty needs the server's ``home`` (its file store)."""
    runner.add("generator", settings.get("period.generator"), lambda now: generator.run(settings, now))
    runner.add("settle", settings.get("period.settle"), lambda now: settle.run(settings, now, runner.wake))
    runner.add("watchdog", settings.get("period.watchdog"), lambda now: watchdog.run(settings, now, runner.wake))
    runner.add("priority", settings.get("period.priority"), lambda now: priority.recompute(settings, now))
    if home is not None:
        runner.add("retention", settings.get("period.retention"), lambda now: retention.run(settings, home, now))
    if db.is_postgres():
        runner.add("counts", settings.get("period.counts"), lambda now: counts.fold())


def attach(runner, settings, home=None):
    """Seed the default retry rules and register the task duties on the server's ``runner`` (before it starts).
    Request handlers reach it through the wake function the server puts in its route context."""
    database.connect(reuse_if_open=True)
    retry.ensure_defaults()
    register_duties(runner, settings, home)
