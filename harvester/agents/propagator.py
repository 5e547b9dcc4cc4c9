"""The propagator: tell the server what harvester knows, exactly once and in order, whatever the network does.

Each cycle::

    job reports     the outbox in id order, in bulk (pilot/update_jobs_bulk): acknowledged -> deleted (and the
                    pilot's spooled file removed); `tobekilled` to a heartbeat harvester sent for a pilot with no
                    network -> the worker is marked for the sweeper; an entry refused for good -> kept as
                    rejected, never resent, its reason in the log and the worker's status log; a whole bulk
                    refused (HTTP 413, or a 4xx for one bad entry) -> split in halves and sent again, so only the
                    bad entry is rejected; server unreachable -> stop, everything stays for later
    workers         every worker whose status changed since the last report (harvester/update_workers)
    statistics      workers by state per queue, every stats_period or when the server asked

Job reports go first, and a worker with reports still waiting is held back, so a pilot's final report always
reaches the server before its worker's end does (the monitor runs on its own thread and may queue reports at any
moment).
"""
import collections
import json
import logging
import posixpath

import peewee

from harvester import models
from harvester.agents.base import Agent
from harvester.errors import MessengerError, ServerError
from harvester.handoff.outbox import forget
from harvester.states import FINAL, SubmitPhase, note_worker
from harvester.steps import iso

log = logging.getLogger(__name__)
BATCH = 200


# what the allocation delivered (harvester.handoff.usage), sent once known: wire name -> worker column
ALLOCATION = (("nNodes", "nodes"), ("elapsedTime", "elapsed_s"), ("chargeSource", "charge_source"),
              ("payloadWallTime", "payload_wall_s"), ("payloadCpuTime", "payload_cpu_s"),
              ("pilotWaitTime", "pilot_wait_s"), ("pilotDrainTime", "pilot_drain_s"), ("nJobsRun", "jobs_run"))


def worker_dict(worker, panda_ids):
    report = {"workerID": worker.worker_id, "batchID": worker.batch_id, "computingSite": worker.queue,
              "status": worker.status, "nCore": worker.cores, "nMemory": worker.memory_mb,
              "walltime": worker.walltime_s, "submitTime": iso(worker.submit_time),
              "startTime": iso(worker.start_time), "endTime": iso(worker.end_time),
              "diagMessage": (worker.diag or "")[:500], "pandaid_list": panda_ids, "node": worker.node,
              "accessPoint": worker.access_point, "errorCode": worker.error_code}
    if worker.elapsed_s is not None or worker.payload_wall_s is not None:
        report.update({name: getattr(worker, column) for name, column in ALLOCATION
                       if getattr(worker, column) is not None})
    return report


