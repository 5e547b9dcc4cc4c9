"""HTCondor through the ``htcondor2`` bindings, against the local schedd or one located through a pool's collector.

Per cycle and queue: ONE submit transaction for all new workers (one cluster, a proc per worker, each worker's
values as item data: :mod:`harvester.batch.condor_submit`), ONE query of the live jobs plus ONE history query for
the ids that left, ONE ``Remove`` for cancels and for jobs held longer than ``batch.held_timeout`` (the hold reason
becomes the diag). The walltime is a ``periodic_remove`` the schedd evaluates; a job it removed is reported as such.
Every job carries the worker's id and access point (``MinipandaWorker``, ``MinipandaAccessPoint``):
:meth:`HTCondorBatch.find` recovers a submission whose answer a crash lost. How the schedd is reached and
authenticated: :mod:`harvester.batch.condor_schedd`.

With file transfer (``batch.file_transfer``) the pilot's stderr (its log) and the files it left at the top of its
work area come back into the access point when harvester retrieves the output of the completed job.
"""
import functools
import re
import time

import classad2
import htcondor2

from harvester.batch import condor_submit
from harvester.batch.base import OK, RETRY, BatchError, BatchStatus, CancelResult, QueryResult, SubmitResult
from harvester.batch.condor_schedd import ERRORS, ScheddAccess
from harvester.batch.jobscript import ScriptBatch

STATES = {1: ("submitted", "idle"), 2: ("running", "running"), 3: ("cancelled", "removed"),
          4: ("finished", "completed"), 5: ("submitted", "held"), 6: ("running", "transferring output"),
          7: ("idle", "suspended")}
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason",
              "HoldReasonCode", "EnteredCurrentStatus", "RemoveReason"]
SPOOLING_INPUT = 16  # HoldReasonCode of a job waiting for its spooled input: a hold that ends by itself
_JOB_ID = re.compile(r"(\d+)\.(\d+)")


