"""The one runner: every agent's ``run_once(now)`` on its period, early wake-ups, idle agents backed off, no
overlapping runs, every error caught and recorded, the instance lease kept, and the queue file reloaded when it
changes.

``run_cycle()`` runs each agent once in cycle order (``harvester run --once``). ``start()``/``stop()`` run each
agent on its own thread: an agent sleeps on its wake event, so ``wake(name)`` (the adjuster waking the submitter,
the submitter the monitor, the monitor the propagator and the adjuster, a kill the sweeper) starts its next cycle
at once, and one agent's slow batch command never delays another agent. How long it sleeps: its period after a
cycle that found work (``run_once`` returned a count above 0) or failed; after cycles in a row that found nothing,
twice as long each time, up to ``idle_factor`` times its period (:func:`next_wait`). Work that shows up inside
harvester wakes the agent that does it, so an idle agent costs a cycle every few periods instead of every period,
and what comes from outside (the server's demand, the batch system, the pilots' files) is still seen within
``idle_factor`` periods.
"""
import logging
import threading
import time

from harvester import db, models
from harvester.agents.adjuster import Adjuster
from harvester.agents.commands import Commands
from harvester.agents.fetcher import Fetcher
from harvester.agents.monitor import Monitor
from harvester.agents.propagator import Propagator
from harvester.agents.submitter import Submitter, recover_interrupted
from harvester.agents.sweeper import Sweeper
from harvester.handoff import pilots
from harvester.states import utcnow

log = logging.getLogger(__name__)
AGENT_CLASSES = (Commands, Fetcher, Adjuster, Submitter, Monitor, Propagator, Sweeper)
RELOAD_PERIOD_S = 10.0


class Runner:
    """Drives the agents of one harvester.

    Args:
        context: the shared :class:`harvester.context.Context`.
        reload_queues: called with no argument to reload the queue file (True when a new version took effect), or
            None.
    """

    def __init__(self, context, reload_queues=None, agent_classes=AGENT_CLASSES):
        self.ctx = context
        self.agents = {cls.name: cls(context) for cls in agent_classes}
        self.reload_queues = reload_queues
        self._wake = {name: threading.Event() for name in self.agents}
        self._busy = {name: threading.Lock() for name in self.agents}
        self._stop = threading.Event()
        self._threads = []
        context.wake = self.wake

    def wake(self, name):
        if name in self._wake:
            self._wake[name].set()

    def recover(self, now=None):
        """After a start: resolve submissions a killed harvester left half done."""
        count = recover_interrupted(self.ctx, now or utcnow())
        if count:
            log.warning("%d interrupted submissions resolved", count)

    def run_agent(self, name, now=None):
        """One cycle of one agent, never two at once; errors logged and recorded, never raised."""
        return self._cycle(name, now)[1]

    def _cycle(self, name, now=None):
        """One cycle of agent ``name``: (the work it found, as ``run_once`` counted it; the error or None)."""
        agent = self.agents[name]
        with self._busy[name]:
            now = now or utcnow()
            started = time.monotonic()
            found, error = 0, None
            try:
                found = agent.run_once(now)
            except Exception as exc:  # the runner keeps every agent alive; the error is logged and kept
                error = f"{type(exc).__name__}: {exc}"
                log.error("agent %s: cycle failed: %s", name, error, exc_info=not _expected(exc))
            record_run(name, now, time.monotonic() - started, error)
            return found, error

    def run_cycle(self, now=None):
        """Each agent once, in cycle order; returns {agent: error or None}."""
        if self.reload_queues:
            self.reload_queues()
        return {name: self.run_agent(name, now) for name in self.agents}

    # ---- threads ---------------------------------------------------------------------------------------------
    def start(self):
        threading.Thread(target=pilots.build_ahead, args=(self.ctx.home,), name="pilot-zipapp", daemon=True).start()
        for name in self.agents:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"agent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, name):
        period, idle_cycles = self.agents[name].period, 0
        while not self._stop.is_set():
            self._wake[name].clear()  # a wake-up from now on, during the cycle too, starts the next cycle at once
            found, error = self._cycle(name)
            idle_cycles = 0 if found or error else idle_cycles + 1
            self._wake[name].wait(next_wait(period, idle_cycles, self.ctx.settings.idle_factor))

    def serve_forever(self, signals=None, on_hangup=None):
        """Keep the instance lease and the queue file fresh until :meth:`stop` or a stop signal.

        ``signals``: a :class:`queueconfig.signals.SignalInbox` this thread sleeps on; its handlers only record,
        and this loop acts: a stop signal ends it (the caller then stops the agents), a hang-up calls
        ``on_hangup`` and reloads the queue file at once."""
        next_reload = 0.0
        while not self._stop.is_set():
            if signals is not None and signals.stop_signum is not None:
                break
            if signals is not None and signals.take_hangup():
                if on_hangup is not None:
                    on_hangup()
                next_reload = 0.0
            if not db.refresh_instance(owner=self.ctx.owner):
                log.error("another harvester took over this home's lease: stopping")
                self._stop.set()
                break
            if self.reload_queues and time.monotonic() >= next_reload:
                try:
                    if self.reload_queues():
                        for name in ("adjuster", "fetcher"):
                            self.wake(name)
                except Exception:  # a reload problem must not stop harvester; the old queues stay in force
                    log.exception("reloading the queue file failed")
                next_reload = time.monotonic() + RELOAD_PERIOD_S
            if signals is not None and signals.installed:
                signals.wait(5.0)
            else:
                self._stop.wait(5.0)

    def stop(self, timeout=30.0):
        self._stop.set()
        for event in self._wake.values():
            event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]


def next_wait(period, idle_cycles, idle_factor):
    """Seconds an agent sleeps (unless woken) after ``idle_cycles`` cycles in a row that found nothing: its period
    after a cycle with work, then twice as long per idle cycle, never more than ``idle_factor`` periods (a factor
    of 1 or less: always the period)."""
    if idle_cycles <= 0 or idle_factor <= 1:
        return period
    return period * min(float(idle_factor), 2.0 ** min(idle_cycles, 32))


# One statement per cycle, written once: every agent records every cycle (twice a second each in the testbed),
# and peewee rendering an INSERT and an UPDATE each time cost more than the idle cycle itself.
_RECORD_RUN = ("INSERT INTO agent_run (agent, last_start, last_duration, last_error, runs, errors) "
               "VALUES (?, ?, ?, '', 1, 0) ON CONFLICT (agent) DO UPDATE SET last_start = excluded.last_start, "
               "last_duration = excluded.last_duration, runs = agent_run.runs + 1")
_RECORD_FAILED_RUN = ("INSERT INTO agent_run (agent, last_start, last_duration, last_error, last_error_time, runs, "
                      "errors) VALUES (?, ?, ?, ?, ?, 1, 1) ON CONFLICT (agent) DO UPDATE SET "
                      "last_start = excluded.last_start, last_duration = excluded.last_duration, "
                      "last_error = excluded.last_error, last_error_time = excluded.last_error_time, "
                      "runs = agent_run.runs + 1, errors = agent_run.errors + 1")


def record_run(name, now, duration, error=None):
    """Count one cycle of agent ``name`` in its AgentRun row (created on its first cycle)."""
    when = models.AgentRun.last_start.db_value(now)
    if error:
        models.database.execute_sql(_RECORD_FAILED_RUN, (name, when, duration, error[:2000], when))
    else:
        models.database.execute_sql(_RECORD_RUN, (name, when, duration))


def _expected(exc):
    from harvester.errors import ServerError

    return isinstance(exc, ServerError)
