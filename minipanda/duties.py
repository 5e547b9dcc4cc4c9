"""The task side's periodic duties, registered on the server's :class:`minipanda.daemon.DutyRunner`.

========== ==================== ==========================================================================
duty       default period       what
========== ==================== ==========================================================================
generator  10 s, and on wake    split new tasks, make and broker jobs, scouts -> avalanche (generator.py)
settle     5 s, and on wake     final jobs -> input states, outputs, retries; task completion (settle.py)
watchdog   60 s                 no reply, lost heartbeat, holding too long (watchdog.py)
priority   1200 s               recompute waiting jobs' priorities (priority.py)
========== ==================== ==========================================================================

Periods are settings (``period.<duty>``, see :mod:`minipanda.settings`). A task submission or command wakes the
generator at once; the settle duty wakes it when retries or scout results are waiting.
"""
import logging

from minipanda import generator, priority, retry, settle, watchdog
from minipanda.db import database

log = logging.getLogger(__name__)
_runner = None  # the server's runner, so that request handlers can wake a duty


def register_duties(runner, settings):
    """Add the task duties to ``runner``, reading periods from ``settings``."""
    runner.add("generator", settings.get("period.generator"), lambda now: generator.run(settings, now))
    runner.add("settle", settings.get("period.settle"), lambda now: settle.run(settings, now))
    runner.add("watchdog", settings.get("period.watchdog"), lambda now: watchdog.run(settings, now))
    runner.add("priority", settings.get("period.priority"), lambda now: priority.recompute(settings, now))


def attach(runner, settings):
    """Seed the default retry rules and register the task duties on the server's ``runner`` (before it starts);
    from then on :func:`wake` reaches it."""
    global _runner
    database.connect(reuse_if_open=True)
    retry.ensure_defaults()
    register_duties(runner, settings)
    _runner = runner


def detach(runner):
    """Forget ``runner`` (the server stopped it)."""
    global _runner
    if _runner is runner:
        _runner = None


def wake(name):
    """Run the named duty soon; a no-op when no runner is started (CLI, tests calling services directly)."""
    if _runner is not None:
        _runner.wake(name)
