"""The submitter: make the workers the adjuster decided on, prepare their access points, hand them to the batch
system, and record what it said.

Per queue, in this order (each step committed before the next, so a crash at any point is recoverable)::

    create     to_submit worker rows (push mode: each bound to its jobs), status submitted, phase pending
    prepare    access point, pilot zipapp, a pilot token minted for this one worker, queuedata, the job script
               (push: job file, transformation, inputs through the messenger)
    submit     phase submitting + attempt counted, then ONE plugin.submit() for the queue's workers
    record     ok -> batch id, phase done; retry -> pending again after a backoff, missed after
               maxSubmissionAttempts; fatal -> missed

A worker left in phase ``submitting`` by a crash is never submitted again: :func:`recover_interrupted` asks the
plugin whether the batch system has it, and otherwise gives it up as missed.
"""
import datetime
import json
import logging
import os
import posixpath

from harvester import db, models, shapes
from harvester.handoff import pilots
from harvester.agents.base import Agent
from harvester.batch.base import FATAL, OK, PilotLaunch, WorkerSpec
from harvester.errors import ServerError
from harvester.handoff.messenger import Messenger
from harvester.states import (HeldJobStatus, SubmitPhase, WorkerStatus, change_submit_phase, change_worker_status,
                              create_worker)
from harvester.steps import hand_over, release_jobs
from harvester.transport import TransportError
from queueconfig import allocation
from queueconfig.schedconfig import queuedata

log = logging.getLogger(__name__)
RETRY_WAIT_S = 30
TOKEN_MARGIN_S = 3600  # a pilot token outlives its worker's walltime by this much


