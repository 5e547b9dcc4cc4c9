"""The monitor: ONE status query per queue per cycle through the batch plugin, plus what pilots left in their
access points, turned into worker state changes and reports for the server.

Per worker, the pilot's files are read BEFORE its state changes, so a final report a pilot left (its outbox, or
the handoff files of a file-mode pilot) is queued for the server ahead of the worker's end: the server never
fails a job whose pilot did report. The files come from ONE listing of the queue's access points per cycle, and
only those that changed since the last cycle are read (harvester.handoff.snapshot.Snapshot); when the listing fails (the
login node is unreachable), no worker of the queue changes state that cycle.

What a pilot wrote is hostile: harvester relays reports only for the jobs it bound to that worker, whatever the
pilot lists; a report it refuses (a symlink, over the size cap, not its job's) fails that job with the reason,
and a refused output (not a regular file inside the pilot's directory) fails it with a stage-out error.
"""
import datetime
import json
import logging
import posixpath
import re

from harvester import db, models
from harvester.handoff import pilots, staging, usage
from harvester.agents.base import Agent
from harvester.batch.base import OK
from harvester.errors import HandoffRefused, MessengerError
from harvester.handoff.messenger import Messenger
from harvester.handoff.outbox import forget
from harvester.handoff.snapshot import Snapshot
from harvester.states import (FINAL, LIVE_VALUES, QUEUED, HeldJobStatus, SubmitPhase, WorkerError, WorkerStatus,
                              change_held_jobs, change_worker_status, note_worker)
from harvester.steps import end_jobs, hand_over, kill_workers
from pilot import errors as pilot_errors
from pilot.jobdata import Job

log = logging.getLogger(__name__)
# what follow() and change_worker_status read
MONITOR_COLUMNS = tuple(getattr(models.Worker, name) for name in (
    "worker_id", "queue", "status", "status_changed", "batch_id", "access_point", "n_pilots", "waiting_pilots",
    "start_time", "last_seen", "last_plugin_output", "kill_reason", "diag"))
_SET_LAST_SEEN = f'UPDATE "{models.Worker._meta.table_name}" SET "last_seen" = ? WHERE "worker_id" = ?'
# a (job, worker) pair known already is left as it is
_LINK_JOB = (f'INSERT INTO "{models.JobWorker._meta.table_name}" ("panda_id", "worker_id", "time") VALUES (?, ?, ?) '
             'ON CONFLICT DO NOTHING')
FAILED_IN_A_ROW = 3  # this many failed workers back the queue off (it doubles with each further failure)
PILOT_NO_JOB = 82  # pilot3's and our pilot's exit code when the server had no job for it


