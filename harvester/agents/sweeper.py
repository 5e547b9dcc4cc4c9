"""The sweeper: kill the workers someone asked to kill or that outlived their limits, revoke the pilot tokens of
ended workers, and clean access points after their retention time.

Kills come from: the server (`tobekilled`, KILL_WORKERS), `harvester kill`, workers queued longer than
``sweeper.max_queued_time``, and running pilots with no sign of life (heartbeat file, report) for
``sweeper.stale_time`` (DIRAC's PilotStatusAgent). Finished workers' directories go after ``keep_finished``, failed
ones after ``keep_failed`` (kept longer: someone may want to read them).
"""
import datetime
import logging

import peewee

from harvester import db, models
from harvester.agents.base import Agent
from harvester.batch.base import OK
from harvester.errors import ServerError
from harvester.states import (ACTIVE, FINAL, LIVE_VALUES, QUEUED, HeldJobStatus, SubmitPhase, WorkerStatus,
                              change_worker_status)
from harvester.steps import end_jobs, release_jobs

log = logging.getLogger(__name__)


class Sweeper(Agent):
    name = "sweeper"

    def run_once(self, now):
        self.killed = self.cleaned = 0
        self.each_queue(now, lambda queue: self.sweep(queue, now), skip_backoff=False)
        return self.killed + self.cleaned + self.revoke_tokens()

    def sweep(self, queue, now):
        self.mark_overdue(queue, now)
        self.kill(queue, now)
        self.clean(queue, now)

    def mark_overdue(self, queue, now):
        limits = queue.sweeper
        queued_before = now - datetime.timedelta(seconds=limits.max_queued_time)
        (models.Worker.update(kill_reason=f"queued for more than {limits.max_queued_time} s")
         .where(models.Worker.queue == queue.name, models.Worker.status.in_([s.value for s in QUEUED]),
                models.Worker.submit_time < queued_before, models.Worker.kill_reason.is_null()).execute())
        stale = limits.stale_time or queue.pilot.lost_heartbeat
        # the pilots' signs of life are what the monitor last read: an idle monitor reads them every idle_factor
        # monitor periods at the latest, so a worker is silent only once that much longer has passed
        settings = self.ctx.settings
        unread = settings.monitor_period * max(1.0, settings.idle_factor)
        silent_before = now - datetime.timedelta(seconds=stale + unread)
        last_sign = peewee.fn.COALESCE(models.Worker.last_seen, models.Worker.start_time)
        (models.Worker.update(kill_reason=f"no sign of life from the pilot for more than {stale} s")
         .where(models.Worker.queue == queue.name, models.Worker.status.in_([s.value for s in ACTIVE]),
                last_sign < silent_before, models.Worker.kill_reason.is_null()).execute())

    def kill(self, queue, now):
        condition = ((models.Worker.queue == queue.name) & models.Worker.status.in_(LIVE_VALUES)
                     & models.Worker.kill_reason.is_null(False))
        workers = db.claim_workers(self.owner, condition, self.ctx.settings.lease_s, now)
        if not workers:
            return
        try:
            unsubmitted = [w for w in workers if not w.batch_id and w.submit_phase == SubmitPhase.PENDING.value]
            for worker in unsubmitted:
                with models.database.atomic():
                    if change_worker_status(worker, WorkerStatus.CANCELLED,
                                            f"killed before submission: {worker.kill_reason}", now,
                                            diag=worker.kill_reason, phase=SubmitPhase.DONE):
                        release_jobs(worker.worker_id)
            batch = [w for w in workers if w.batch_id]
            if not batch:
                return
            result = self.ctx.plugin(queue).cancel([w.batch_id for w in batch])
            for worker in batch:
                status, message = result.results.get(worker.batch_id, ("retry", "no answer from the plugin"))
                models.Worker.update(last_plugin_output=f"cancel: {status}: {message}"[:4000]) \
                    .where(models.Worker.worker_id == worker.worker_id).execute()
                if status == OK:
                    with models.database.atomic():
                        if change_worker_status(worker, WorkerStatus.CANCELLED, f"killed: {worker.kill_reason}", now,
                                                diag=worker.kill_reason):
                            end_jobs(worker.worker_id)
                    self.killed += 1
                else:
                    log.error("queue %s worker %s: cancel failed (%s): %s", queue.name, worker.worker_id, status,
                              message)
        finally:
            db.release_workers(self.owner, [w.worker_id for w in workers])

    def clean(self, queue, now):
        keep = {WorkerStatus.FINISHED.value: queue.sweeper.keep_finished,
                WorkerStatus.CANCELLED.value: queue.sweeper.keep_finished,
                WorkerStatus.FAILED.value: queue.sweeper.keep_failed,
                WorkerStatus.MISSED.value: queue.sweeper.keep_failed}
        transport, forgotten = None, []
        for status, seconds in keep.items():
            before = now - datetime.timedelta(seconds=seconds)
            rows = (models.Worker.select().where(models.Worker.queue == queue.name, models.Worker.status == status,
                                                 models.Worker.cleaned == False,  # noqa: E712
                                                 models.Worker.reported == True,  # noqa: E712
                                                 models.Worker.end_time < before).limit(500))
            for worker in rows:
                if worker.access_point:
                    transport = transport or self.ctx.transport(queue)
                    transport.remove_tree(worker.access_point)
                with models.database.atomic():
                    models.Worker.update(cleaned=True).where(models.Worker.worker_id == worker.worker_id).execute()
                    models.HeldJob.delete().where(models.HeldJob.worker_id == worker.worker_id,
                                                  models.HeldJob.status == HeldJobStatus.DONE.value).execute()
                self.cleaned += 1
                forgotten += [worker.batch_id] if worker.batch_id else []
                log.info("queue %s worker %s (%s): access point %s removed", queue.name, worker.worker_id, status,
                         worker.access_point)
        if forgotten:  # what the plugin keeps of these jobs (the local plugin's spool records) goes with them
            self.ctx.plugin(queue).forget(forgotten)

    def revoke_tokens(self):
        rows = list(models.Worker.select(models.Worker.worker_id, models.Worker.pilot_token_jti)
                    .where(models.Worker.status.in_([s.value for s in FINAL]),
                           models.Worker.pilot_token_jti.is_null(False), models.Worker.token_revoked == False)  # noqa
                    .limit(500))
        if not rows:
            return 0
        try:
            self.ctx.server.revoke_pilot_tokens([row.pilot_token_jti for row in rows])
        except ServerError as exc:
            log.warning("could not revoke %d pilot tokens yet: %s", len(rows), exc)
            return 0
        models.Worker.update(token_revoked=True).where(
            models.Worker.worker_id.in_([row.worker_id for row in rows])).execute()
        return len(rows)