class Submitter(Agent):
    name = "submitter"

    def __init__(self, context):
        super().__init__(context)
        self.zipapps = set()  # (transport, workers directory, zipapp) already sent to the submit host

    def run_once(self, now):
        self.submitted = 0
        recover_interrupted(self.ctx, now)
        self.each_queue(now, lambda queue: self.submit_queue(queue, now))
        if self.submitted:  # new workers to follow, and to report to the server
            self.ctx.wake("monitor")
            self.ctx.wake("propagator")
        return self.submitted

    # ---- create -------------------------------------------------------------------------------------------------
    def create_workers(self, queue, now):
        """Turn the adjuster's number into worker rows (push: bound to fetched jobs), in one transaction."""
        if db.queue_state(queue.name).to_submit <= 0:  # most cycles: nothing decided, no transaction
            return 0
        shape = self.backfill_shape(queue, now)  # asks the scheduler: before the transaction
        with models.database.atomic():
            state = db.queue_state(queue.name)
            wanted = state.to_submit
            if wanted <= 0 or queue.status == "offline":
                return 0
            models.QueueState.update(to_submit=0).where(models.QueueState.queue == queue.name).execute()
            chunks = [[]] * wanted
            if queue.mapType != "NoJob":
                per_worker = queue.jobsPerWorker if queue.mapType == "ManyToOne" else 1
                held = list(models.HeldJob.select().where(models.HeldJob.queue == queue.name,
                                                          models.HeldJob.worker_id.is_null())
                            .order_by(models.HeldJob.panda_id).limit(wanted * per_worker))
                chunks = [held[i:i + per_worker] for i in range(0, len(held), per_worker)][:wanted]
            walltime = shape.walltime_s if shape else pilots.worker_walltime(queue)
            for jobs in chunks:
                worker = create_worker(now, f"created: adjuster decided {wanted} new workers"
                                       + (f", backfill shape {shape.label()}" if shape else ""), queue=queue.name,
                                       map_type=queue.mapType, walltime_s=walltime,
                                       **worker_size(queue, jobs, shape.nodes if shape else None))
                for job in jobs:
                    models.HeldJob.update(worker_id=worker.worker_id).where(
                        models.HeldJob.panda_id == job.panda_id).execute()
                    models.JobWorker.insert(panda_id=job.panda_id, worker_id=worker.worker_id, time=now) \
                        .on_conflict_ignore().execute()
        return len(chunks)

    def backfill_shape(self, queue, now):
        """With batch.shape backfill and workers to make: the shape the scheduler would start soonest among those
        that fit the waiting work (:mod:`harvester.shapes`), recorded for ``harvester explain``; else None."""
        state = db.queue_state(queue.name)
        if queue.batch.shape != "backfill" or state.to_submit <= 0 or queue.status == "offline":
            return None
        inputs = (json.loads(state.decision) if state.decision else {}).get("inputs", {})
        if queue.mode == "pull":
            wanted = (inputs.get("activated") or 0) - (inputs.get("jobless_pilots") or 0)
        else:
            wanted = inputs.get("unbound_jobs") or 0
        per_node = allocation.pilots_per_node(queue)
        cores, memory = queue.resources.corecount * per_node, queue.resources.maxrss * per_node
        plugin = self.ctx.plugin(queue)
        chosen, decision = shapes.choose(queue, lambda nodes, walltime: plugin.start_estimate(
            nodes, cores, memory, walltime), pilots.worker_walltime(queue), wanted)
        decision["time"] = now.isoformat(sep=" ", timespec="seconds")
        models.QueueState.update(shape=json.dumps(decision)).where(models.QueueState.queue == queue.name).execute()
        log.info("queue %s: backfill shape %s", queue.name, shapes.one_line(decision))
        return chosen

    # ---- prepare and submit -------------------------------------------------------------------------------------
    def submit_queue(self, queue, now):
        self.create_workers(queue, now)
        due = ((models.Worker.queue == queue.name) & (models.Worker.submit_phase == SubmitPhase.PENDING.value)
               & (models.Worker.status == WorkerStatus.SUBMITTED.value)
               & (models.Worker.next_attempt.is_null() | (models.Worker.next_attempt <= now)))
        workers = db.claim_workers(self.owner, due, self.ctx.settings.lease_s, now)
        if not workers:
            return
        try:
            plugin = self.ctx.plugin(queue)
            ready = []
            for worker in workers:
                spec = self.prepare(queue, worker, plugin, now)
                if spec is not None:
                    ready.append((worker, spec))
            if not ready:
                return
            with models.database.atomic():  # committed before the batch system hears of them
                for worker, _ in ready:
                    change_submit_phase(worker, SubmitPhase.SUBMITTING, f"handed to {queue.batch.system}", now,
                                        {"submission_attempts": models.Worker.submission_attempts + 1,
                                         "submit_time": now})
            try:
                results = {r.worker_id: r for r in plugin.submit([spec for _, spec in ready])}
            except Exception as exc:  # a plugin fault is that queue's problem, recorded on each worker
                log.exception("queue %s: batch plugin submit raised", queue.name)
                results = {}
                failure = f"plugin raised {type(exc).__name__}: {exc}"
            else:
                failure = "the plugin returned no result for this worker"
            bad = 0
            for worker, _ in ready:
                result = results.get(worker.worker_id)
                bad += not self.record(queue, worker, result, failure, now)
            if bad:
                first = next((w.diag for w, _ in ready if w.diag), "") or failure
                self.queue_failed(queue.name, f"{bad} of {len(ready)} submissions failed: {first}", now)
            else:
                self.queue_succeeded(queue.name)
        finally:
            db.release_workers(self.owner, [w.worker_id for w in workers])

    def prepare(self, queue, worker, plugin, now):
        """Everything the worker needs before the batch system sees it; None when it must wait or was given up."""
        transport = self.ctx.transport(queue)
        access_point = self.ctx.access_point(queue, worker.worker_id)
        root = os.path.dirname(access_point)
        try:
            dirs = pilots.handoff_dirs(access_point, worker.n_pilots)
            messengers = [Messenger(directory, queue.pilot.handoff, transport, root=root,
                                    limit=queue.pilot.handoff_max_bytes, server=self.ctx.server,
                                    scratch=self.ctx.scratch_dir) for directory in dirs]
            data = queuedata(queue)
            if pilots.file_mode(queue):  # harvester stages in and out: the pilot works in its access point only
                data.update(input_dir="", output_dir="")
            self.place_pilot(queue, worker, transport, root, access_point,
                             [op for messenger in messengers for op in messenger.setup_ops(data)])
            if queue.mapType != "NoJob":
                self.feed(queue, worker, messengers)
            url, walltime, python = self.ctx.server.url, worker.walltime_s, self.ctx.settings.pilot_python or None
            env = pilots.environment(queue, access_point, url, walltime, self.ctx.harvester_id, worker.worker_id)
            launches = []
            for directory in dirs if len(dirs) > 1 else ():  # several pilots: each its own directory
                own = pilots.environment(queue, access_point, url, walltime, self.ctx.harvester_id,
                                         worker.worker_id, handoff_dir=directory)
                launches.append(PilotLaunch(directory, pilots.command(queue, access_point, url, walltime, python,
                                                                      handoff_dir=directory),
                                            {name: value for name, value in own.items() if env.get(name) != value}))
            spec = WorkerSpec(
                worker_id=worker.worker_id, access_point=access_point,
                argv=pilots.command(queue, access_point, url, walltime, python), environment=env,
                cores=worker.cores, memory_mb=worker.memory_mb, walltime_s=worker.walltime_s,
                pilots=tuple(launches), nodes=worker.nodes)
            plugin.write_script(spec)
        except ServerError as exc:
            self.retry_later(queue, worker, f"preparing the worker: {exc}", now, fatal=not exc.transient)
            return None
        except Exception as exc:  # a broken access point or script is this worker's problem, not harvester's
            log.exception("queue %s worker %s: preparation failed", queue.name, worker.worker_id)
            self.retry_later(queue, worker, f"preparing the worker: {type(exc).__name__}: {exc}", now)
            return None
        models.Worker.update(access_point=access_point).where(models.Worker.worker_id == worker.worker_id).execute()
        return spec

    def place_pilot(self, queue, worker, transport, root, access_point, setup):
        """The access point (made without following a symlink below the workers directory), the pilot zipapp (sent
        once per version to ``<workers>/.pilot/`` and copied from there, verified), a pilot token minted for this
        worker alone (0600) and the pilots' queuedata (``setup``): one call to the submit host."""
        name = posixpath.basename(access_point)
        ops = [{"op": "mkdir", "root": root, "path": name, "mode": 0o750}]
        if not queue.pilot.command:
            ops.append({"op": "copy", "src_root": root, "src": self.remote_zipapp(transport, root),
                        "dst_root": root, "dst": f"{name}/{pilots.ZIPAPP_FILE}", "mode": 0o644})
        minted = None
        if not pilots.file_mode(queue) and not worker.pilot_token_jti:  # a retry keeps the token already placed
            minted = self.mint_token(queue, worker)
            ops.append({"op": "write", "root": root, "path": f"{name}/{pilots.TOKEN_FILE}",
                        "data": minted["token"].encode(), "mode": 0o600})
        ops += setup
        for op, result in zip(ops, transport.files(ops)):
            if not result.get("ok"):
                raise TransportError(f"preparing {access_point} ({op['op']}): {result.get('error')}")
        if minted is not None:  # recorded once it is in place: a failed write mints a new one next time
            models.Worker.update(pilot_token_jti=minted["jti"]).where(
                models.Worker.worker_id == worker.worker_id).execute()
            worker.pilot_token_jti = minted["jti"]

    def mint_token(self, queue, worker):
        """A pilot token for this worker alone and the jobs it holds (the server binds it to them): the server's
        ``{"token", "jti", "expires"}``."""
        held = [panda_id for (panda_id,) in models.HeldJob.select(models.HeldJob.panda_id)
                .where(models.HeldJob.worker_id == worker.worker_id).tuples()]
        return self.ctx.server.mint_pilot_token(worker.worker_id, queue.name, worker.walltime_s + TOKEN_MARGIN_S,
                                                held)

    def remote_zipapp(self, transport, root):
        """The pilot zipapp's path below ``root`` on the submit host, sent there (verified) on first use."""
        local = pilots.zipapp_path(self.ctx.home)
        rel = f"{pilots.REMOTE_ZIPAPP_DIR}/{os.path.basename(local)}"
        key = (id(transport), root, rel)
        if key not in self.zipapps:  # (the send makes the workers directory when it is not there yet)
            transport.send(local, root, rel, 0o644)
            self.zipapps.add(key)
        return rel

    def feed(self, queue, worker, messengers):
        """Push mode: the worker's jobs, their transformations and inputs go into the access point; a worker of
        several pilots deals them out in turn, one job file per pilot directory."""
        held = list(models.HeldJob.select().where(models.HeldJob.worker_id == worker.worker_id,
                                                  models.HeldJob.status == HeldJobStatus.FETCHED.value)
                    .order_by(models.HeldJob.panda_id))
        for index, messenger in enumerate(messengers):
            hand_over(queue, messenger, held[index::len(messengers)], self.ctx.server.fetch)

    # ---- record -------------------------------------------------------------------------------------------------
    def record(self, queue, worker, result, failure, now):
        if result is not None and result.status == OK and result.batch_id:
            change_submit_phase(worker, SubmitPhase.DONE,
                                f"accepted by {queue.batch.system} as batch job {result.batch_id}", now,
                                {"batch_id": result.batch_id, "next_attempt": None,
                                 "last_plugin_output": (result.message or "")[:4000]})
            log.info("queue %s: worker %s submitted as batch job %s", queue.name, worker.worker_id,
                     result.batch_id)
            self.submitted += 1
            return True
        message = result.message if result is not None else failure
        models.Worker.update(last_plugin_output=(message or "")[:4000]).where(
            models.Worker.worker_id == worker.worker_id).execute()
        self.retry_later(queue, worker, f"submission failed: {message}", now,
                         fatal=result is not None and result.status == FATAL, counted=True)
        return False

    def retry_later(self, queue, worker, message, now, fatal=False, counted=False):
        """Pending again after a wait, or missed when it cannot succeed or used up its attempts."""
        attempts = models.Worker.get_by_id(worker.worker_id).submission_attempts
        limit = queue.limits.maxSubmissionAttempts
        if fatal or (counted and attempts >= limit):
            why = "fatal" if fatal else f"{attempts} of {limit} attempts used"
            with models.database.atomic():
                change_worker_status(worker, WorkerStatus.MISSED, f"{message} ({why})", now, diag=message,
                                     phase=SubmitPhase.DONE)
                release_jobs(worker.worker_id)
            return
        wait = datetime.timedelta(seconds=RETRY_WAIT_S * max(1, attempts))
        change_submit_phase(worker, SubmitPhase.PENDING, f"attempt {attempts} of {limit}: {message}; retrying "
                                                          f"after {wait.seconds} s", now,
                            {"next_attempt": now + wait, "diag": message[:2000]})
        log.warning("queue %s worker %s: %s; retrying after %s", queue.name, worker.worker_id, message, wait)