class Propagator(Agent):
    name = "propagator"

    def __init__(self, context):
        super().__init__(context)
        self.last_stats = None

    def run_once(self, now):
        sent = self.send_job_reports(now)
        sent += self.send_workers(now)
        self.send_statistics(now)
        return sent

    # ---- job reports -----------------------------------------------------------------------------------------
    def send_job_reports(self, now):
        delivered = 0
        while True:
            rows = list(models.Outbox.select().where(models.Outbox.rejected == False)  # noqa: E712
                        .order_by(models.Outbox.id).limit(BATCH))
            if not rows:
                return delivered
            settled = []
            delivered += self.send_bulk(rows, settled, now)
            self.remove_sources(settled)

    def send_bulk(self, rows, settled, now):
        """Send ``rows`` in one call; a refusal of the whole call is split until it names one entry: one bad entry
        (too large for the server, malformed) never takes the others down. A transient failure raises: everything
        stays queued, in order, for the next cycle."""
        try:
            replies = self.ctx.server.update_jobs([json.loads(row.payload) for row in rows])
        except ServerError as exc:
            models.Outbox.update(tries=models.Outbox.tries + 1, last_error=str(exc)[:2000]) \
                .where(models.Outbox.id.in_([row.id for row in rows])).execute()
            if exc.transient:
                raise  # the runner logs it
            if len(rows) > 1:
                half = len(rows) // 2
                log.warning("the server refused a bulk of %d job reports (%s); sent again in halves", len(rows), exc)
                return self.send_bulk(rows[:half], settled, now) + self.send_bulk(rows[half:], settled, now)
            self.reject(rows[0], str(exc), now)
            return 0
        delivered = 0
        for row, reply in zip(rows, replies):
            delivered += self.settle(row, reply or {}, settled, now)
        return delivered

    def settle(self, row, reply, settled, now):
        code = reply.get("StatusCode")
        if reply.get("command") == "tobekilled":
            self.kill_for(row, reply, code)
        if str(code) == "0":
            settled.append(row)
            row.delete_instance()
            return 1
        if row.kind == "job_heartbeat":  # a refused heartbeat is stale news (the job ended or moved): drop it
            settled.append(row)
            row.delete_instance()
            return 0
        self.reject(row, f"StatusCode {code}: {reply.get('ErrorDiag', '')}", now)
        return 0

    def kill_for(self, row, reply, code):
        """`tobekilled` kills the worker only when harvester is the pilot's one voice: a heartbeat it sends for a
        pilot with no network. A relayed pull-mode report (from the pilot's own outbox) may be stale — the pilot
        may have reached the server itself since, and runs another job now — and a final update ends the job
        anyway: the pilot hears `tobekilled` itself at its next heartbeat."""
        panda_id = json.loads(row.payload).get("jobId")
        if row.kind != "job_heartbeat" or row.source_path or not row.worker_id:
            log.info("the server answered tobekilled to the relayed %s of job %s (StatusCode %s): the pilot "
                     "hears it itself; its worker is left alone", row.kind, panda_id, code)
            return
        reason = (f"the server answered tobekilled for job {panda_id}" if str(code) == "0" else
                  f"the server refused the job's report: {reply.get('ErrorDiag', '')}")
        models.Worker.update(kill_reason=reason).where(models.Worker.worker_id == row.worker_id,
                                                       models.Worker.kill_reason.is_null()).execute()
        self.ctx.wake("sweeper")

    def reject(self, row, message, now):
        log.error("the server refused %s (%s) for good; kept in the outbox as rejected: %s", row.kind, row.key,
                  message)
        models.Outbox.update(rejected=True, last_error=message[:2000]).where(models.Outbox.id == row.id).execute()
        worker = models.Worker.get_or_none(models.Worker.worker_id == row.worker_id) if row.worker_id else None
        if worker is not None:  # `harvester explain --worker` says it too
            note_worker(worker, f"the server refused the {row.kind} ({row.key}) for good; rejected, not resent: "
                        f"{message}", now)

    def remove_sources(self, rows):
        """The pilots' spooled files of delivered reports, removed where they are (one call per queue)."""
        by_worker = collections.defaultdict(list)
        for row in rows:
            if row.source_path and row.worker_id:
                by_worker[row.worker_id].append(row.source_path)
        if not by_worker:
            return
        by_root = collections.defaultdict(list)  # (queue, the workers' directory) -> paths
        for worker in (models.Worker.select(models.Worker.worker_id, models.Worker.queue, models.Worker.access_point)
                       .where(models.Worker.worker_id.in_(list(by_worker)))):
            if worker.access_point:
                by_root[worker.queue, posixpath.dirname(worker.access_point)] += by_worker[worker.worker_id]
        for (name, root), paths in sorted(by_root.items()):
            queue = self.ctx.queues.get(name)
            if queue is None:
                continue
            try:
                forget(self.ctx.transport(queue), root, paths)
            except MessengerError as exc:  # left there: a claimed name, which neither side sends again
                log.warning("queue %s: delivered outbox entries not removed: %s", name, exc)

    # ---- workers ---------------------------------------------------------------------------------------------
    def send_workers(self, now):
        sent = 0
        while True:
            # A worker whose job reports still wait in the outbox is not reported yet: the monitor may have queued
            # them after this cycle's job reports went out, and the server must see them before the worker's end.
            waiting = (models.Outbox.select(models.Outbox.worker_id)
                       .where(models.Outbox.rejected == False, models.Outbox.worker_id.is_null(False)))  # noqa: E712
            workers = list(models.Worker.select().where(models.Worker.reported == False,  # noqa: E712
                                                        models.Worker.submit_phase == SubmitPhase.DONE.value,
                                                        models.Worker.worker_id.not_in(waiting))
                           .order_by(models.Worker.worker_id).limit(BATCH))
            if not workers:
                return sent
            ids = [w.worker_id for w in workers]
            jobs = collections.defaultdict(list)
            for panda_id, worker_id in (models.JobWorker.select(models.JobWorker.panda_id, models.JobWorker.worker_id)
                                        .where(models.JobWorker.worker_id.in_(ids)).tuples()):
                jobs[worker_id].append(panda_id)
            # only the jobs harvester bound to a worker (push mode); a pull-mode pilot's own list is its word only
            replies = self.ctx.server.update_workers([worker_dict(w, jobs[w.worker_id] if w.map_type != "NoJob"
                                                                  else []) for w in workers])
            for worker, accepted in zip(workers, replies or []):
                if not accepted:
                    log.error("the server refused the update of worker %s", worker.worker_id)
                # conditional on the time sent: a change made meanwhile is reported next cycle
                models.Worker.update(reported=True).where(
                    models.Worker.worker_id == worker.worker_id,
                    models.Worker.modification_time == worker.modification_time).execute()
                sent += 1

    # ---- statistics ------------------------------------------------------------------------------------------
    def send_statistics(self, now):
        requested = [row.queue for row in models.QueueState.select().where(models.QueueState.stats_requested)]
        due = self.last_stats is None or (now - self.last_stats).total_seconds() >= self.ctx.settings.stats_period
        queues = list(self.ctx.live_queues()) if due else requested
        if not queues:
            return
        for name in queues:
            by_status = dict(models.Worker.select(models.Worker.status, peewee.fn.COUNT(models.Worker.worker_id))
                             .where(models.Worker.queue == name, models.Worker.status.not_in([s.value for s in FINAL]))
                             .group_by(models.Worker.status).tuples())
            self.ctx.server.report_worker_statistics(name, {"managed": {"SCORE": by_status}})
        models.QueueState.update(stats_requested=False).where(models.QueueState.queue.in_(queues)).execute()
        if due:
            self.last_stats = now