class HTCondorBatch(ScriptBatch):
    """HTCondor (vanilla universe): access points on a file system the schedd and execute nodes share, or
    ``batch.file_transfer``."""

    name = "htcondor"
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
        ids = [b for b in dict.fromkeys(str(b) for b in batch_ids) if _JOB_ID.fullmatch(b)]
        if not ids:
            return QueryResult(OK)
        try:
            with self.access.call("query") as schedd:
                live, ads = self._ads(schedd, ids)
                if len(ads) < len(ids):  # a job leaving the queue can be in neither for a moment: ask once more
                    again, more = self._ads(schedd, [b for b in ids if b not in ads])
                    live.update(again)
                    ads.update(more)
                states = {b: native_state(ads[b]) for b in ids if b in ads}
                live = {b: live[b] for b in ids if b in live}
                states.update(self._remove_overdue(schedd, live, states))
                states.update(self._retrieve(schedd, live, states))
        except BatchError as exc:
            return QueryResult(exc.status, message=str(exc))
        return QueryResult(OK, states)

    def _ads(self, schedd, ids):
        """ONE query of the live jobs, then ONE history query for those that left: (live ads, all ads) by id."""
        live = {b: ad for b, ad in _by_id(schedd.query(_member(ids), PROJECTION)).items() if b in ids}
        left = [b for b in ids if b not in live]
        past = _by_id(schedd.history(_exactly(left), PROJECTION, match=len(left))) if left else {}
        return live, {**past, **live}

    def _remove_overdue(self, schedd, live, states):
        """Jobs held longer than batch.held_timeout: removed in one call, failed with the hold reason."""
        limit, now = self.queue.batch.held_timeout, self.clock()
        overdue = [b for b, ad in live.items() if ad.get("JobStatus") == 5 and ad.get("HoldReasonCode") !=
                   SPOOLING_INPUT and now - ad.get("EnteredCurrentStatus", now) > limit]
        if not overdue:
            return {}
        try:
            answer = schedd.act(htcondor2.JobAction.Remove, overdue, reason=f"held longer than {limit} s")
            refused = {k: v for k, v in answer.items() if k in ("TotalError", "TotalPermissionDenied") and v}
            if refused:
                raise BatchError(f"the schedd refused: {refused}")
        except (*ERRORS, BatchError) as exc:  # still held: removed at a later cycle
            return {b: BatchStatus("submitted", f"{states[b].diag}; removal failed: {exc}") for b in overdue}
        return {b: BatchStatus("failed", f"held for {int(now - live[b]['EnteredCurrentStatus'])} s (limit {limit} s) "
                                         f"and removed; {states[b].diag}") for b in overdue}

    def _retrieve(self, schedd, live, states):
        """File transfer: a completed job waits in the queue until its output is fetched; fetch the output of every
        such job (one call) before its end is reported. A fetch that fails leaves the job running for now."""
        ended = [b for b, ad in live.items() if ad.get("JobStatus") == 4]
        if not ended or not self.queue.batch.file_transfer:
            return {}
        try:
            schedd.retrieve(ended)
        except ERRORS as exc:
            return {b: BatchStatus("running", f"{states[b].diag}; its output could not be fetched yet: {exc}")
                    for b in ended}
        return {}

    def cancel(self, batch_ids):
        ids = [str(b) for b in dict.fromkeys(batch_ids)]
        results = {b: (OK, "not an HTCondor job id") for b in ids if not _JOB_ID.fullmatch(b)}
        valid = [b for b in ids if b not in results]
        if not valid:
            return CancelResult(results)
        try:
            with self.access.call("remove") as schedd:
                ad = schedd.act(htcondor2.JobAction.Remove, valid, reason="cancelled by harvester")
        except BatchError as exc:
            return CancelResult({**results, **{b: (exc.status, str(exc)) for b in valid}})
        counts = {k: v for k, v in ad.items() if k.startswith("Total")}  # the schedd answers with totals only
        status = RETRY if counts.get("TotalError") or counts.get("TotalPermissionDenied") else OK
        return CancelResult({**results, **{b: (status, f"remove: {counts}") for b in valid}})

    def find(self, access_point):
        """The job submitted for ``access_point`` (its MinipandaAccessPoint attribute), live or in the history."""
        constraint = f"MinipandaAccessPoint == {classad2.quote(access_point)}"
        try:
            with self.access.call("query") as schedd:
                ads = schedd.query(constraint, ["ClusterId", "ProcId"]) or schedd.history(
                    constraint, ["ClusterId", "ProcId"], match=1)
        except BatchError as exc:
            raise BatchError(f"cannot look up {access_point}: {exc}", exc.status) from None
        return next(iter(_by_id(ads)), None)


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


def _member(ids):
    """The jobs of the clusters of ``ids`` (every proc of each: the live query filters)."""
    return "member(ClusterId, {" + ", ".join(sorted({_JOB_ID.fullmatch(b)[1] for b in ids}, key=int)) + "})"


def _exactly(ids):
    """Exactly the jobs ``ids``: the history is read newest first and stops after as many matches as ids, so a
    constraint matching other procs of their clusters could stop before it reached them."""
    procs = {}
    for batch_id in ids:
        cluster, proc = _JOB_ID.fullmatch(batch_id).groups()
        procs.setdefault(int(cluster), set()).add(int(proc))
    return " || ".join(f"ClusterId == {cluster} && member(ProcId, {{{', '.join(map(str, sorted(found)))}}})"
                       for cluster, found in sorted(procs.items()))


def _by_id(ads):
    """{"cluster.proc": ad}; an ad without integer ids or status is no answer about any job."""
    found = {}
    for ad in ads:
        keys = ("ClusterId", "ProcId", "JobStatus") if "JobStatus" in ad else ("ClusterId", "ProcId")
        bad = [key for key in keys if not isinstance(ad.get(key), int) or isinstance(ad.get(key), bool)]
        if bad:
            raise BatchError(f"the schedd answered with a malformed job ad ({', '.join(bad)} not an integer): "
                             f"{ad}"[:1000], RETRY)
        found[f"{ad['ClusterId']}.{ad['ProcId']}"] = ad
    return found