def worker_size(queue, jobs=(), nodes=None):
    """nodes, pilots, cores and memory of a new worker of ``queue``: the queue's shape (nodes_per_worker, or the
    backfill shape's ``nodes``, x pilots per node, each pilot corecount cores and maxrss MB), or on a queue of
    multi-node jobs (max_job_nodes) the size its one job asks: ceil(coreCount / cores_per_node) nodes, maxrss MB on
    each."""
    res = queue.resources
    if res.max_job_nodes > 1 and jobs:
        cores = max(job.cores for job in jobs)
        nodes = min(allocation.job_nodes(queue, cores), res.max_job_nodes)
        cores = nodes * allocation.node_cores(queue) if nodes > 1 else max(cores, res.corecount)
        return {"nodes": nodes, "n_pilots": 1, "cores": cores, "memory_mb": res.maxrss * nodes}
    if nodes is None:
        nodes, n_pilots = allocation.nodes_per_worker(queue), pilots.per_worker(queue)
    else:
        n_pilots = 1 if queue.mapType == "OneToOne" else nodes * allocation.pilots_per_node(queue)
    return {"nodes": nodes, "n_pilots": n_pilots, "cores": res.corecount * n_pilots,
            "memory_mb": res.maxrss * n_pilots}


def recover_interrupted(context, now):
    """Workers a killed (or failed) submission left between 'plugin called' and 'answer recorded', and nobody
    holds: ask the plugin (never resubmit); what it cannot find is given up as missed, so a worker is never
    submitted twice. A plugin that cannot answer now (scheduler down) is asked again next cycle."""
    free = models.Worker.lease_owner.is_null() | (models.Worker.lease_expires < now)
    rows = list(models.Worker.select().where(models.Worker.submit_phase == SubmitPhase.SUBMITTING.value, free))
    for worker in rows:
        queue = context.queues.get(worker.queue)
        batch_id = None
        if queue is not None:
            try:
                batch_id = context.plugin(queue).find(worker.access_point or context.access_point(queue,
                                                                                                 worker.worker_id))
            except Exception as exc:  # "cannot tell" is not "not there": giving up now could run it twice
                log.warning("worker %s: cannot look up its interrupted submission yet: %s", worker.worker_id, exc)
                continue
        if batch_id:
            change_submit_phase(worker, SubmitPhase.DONE, f"submission interrupted by a harvester stop; found as "
                                                          f"batch job {batch_id}", now, {"batch_id": batch_id})
            log.warning("worker %s: interrupted submission recovered as batch job %s", worker.worker_id, batch_id)
        else:
            with models.database.atomic():
                change_worker_status(worker, WorkerStatus.MISSED, "harvester stopped while submitting and the batch "
                                     "system has no such job: given up, not resubmitted", now,
                                     diag="submission interrupted", phase=SubmitPhase.DONE)
                release_jobs(worker.worker_id)
    return len(rows)