class Monitor(Agent):
    name = "monitor"

    def __init__(self, context):
        super().__init__(context)
        self.snapshots = {}  # queue -> its last Snapshot: files unchanged since are not read again
        self.noted = set()  # (worker, PandaID) a pilot claimed without harvester binding it: said once
        self.seen, self.new_links = {}, []  # a queue's heartbeats and new PandaIDs, written once per cycle

    @property
    def outbox_owner(self):
        """This harvester's name as a plain file-name part: the same after a restart, so it finds its claims."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.ctx.harvester_id)[:64]

    def run_once(self, now):
        """One cycle over every queue; returns the news it found for the other agents: workers whose state changed
        and reports queued for the server (heartbeats and PandaIDs recorded are not news: an idle monitor backs
        off while its pilots run, see harvester.runner)."""
        self.checked = self.changed = self.queued = self.ended = 0
        linked = getattr(self, "linked", {})
        self.linked, self.linked_before = {}, linked  # PandaIDs recorded per pilot directory (kept while followed)
        self.each_queue(now, lambda queue: self.check_queue(queue, now), skip_backoff=False)
        if self.changed:  # workers queued, running or ended: the adjuster's counts moved
            self.ctx.wake("adjuster")
        if self.ended:  # their pilot tokens are revoked by the sweeper, now rather than at its next idle look
            self.ctx.wake("sweeper")
        if self.changed or self.queued:
            self.ctx.wake("propagator")
        return self.changed + self.queued

    def check_queue(self, queue, now):
        condition = ((models.Worker.queue == queue.name) & models.Worker.status.in_(LIVE_VALUES)
                     & (models.Worker.submit_phase == SubmitPhase.DONE.value))
        workers = db.claim_workers(self.owner, condition, self.ctx.settings.lease_s, now, columns=MONITOR_COLUMNS)
        if not workers:
            return
        try:
            batch_ids = [w.batch_id for w in workers if w.batch_id]
            try:
                result = self.ctx.plugin(queue).status(batch_ids)
            except Exception as exc:  # the plugin's fault: follow the files anyway, change no state this cycle
                log.exception("queue %s: batch status query raised", queue.name)
                result = None
                self.queue_failed(queue.name, f"status query raised {type(exc).__name__}: {exc}", now)
            if result is not None and result.status != OK:
                self.queue_failed(queue.name, f"status query: {result.status}: {result.message}", now)
                result = None
            names = queue.pilot.handoff.model_dump()  # once per queue, not per worker
            ending = [w.access_point for w in workers if result is not None and w.batch_id in result.states
                      and result.states[w.batch_id].state in FINAL]  # their pilots' usage is read
            try:
                snapshot = Snapshot.take(self.ctx.transport(queue), [w.access_point for w in workers], names,
                                         queue.pilot.handoff_max_bytes, self.snapshots.get(queue.name), ending)
            except MessengerError as exc:  # no pilot's files: no worker may end before they are read
                log.error("queue %s: %s; no worker changes state this cycle", queue.name, exc)
                self.queue_failed(queue.name, str(exc), now)
                return
            self.snapshots[queue.name] = snapshot
            self.seen, self.new_links = {}, []
            for worker in workers:
                try:
                    self.follow(queue, worker, result, now, names, snapshot)
                except Exception as exc:  # one worker's fault never stops the others
                    log.exception("queue %s worker %s: monitoring failed", queue.name, worker.worker_id)
                    models.Worker.update(diag=f"monitor: {type(exc).__name__}: {exc}"[:2000]) \
                        .where(models.Worker.worker_id == worker.worker_id).execute()
                self.checked += 1
            self.record_seen(now)
        finally:
            db.release_workers(self.owner, [w.worker_id for w in workers])

    def follow(self, queue, worker, result, now, names, snapshot):
        waiting, messengers = 0, []
        for directory in pilots.handoff_dirs(worker.access_point, worker.n_pilots):  # each pilot's own files
            messenger = Messenger(directory, names, self.ctx.transport(queue), snapshot,
                                  root=posixpath.dirname(worker.access_point), limit=queue.pilot.handoff_max_bytes,
                                  server=self.ctx.server, scratch=self.ctx.scratch_dir)
            messengers.append(messenger)
            try:
                self.read_files(queue, worker, messenger, now)
                ended = messenger.kill_worker_requested() or messenger.pilot_exited()
                waiting += not ended and not messenger.panda_ids()
            except MessengerError as exc:
                log.error("queue %s worker %s: %s", queue.name, worker.worker_id, exc)
                models.Worker.update(diag=str(exc)[:2000]).where(
                    models.Worker.worker_id == worker.worker_id).execute()
        if worker.n_pilots > 1 and waiting != worker.waiting_pilots:  # what the adjuster counts as waiting
            models.Worker.update(waiting_pilots=waiting).where(models.Worker.worker_id == worker.worker_id).execute()
        if result is None or not worker.batch_id:
            return
        native = result.states.get(worker.batch_id)
        if native is None:
            self.lost(queue, worker, now)
            return
        if native.diag and native.diag != worker.last_plugin_output:
            models.Worker.update(last_plugin_output=native.diag[:4000]).where(
                models.Worker.worker_id == worker.worker_id).execute()
        target = WorkerStatus(native.state)
        if target == worker.status:
            return
        if target in QUEUED and worker.status not in (WorkerStatus.SUBMITTED.value, WorkerStatus.MISSING.value):
            return  # the pilot asked for a job (ready), or a running worker's job was requeued: kept as it is
        reason = f"batch system: {native.diag}" if native.diag else f"batch system says {target}"
        if worker.status == WorkerStatus.MISSING.value:
            reason = f"batch job {worker.batch_id} found again; {reason}"
        error = None
        if target == WorkerStatus.FAILED and native.exit_code == PILOT_NO_JOB:  # a pilot that found no job did no harm
            target, reason = WorkerStatus.FINISHED, f"{reason} (the pilot found no job)"
        elif target == WorkerStatus.FAILED:
            error = WorkerError.WALLTIME if native.walltime_exceeded else WorkerError.BATCH_JOB_FAILED
        if target in FINAL and worker.kill_reason and target != WorkerStatus.FINISHED:
            target, reason, error = WorkerStatus.CANCELLED, f"killed: {worker.kill_reason} ({reason})", None
        delivered = self.delivered(worker, native, messengers, now) if target in FINAL else None
        self.end_or_change(queue, worker, target, reason, now, native.diag if target in FINAL else None, error,
                           delivered)

    @staticmethod
    def delivered(worker, native, messengers, now):
        """What the ended allocation delivered: the time the scheduler charged (its own figure, else harvester's
        start and end times), and the sum of its pilots' usage records (harvester.handoff.usage)."""
        elapsed, source = native.elapsed_s, native.charge_source
        if elapsed is None and worker.start_time is not None:
            elapsed, source = max(0.0, (now - worker.start_time).total_seconds()), "harvester start/end"
        values = {} if elapsed is None else {"elapsed_s": elapsed, "charge_source": source}
        figures = usage.summed([usage.read(m) for m in messengers], worker.n_pilots, elapsed)
        if figures is not None:
            values.update(figures.columns())
        return values or None

    def lost(self, queue, worker, now):
        """A batch job the batch system does not list (any more) is ``missing``: looked up again every cycle for
        the grace period (a restarted scheduler, accounting that lags behind), and only then failed."""
        grace = self.ctx.settings.missing_grace_s
        if worker.status != WorkerStatus.MISSING.value:
            self.changed += bool(change_worker_status(
                worker, WorkerStatus.MISSING, f"the batch system does not know batch job {worker.batch_id}: looked "
                f"up again for {grace:.0f} s before it is given up", now))
            return
        if (now - (worker.status_changed or now)).total_seconds() >= grace:
            self.end_or_change(queue, worker, WorkerStatus.FAILED, f"the batch system has not known batch job "
                               f"{worker.batch_id} for {grace:.0f} s", now,
                               f"batch job {worker.batch_id} vanished", WorkerError.VANISHED)

    def end_or_change(self, queue, worker, target, reason, now, diag, error, values=None):
        """One status change; a worker that ended no longer holds its jobs (in the same transaction). ``values``:
        columns that go with it (the time the scheduler charged for an ended job)."""
        with models.database.atomic():
            changed = change_worker_status(worker, target, reason, now, diag=diag, error_code=error, values=values)
            if changed and target in FINAL:
                end_jobs(worker.worker_id)
        if changed:
            self.changed += 1
            self.ended += target in FINAL
            self.note_end(queue, target, diag, now)

    def note_end(self, queue, target, diag, now):
        """Pilots that keep failing (a broken pilot, an unreachable server) back their queue off instead of being
        replaced every cycle; a worker that finishes clears it."""
        if target == WorkerStatus.FINISHED:
            self.queue_succeeded(queue.name)
        elif target == WorkerStatus.FAILED:
            last = [status for (status,) in models.Worker.select(models.Worker.status)
                    .where(models.Worker.queue == queue.name,
                           models.Worker.status.in_([WorkerStatus.FINISHED.value, WorkerStatus.FAILED.value]))
                    .order_by(models.Worker.end_time.desc(), models.Worker.worker_id.desc())
                    .limit(FAILED_IN_A_ROW).tuples()]
            if len(last) == FAILED_IN_A_ROW and set(last) == {WorkerStatus.FAILED.value}:
                self.queue_failed(queue.name, f"{FAILED_IN_A_ROW} workers in a row failed (last: {diag})", now)

    # ---- the pilot's files --------------------------------------------------------------------------------------
    def read_files(self, queue, worker, messenger, now):
        seen = messenger.last_heartbeat()
        if seen is not None:
            seen = datetime.datetime.fromtimestamp(seen, datetime.timezone.utc).replace(tzinfo=None)
            if worker.last_seen is None or seen > worker.last_seen:
                self.seen[worker.worker_id] = seen  # written with the queue's others (record_seen)
                worker.last_seen = seen
        self.take_listed_ids(queue, worker, messenger, now)
        if pilots.file_mode(queue):
            self.relay_file_mode(queue, worker, messenger, now)
        else:
            self.take_outbox(worker, messenger, now)
        if queue.mapType != "NoJob" and worker.status not in {s.value for s in FINAL}:
            self.answer_request(queue, worker, messenger, now)

    def take_listed_ids(self, queue, worker, messenger, now):
        """The PandaIDs the pilot lists. Pull mode: the pilot's word is all harvester has (kept to count the pilots
        that took a job and for `harvester explain`; never reported as the worker's: the server knows what it
        dispatched to whom). Push mode: harvester bound the jobs itself; any other id is ignored, said once."""
        listed = messenger.panda_ids()
        if queue.mapType == "NoJob":
            # a pilot's list only grows: only the PandaIDs not recorded at an earlier cycle are inserted
            known = self.linked_before.get(messenger.directory, set())
            new = [panda_id for panda_id in listed if panda_id not in known]
            self.new_links += [(messenger.directory, panda_id, worker.worker_id) for panda_id in new]
            self.linked[messenger.directory] = known | set(new)
            return
        if not listed:
            return
        bound = {pid for (pid,) in models.JobWorker.select(models.JobWorker.panda_id)
                 .where(models.JobWorker.worker_id == worker.worker_id).tuples()}
        for panda_id in listed:
            if panda_id not in bound:
                self.note_foreign(worker, panda_id, f"{messenger.path('pandaids')} lists it", now)

    def record_seen(self, now):
        """What a cycle learnt of a queue's pilots, in one transaction of two statements (not two per worker): the
        heartbeats seen (``last_seen``) and the new PandaIDs pull-mode pilots list (one multi-row insert for all the
        queue's pilots). If it fails, the PandaIDs are taken again next cycle."""
        seen, links = self.seen, self.new_links
        self.seen, self.new_links = {}, []
        if not seen and not links:
            return
        column = models.Worker.last_seen
        try:
            with models.database.atomic():
                if seen:
                    rows = [(column.db_value(when), worker_id) for worker_id, when in seen.items()]
                    models.database.connection().executemany(_SET_LAST_SEEN, rows)
                if links:
                    link_jobs([(panda_id, worker_id) for _, panda_id, worker_id in links], now)
        except Exception:
            for directory, panda_id, _ in links:
                self.linked.get(directory, set()).discard(panda_id)
            raise

    def note_foreign(self, worker, panda_id, how, now):
        """A pilot that speaks for a job harvester did not bind to its worker: ignored, and said once."""
        if (worker.worker_id, panda_id) in self.noted:
            return
        self.noted.add((worker.worker_id, panda_id))
        reason = (f"the pilot speaks for job {panda_id}, which harvester did not bind to this worker ({how}): "
                  "ignored, never reported")
        log.warning("queue %s worker %s: %s", worker.queue, worker.worker_id, reason)
        note_worker(worker, reason, now)

    def answer_request(self, queue, worker, messenger, now):
        """Late binding: a pilot that asks for another job (worker_requestjob.json) gets the queue's next held job."""
        wanted = messenger.job_requested()
        if wanted <= 0 or messenger.exists("job"):
            return
        with models.database.atomic():
            free = (models.HeldJob.select(models.HeldJob.panda_id)
                    .where(models.HeldJob.queue == queue.name, models.HeldJob.worker_id.is_null())
                    .order_by(models.HeldJob.panda_id).limit(wanted))
            models.HeldJob.update(worker_id=worker.worker_id).where(
                models.HeldJob.panda_id.in_(free), models.HeldJob.worker_id.is_null()).execute()
            held = list(models.HeldJob.select().where(models.HeldJob.worker_id == worker.worker_id,
                                                      models.HeldJob.status == HeldJobStatus.FETCHED.value))
            for job in held:
                models.JobWorker.insert(panda_id=job.panda_id, worker_id=worker.worker_id, time=now) \
                    .on_conflict_ignore().execute()
        if hand_over(queue, messenger, held, self.ctx.server.fetch):
            self.queued += 1
            log.info("queue %s worker %s asked for a job: given %s", queue.name, worker.worker_id,
                     ", ".join(str(job.panda_id) for job in held))

    def take_outbox(self, worker, messenger, now):
        """A pilot that could not reach the server spooled its reports in the access point: forward them."""
        repeated = []
        for path, entry in messenger.claim_outbox(self.outbox_owner):
            params = entry.get("params") or {}
            heartbeat = entry.get("kind") == "heartbeat"
            if not enqueue(params, "job_heartbeat" if heartbeat else "job_final", worker.worker_id, now,
                           source_path=path):
                repeated.append(path)  # the same report is already queued (a claim repeated after a crash)
            else:
                self.queued += 1
        if repeated:
            forget(messenger.transport, messenger.root, repeated)

    def relay_file_mode(self, queue, worker, messenger, now):
        """A pilot with no network: heartbeats on its behalf while its job runs, its final report when it ends;
        only for the jobs harvester bound to this worker."""
        bound = {job.panda_id: job for job in models.HeldJob.select().where(
            models.HeldJob.worker_id == worker.worker_id)}
        for final in messenger.final_reports():
            if final.panda_id is None:  # worker_attributes.json refused: whichever job it spoke for fails
                self.refuse_pilot(queue, worker, bound, final.refusal, now)
                continue
            held = bound.get(final.panda_id)
            if held is None:
                self.note_foreign(worker, final.panda_id, f"{final.path} reports it", now)
                continue
            if held.status == HeldJobStatus.DONE.value:
                continue
            report = self.final_report(queue, messenger, final, held)
            self.end_held_job(held, report, worker, now)
        try:
            attributes = messenger.read_attributes()  # garbage raises: the worker's diag says so
        except HandoffRefused:
            return  # refused above: the jobs it spoke for failed
        if not attributes or "jobId" not in attributes:
            return
        try:
            panda_id = int(attributes["jobId"])
        except (TypeError, ValueError):
            return
        held = models.HeldJob.get_or_none(models.HeldJob.panda_id == panda_id,
                                          models.HeldJob.worker_id == worker.worker_id)
        state = attributes.get("state") or attributes.get("jobStatus")
        if held is None or held.status == HeldJobStatus.DONE.value or state not in ("starting", "running"):
            return
        due = held.last_heartbeat is None or (now - held.last_heartbeat).total_seconds() >= queue.pilot.heartbeat
        changed = held.last_report != json.dumps({"state": state})
        if due or changed:
            params = {k: v for k, v in attributes.items() if k not in ("jobStatus", "xml")}
            params["state"] = state
            with models.database.atomic():
                if change_held_jobs(models.HeldJob.panda_id == panda_id, HeldJobStatus.RUNNING,
                                    {"last_heartbeat": now, "last_report": json.dumps({"state": state})}):
                    enqueue(params, "job_heartbeat", worker.worker_id, now)
                    self.queued += 1

    def final_report(self, queue, messenger, final, held):
        """The final update harvester sends for a job: the pilot's, with its outputs staged out and verified; or a
        failure saying why harvester refused the pilot's report (1008) or one of its outputs (1137)."""
        if final.refusal:
            return failure(held, pilot_errors.GENERALERROR, f"harvester refused the pilot's report: {final.refusal}")
        if final.output_error:
            return failure(held, pilot_errors.STAGEOUTFAILED, f"harvester refused the outputs: {final.output_error}")
        missing = staging.missing_outputs(held.definition, final)
        if missing:
            return failure(held, pilot_errors.MISSINGOUTPUTFILE, f"the pilot reported the job finished, but "
                           f"{messenger.names['event_status']} lists no {', '.join(missing)}: expected output missing")
        try:
            outputs = staging.stage_out(messenger, final, queue.storage, self.ctx.server, self.ctx.scratch_dir,
                                        output_scopes(held))
        except HandoffRefused as exc:
            return failure(held, pilot_errors.STAGEOUTFAILED, f"harvester refused an output: {exc}")
        params = dict(final.params)
        if outputs:
            params["xml"] = json.dumps({posixpath.basename(e["path"]): {
                "guid": e.get("guid") or "", "fsize": e.get("fsize"), "adler32": e.get("chksum"),
                "surl": e["path"]} for e in outputs})
        return params

    def refuse_pilot(self, queue, worker, bound, refusal, now):
        """The pilot's current report cannot be read (a symlink, over the cap): the jobs it may speak for fail with
        the reason, and the worker is killed (its pilot is not to be trusted with another job)."""
        for held in bound.values():
            if held.status in (HeldJobStatus.FED.value, HeldJobStatus.RUNNING.value):
                report = failure(held, pilot_errors.GENERALERROR, f"harvester refused the pilot's report: {refusal}")
                self.end_held_job(held, report, worker, now)
        log.error("queue %s worker %s: %s; the worker is killed", queue.name, worker.worker_id, refusal)
        kill_workers(None, [worker.worker_id], f"harvester refused the pilot's files: {refusal}"[:2000], self.ctx)

    def end_held_job(self, held, report, worker, now):
        """A held job's final report queued and the job harvester's no more, together (once: the conditional
        update says who won)."""
        with models.database.atomic():
            if change_held_jobs(models.HeldJob.panda_id == held.panda_id, HeldJobStatus.DONE,
                                {"last_report": json.dumps(report)[:100000]}):
                enqueue(report, "job_final", worker.worker_id, now)
                self.queued += 1


