"""What every agent has: a name, the shared context, and per-queue error handling with backoff."""
import datetime
import logging

from harvester import db, models

log = logging.getLogger(__name__)


class Agent:
    """Base of the agents. Subclasses implement ``run_once(now)``: one cycle, no sleeping, no loop; it returns how
    much work the cycle found (0: none, and the runner lets an idle agent sleep longer, see harvester.runner)."""

    name = "agent"

    def __init__(self, context):
        self.ctx = context
        self.owner = f"{context.owner}/{self.name}"

    def run_once(self, now):
        raise NotImplementedError

    @property
    def period(self):
        return getattr(self.ctx.settings, f"{self.name}_period")

    def queue_failed(self, queue_name, message, now):
        """Record a failure of one queue's step and back the queue off (doubling, capped)."""
        settings = self.ctx.settings
        state = db.queue_state(queue_name)
        failures = state.failures + 1
        wait = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (failures - 1))
        models.QueueState.update(failures=failures, last_error=f"{self.name}: {message}"[:2000],
                                 backoff_until=now + datetime.timedelta(seconds=wait)) \
            .where(models.QueueState.queue == queue_name).execute()
        log.error("queue %s: %s failed (%d in a row), backing off %.0f s: %s", queue_name, self.name, failures,
                  wait, message)

    def queue_succeeded(self, queue_name):
        models.QueueState.update(failures=0, backoff_until=None) \
            .where(models.QueueState.queue == queue_name, models.QueueState.failures > 0).execute()

    def backing_off(self, queue_name, now):
        state = db.queue_state(queue_name)
        return state.backoff_until is not None and state.backoff_until > now

    def each_queue(self, now, step, skip_backoff=True):
        """Run ``step(queue)`` for every valid queue; one queue's error is logged with its name and never stops
        the others."""
        for name, queue in sorted(self.ctx.live_queues().items()):
            if skip_backoff and self.backing_off(name, now):
                continue
            try:
                step(queue)
            except Exception as exc:  # one queue's fault must not stop harvester's work for the others
                log.exception("queue %s: %s step failed", name, self.name)
                self.queue_failed(name, f"{type(exc).__name__}: {exc}", now)
