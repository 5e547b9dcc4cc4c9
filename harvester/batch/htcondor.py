"""HTCondor through the ``htcondor2`` bindings, against the local schedd or one located through a pool's collector.

Per cycle and queue: ONE submit transaction for all new workers (one cluster, a proc per worker, each worker's
values as item data: :mod:`harvester.batch.condor_submit`), ONE query of the live jobs plus ONE history query for
the ids that left, ONE ``Remove`` for cancels and for jobs held longer than ``batch.held_timeout`` (the hold reason
becomes the diag). The walltime is a ``periodic_remove`` the schedd evaluates; a job it removed is reported as such.
Every job carries the worker's id and access point (``MinipandaWorker``, ``MinipandaAccessPoint``):
:meth:`HTCondorBatch.find` recovers a submission whose answer a crash lost. How the schedd is reached and
authenticated: :mod:`harvester.batch.condor_schedd`; the queries and removals of many jobs in one call each:
:mod:`harvester.batch.condor_jobs`.

With file transfer (``batch.file_transfer``) the pilot's stderr (its log) and the files it left at the top of its
work area come back into the access point when harvester retrieves the output of the completed job.
"""
import functools
import time

import htcondor2

from harvester.batch import condor_jobs, condor_submit
from harvester.batch.base import OK, RETRY, BatchError, BatchStatus, CancelResult, QueryResult, SubmitResult
from harvester.batch.condor_schedd import ScheddAccess
from harvester.batch.jobscript import ScriptBatch

STATES = {1: ("submitted", "idle"), 2: ("running", "running"), 3: ("cancelled", "removed"),
          4: ("finished", "completed"), 5: ("submitted", "held"), 6: ("running", "transferring output"),
          7: ("idle", "suspended")}


class HTCondorBatch(ScriptBatch):
    """HTCondor (vanilla universe): access points on a file system the schedd and execute nodes share, or
    ``batch.file_transfer``."""

    name, batch_id = "htcondor", condor_jobs.JOB_ID
    schedd_class, collector_class = htcondor2.Schedd, htcondor2.Collector  # tests put a stand-in schedd here
    clock = staticmethod(time.time)

    @functools.cached_property
    def access(self):
        return ScheddAccess(self.queue, lambda *location: self.schedd_class(*location),
                            lambda pool: self.collector_class(pool))

    def render(self, worker):
        return super().render(condor_submit.relocated(self.queue, worker))

    def submit(self, workers):
        results, items = {}, []
        for worker in workers:
            try:
                items.append((worker, condor_submit.item(self, worker)))
            except BatchError as exc:
                results[worker.worker_id] = SubmitResult(worker.worker_id, exc.status, message=str(exc))
        if items:
            results.update(self._submit(items))
        return [results[worker.worker_id] for worker in workers]

    def _submit(self, items):
        """One transaction for every worker (one cluster); with file transfer, their inputs spooled after it."""
        spool = self.queue.batch.file_transfer
        try:
            with self.access.call("submit") as schedd:
                done = schedd.submit(condor_submit.description(self), spool=spool,
                                     itemdata=iter([i for _, i in items]))
                if spool:  # a spool that fails leaves no job waiting for its input: the schedd removes them
                    schedd.spool(done)
        except BatchError as exc:
            return {w.worker_id: SubmitResult(w.worker_id, exc.status, message=str(exc)) for w, _ in items}
        cluster, first = done.cluster(), done.first_proc()
        return {w.worker_id: SubmitResult(w.worker_id, OK, f"{cluster}.{first + n}",
                                          f"HTCondor job {cluster}.{first + n}" + (" (input spooled)" if spool else ""))
                for n, (w, _) in enumerate(items)}

    def status(self, batch_ids):
        """The jobs' ads (:func:`condor_jobs.ads`) and their states; jobs held too long removed, the output of
        completed ones fetched back (file transfer), all in the one call to the schedd."""
        ids, batch = self.valid_ids(batch_ids), self.queue.batch
        if not ids:
            return QueryResult(OK)
        try:
            with self.access.call("query") as schedd:
                live, ads = condor_jobs.ads(schedd, ids)
                states = {b: native_state(ad) for b, ad in ads.items()}
                states.update(condor_jobs.remove_overdue(schedd, live, states, batch.held_timeout, self.clock()))
                if batch.file_transfer:
                    states.update(condor_jobs.retrieve(schedd, live, states))
        except BatchError as exc:
            return QueryResult(exc.status, message=str(exc))
        return QueryResult(OK, states)

    def cancel(self, batch_ids):
        valid = self.valid_ids(batch_ids)
        results = {str(b): (OK, "not an HTCondor job id") for b in batch_ids if str(b) not in valid}
        if not valid:
            return CancelResult(results)
        try:
            with self.access.call("remove") as schedd:
                counts, refused = condor_jobs.remove(schedd, valid, "cancelled by harvester")
        except BatchError as exc:
            return CancelResult({**results, **{b: (exc.status, str(exc)) for b in valid}})
        return CancelResult({**results, **{b: (RETRY if refused else OK, f"remove: {counts}") for b in valid}})

    def find(self, access_point):
        """The job submitted for ``access_point`` (its MinipandaAccessPoint attribute), live or in the history."""
        try:
            with self.access.call("query") as schedd:
                return condor_jobs.find(schedd, access_point)
        except BatchError as exc:
            raise BatchError(f"cannot look up {access_point}: {exc}", exc.status) from None


def native_state(ad):
    """One job's :class:`BatchStatus` from its ClassAd (live or history)."""
    code, exit_code = ad.get("JobStatus"), None
    state, meaning = STATES.get(code, ("submitted", "unknown status"))
    words = [f"HTCondor JobStatus {code} ({meaning})"]
    if code == 4:
        exit_code = None if ad.get("ExitBySignal") else ad.get("ExitCode")
        state = "finished" if exit_code == 0 else "failed"
        words.append(f"killed by signal {ad.get('ExitSignal')}" if ad.get("ExitBySignal") else f"exit code {exit_code}")
    elif code == 3 and "PeriodicRemove" in str(ad.get("RemoveReason", "")):
        state = "failed"  # our walltime limit, like a batch system's TIMEOUT: the pilot did not end by itself
        words.append("walltime exceeded")
    reason = {5: "HoldReason", 3: "RemoveReason"}.get(code)  # a released or ended job keeps stale ones
    if reason and ad.get(reason):
        words.append(f"{reason}: {ad[reason]}")
    return BatchStatus(state, "; ".join(words), exit_code, str(code), "walltime exceeded" in words)