def failure(held, code, diag):
    """A final update failing a held job, harvester's word instead of the pilot's."""
    return {"jobId": held.panda_id, "attemptNr": held.attempt_nr, "state": "failed", "pilotErrorCode": code,
            "pilotErrorDiag": diag[:500], "transExitCode": 0}


def output_scopes(held):
    """lfn -> scope of a held job's outputs and log, from its definition."""
    try:
        job = Job(json.loads(held.definition))
    except (ValueError, TypeError):
        return {}
    return {spec.lfn: spec.scope for spec in job.outputs + ([job.log] if job.log else [])}


def enqueue(params, kind, worker_id, now, source_path=None):
    """Put a job report in harvester's outbox. A final report is kept once per (job, attempt); a heartbeat
    replaces an older unsent heartbeat of the same job."""
    panda_id, attempt = int(params["jobId"]), int(params.get("attemptNr") or 0)
    if kind == "job_final":
        key = f"job:{panda_id}:{attempt}:final"
        if models.Outbox.select().where(models.Outbox.key == key).exists():
            return False
    else:
        key = f"job:{panda_id}:heartbeat"
        models.Outbox.delete().where(models.Outbox.key == key, models.Outbox.rejected == False).execute()  # noqa: E712
    models.Outbox.create(kind=kind, key=key, payload=json.dumps(params), worker_id=worker_id,
                         source_path=source_path, created=now)
    return True


def link_jobs(pairs, now):
    """JobWorker rows for (PandaID, worker id) pairs, one statement for all; a pair linked already stays as it is.
    Plain parameters: peewee's multi-row insert rendered each value through the model layer, which cost more CPU
    than the statement while short jobs flowed (bench/README.md, round 8)."""
    when = models.JobWorker.time.db_value(now)
    models.database.connection().executemany(_LINK_JOB, [(panda_id, worker_id, when) for panda_id, worker_id in pairs])
