"""HTCondor through the ``htcondor2`` bindings: a ``Submit`` description per worker (the executable is the job
script), sent to the local schedd or one located through a pool's collector; ONE query of the live jobs per cycle
plus the history of the ids that left; ``act(Remove)`` to cancel and for jobs held longer than
``batch.held_timeout``. Access points must be on a file system the execute nodes share (the handoff files)."""
import re
import time

import classad2
import htcondor2

from harvester.batch.base import FATAL, OK, RETRY, BatchError, BatchStatus, CancelResult, QueryResult, SubmitResult
from harvester.batch.jobscript import ScriptBatch

STATES = {1: ("submitted", "idle"), 2: ("running", "running"), 3: ("cancelled", "removed"),
          4: ("finished", "completed"), 5: ("submitted", "held"), 6: ("running", "transferring output"),
          7: ("idle", "suspended")}
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason",
              "HoldReasonCode", "EnteredCurrentStatus", "RemoveReason"]
_ERRORS = (htcondor2.HTCondorException, RuntimeError, OSError)  # what the bindings raise when the schedd fails
_JOB_ID = re.compile(r"(\d+)\.(\d+)")
_DOLLAR = re.compile(r"\$\(dollar\)", re.IGNORECASE)


class HTCondorBatch(ScriptBatch):
    """HTCondor (vanilla universe, shared file system)."""

    name = "htcondor"
    schedd_class, collector_class = htcondor2.Schedd, htcondor2.Collector  # tests put a stand-in schedd here
    log_name = "job.log"
    clock = staticmethod(time.time)
    _location = None  # the remote schedd's ad, located once through the collector (again after an error)

    def description(self, worker):
        """The :class:`htcondor2.Submit` of one worker; every value checked or quoted for the submit language."""
        batch, walltime = self.queue.batch, int(worker.walltime_s)
        ap = self.checked(worker.access_point, "access point")
        commands = {"universe": "vanilla", "executable": self.script_path(worker), "initialdir": ap,
                    "output": self.output_path(worker), "error": self.error_path(worker),
                    "log": f"{ap.rstrip('/')}/{self.log_name}", "request_cpus": str(int(worker.cores)),
                    "request_memory": str(int(worker.memory_mb)), "batch_name": self.job_name(worker.worker_id),
                    "+MinipandaWorker": str(int(worker.worker_id)), "+MinipandaAccessPoint": classad2.quote(ap),
                    "+MaxRuntime": str(walltime),  # the walltime, enforced by the periodic_remove below
                    "periodic_remove": f"JobStatus == 2 && time() - EnteredCurrentStatus > {walltime}",
                    "environment": environment(self.environment(worker))}
        if batch.account:
            commands["accounting_group"] = self.checked(batch.account, "batch.account")
        commands = {k: v for k, v in commands.items()
                    if not any(f"{k} = {v}".startswith(skip) for skip in batch.skip_directives)}
        for line in batch.extra_directives:  # 'key = value', checked by queueconfig; a site's value wins
            key, _, value = line.partition("=")
            commands[key.strip()] = value.strip()
        return htcondor2.Submit(commands)

    def submit(self, workers):
        results = []
        for worker in workers:
            try:
                cluster = self._schedd().submit(self.description(worker), count=1).cluster()
            except BatchError as exc:
                results.append(SubmitResult(worker.worker_id, exc.status, message=str(exc)))
            except _ERRORS as exc:
                self._location = None
                results.append(SubmitResult(worker.worker_id, RETRY, message=f"HTCondor submit failed: {exc}"))
            else:
                results.append(SubmitResult(worker.worker_id, OK, f"{cluster}.0", f"cluster {cluster}"))
        return results

    def status(self, batch_ids):
        ids = [b for b in dict.fromkeys(batch_ids) if _JOB_ID.fullmatch(str(b))]
        if not ids:
            return QueryResult(OK)
        try:
            schedd = self._schedd()
            ads = _by_id(schedd.query(_member(ids), PROJECTION))
            left = [b for b in ids if b not in ads]
            if left:  # only the jobs that left the queue are looked up in the (slower) history
                ads.update(_by_id(schedd.history(_member(left), PROJECTION, match=len(left))))
        except _ERRORS as exc:
            self._location = None
            return QueryResult(RETRY, message=f"HTCondor query failed: {exc}")
        states = {b: native_state(ads[b]) for b in ids if b in ads}
        limit, now = self.queue.batch.held_timeout, self.clock()
        overdue = [b for b in states if ads[b].get("JobStatus") == 5
                   and now - ads[b].get("EnteredCurrentStatus", now) > limit]
        if overdue:
            try:
                schedd.act(htcondor2.JobAction.Remove, overdue, reason=f"held longer than {limit} s")
                states.update({b: BatchStatus("failed", f"held for {int(now - ads[b]['EnteredCurrentStatus'])} s "
                                                        f"(limit {limit} s) and removed; {states[b].diag}")
                               for b in overdue})
            except _ERRORS as exc:  # still held: removed at a later cycle
                states.update({b: BatchStatus("submitted", f"{states[b].diag}; removal failed: {exc}")
                               for b in overdue})
        return QueryResult(OK, states)

    def cancel(self, batch_ids):
        ids = [str(b) for b in dict.fromkeys(batch_ids)]
        results = {b: (OK, "not an HTCondor job id") for b in ids if not _JOB_ID.fullmatch(b)}
        valid = [b for b in ids if b not in results]
        if not valid:
            return CancelResult(results)
        try:
            ad = self._schedd().act(htcondor2.JobAction.Remove, valid, reason="cancelled by harvester")
        except _ERRORS as exc:
            self._location = None
            return CancelResult({**results, **{b: (RETRY, f"HTCondor remove failed: {exc}") for b in valid}})
        counts = {k: v for k, v in ad.items() if k.startswith("Total")}  # the schedd answers with totals only
        status = RETRY if counts.get("TotalError") or counts.get("TotalPermissionDenied") else OK
        return CancelResult({**results, **{b: (status, f"remove: {counts}") for b in valid}})

    def find(self, access_point):
        """The job submitted for ``access_point`` (the MinipandaAccessPoint attribute), live or in the history."""
        constraint = f"MinipandaAccessPoint == {classad2.quote(access_point)}"
        try:
            schedd = self._schedd()
            ads = schedd.query(constraint, ["ClusterId", "ProcId"]) or schedd.history(
                constraint, ["ClusterId", "ProcId"], match=1)
        except _ERRORS as exc:
            raise BatchError(f"cannot look up {access_point} in HTCondor: {exc}", RETRY) from None
        return next(iter(_by_id(ads)), None)

    def _schedd(self):
        batch = self.queue.batch
        if not (batch.schedd or batch.pool):
            return self.schedd_class()
        if self._location is None:
            collector = self.collector_class(batch.pool)
            self._location = collector.locate(htcondor2.DaemonType.Schedd, batch.schedd)
        return self.schedd_class(self._location)


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
    words += [f"{key}: {ad[key]}" for key in ("HoldReason", "RemoveReason") if ad.get(key)]
    return BatchStatus(state, "; ".join(words), exit_code, str(code), "walltime exceeded" in words)


def environment(pairs):
    """The ``environment`` command in HTCondor's quoted form: all in "", each value in '', a literal ' or " doubled,
    ``$`` as ``$(DOLLAR)`` (not expanded); ``$$`` (a match-time reference) and ``$(DOLLAR)`` cannot be spelt."""
    bad = [name for name, value in pairs if "$$" in value or _DOLLAR.search(value)]
    if bad:
        raise BatchError(f"environment variables {bad}: '$$' and '$(DOLLAR)' cannot be passed through an "
                         "HTCondor submit description", FATAL)
    entries = [f"{name}='{value}'".replace("$", "$(DOLLAR)") for name, value in
               ((n, v.replace("'", "''").replace('"', '""')) for n, v in pairs)]
    return '"' + " ".join(entries) + '"'


def _member(ids):
    return "member(ClusterId, {" + ", ".join(sorted({_JOB_ID.fullmatch(b)[1] for b in ids}, key=int)) + "})"


def _by_id(ads):
    return {f"{ad['ClusterId']}.{ad.get('ProcId', 0)}": ad for ad in ads}
