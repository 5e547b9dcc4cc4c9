"""HTCondor through the ``htcondor2`` bindings, against the local schedd or one located through a pool's collector.

Per cycle and queue: ONE submit transaction for all new workers (one cluster, a proc per worker, each worker's
values as item data), ONE query of the live jobs plus ONE history query for the ids that left, ONE ``Remove`` for
cancels and for jobs held longer than ``batch.held_timeout`` (the hold reason becomes the diag). The walltime is a
``periodic_remove`` the schedd evaluates; a job it removed is reported as such. Every job carries the worker's id
and access point (``MinipandaWorker``, ``MinipandaAccessPoint``): :meth:`HTCondorBatch.find` recovers a
submission whose answer a crash lost.

Authentication: FS with the local schedd (the client proves its user through a directory it makes in /tmp), and
IDTOKENS only, with the token file named by ``batch.token_file``, wherever a queue gives one (a remote schedd);
a remote schedd without one is reached as the host's HTCondor configuration says. The bindings' configuration is
process-wide, so each call sets the queue's methods under one lock and puts the previous values back.

File transfer (``batch.file_transfer``): the job script, pilot zipapp, token and queuedata are spooled to the schedd
with the submission and travel to the execute node; the job script runs the pilot in HTCondor's scratch directory
(the access point's paths become relative to it), and the pilot's stderr (its log) and the files it left at the top
of its work area come back into the access point when harvester retrieves the output of the completed job.
"""
import contextlib
import dataclasses
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import weakref

import classad2
import htcondor2

from harvester import pilots
from harvester.batch.base import (OK, RETRY, BatchError, BatchStatus, CancelResult, PilotLaunch, QueryResult,
                                  SubmitResult)
from harvester.batch.jobscript import ScriptBatch

STATES = {1: ("submitted", "idle"), 2: ("running", "running"), 3: ("cancelled", "removed"),
          4: ("finished", "completed"), 5: ("submitted", "held"), 6: ("running", "transferring output"),
          7: ("idle", "suspended")}
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason",
              "HoldReasonCode", "EnteredCurrentStatus", "RemoveReason"]
SPOOLING_INPUT = 16  # HoldReasonCode of a job waiting for its spooled input: a hold that ends by itself
_ERRORS = (htcondor2.HTCondorException, RuntimeError, OSError, ValueError)  # what the bindings raise
_JOB_ID = re.compile(r"(\d+)\.(\d+)")
_CONFIG_LOCK = threading.RLock()  # the bindings' configuration is one per process


class HTCondorBatch(ScriptBatch):
    """HTCondor (vanilla universe): access points on a file system the schedd and execute nodes share, or
    ``batch.file_transfer``."""

    name = "htcondor"
    schedd_class, collector_class = htcondor2.Schedd, htcondor2.Collector  # tests put a stand-in schedd here
    log_name = "job.log"
    clock = staticmethod(time.time)
    _location = None  # the remote schedd's ad, located once through the collector (again after an error)
    _token_dir = None  # a private directory holding the copy of batch.token_file the bindings read

    # ---- the submit description ------------------------------------------------------------------------------
    def description(self):
        """The :class:`htcondor2.Submit` of this queue's workers: one template, each worker's values as item data
        (:meth:`item`); every value checked or quoted for the submit language."""
        batch, transfer = self.queue.batch, self.queue.batch.file_transfer
        commands = {"universe": "vanilla", "executable": f"$(mp_ap)/{self.script_name}", "initialdir": "$(mp_ap)",
                    "output": f"$(mp_ap)/{self.stdout_name}", "error": f"$(mp_ap)/{self.stderr_name}",
                    "log": f"$(mp_ap)/{self.log_name}", "request_cpus": "$(mp_cpus)",
                    "request_memory": "$(mp_memory)", "batch_name": f"harvester-{self.queue.name}-$(mp_worker)",
                    "+MinipandaWorker": "$(mp_worker)", "+MinipandaAccessPoint": '"$(mp_ap)"',
                    "+MaxRuntime": "$(mp_walltime)",  # the walltime, enforced by the periodic_remove below
                    "periodic_remove": "JobStatus == 2 && time() - EnteredCurrentStatus > $(mp_walltime)",
                    # the batch job id the pilot reports (HTCondor itself sets no such variable)
                    "environment": '"CONDOR_JOB_ID=$(Cluster).$(Process)"'}
        if transfer:  # the schedd cannot write harvester's disk: no user log; the rest comes back with retrieve
            del commands["log"]
            commands.update({"should_transfer_files": "YES", "when_to_transfer_output": "ON_EXIT",
                             "transfer_input_files": "$(mp_inputs)"})
        if batch.account:
            commands["accounting_group"] = self.checked(batch.account, "batch.account")
        commands = {k: v for k, v in commands.items()
                    if not any(f"{k} = {v}".startswith(skip) for skip in batch.skip_directives)}
        for line in batch.extra_directives:  # 'key = value', checked by queueconfig; a site's value wins
            key, _, value = line.partition("=")
            commands[key.strip()] = value.strip()
        return htcondor2.Submit(commands)

    def item(self, worker):
        """The item data of one worker (the values of the ``$(mp_...)`` macros): numbers and its access point, a
        plain path (:meth:`checked`); its environment is in the job script, quoted for the shell."""
        values = {"mp_ap": self.checked(worker.access_point, "access point"), "mp_worker": str(int(worker.worker_id)),
                  "mp_cpus": str(int(worker.cores)), "mp_memory": str(int(worker.memory_mb)),
                  "mp_walltime": str(int(worker.walltime_s))}
        if self.queue.batch.file_transfer:
            values["mp_inputs"] = ", ".join(self.inputs(worker))
        return values

    def inputs(self, worker):
        """What a worker's job needs on the execute node besides its script: the pilot zipapp (unless the queue
        runs its own pilot command), the pilot's token, and queuedata (each pilot's directory when several)."""
        names = [] if self.queue.pilot.command else [pilots.ZIPAPP_FILE]
        if not pilots.file_mode(self.queue):
            names.append(pilots.TOKEN_FILE)
        if worker.pilots:
            names += [os.path.relpath(p.directory, worker.access_point) for p in worker.pilots]
        else:
            names.append(pilots.QUEUEDATA_FILE)
        return [self.checked(name, "input file") for name in names]

    def relocated(self, worker):
        """``worker`` as the job sees it: with file transfer, its access point is the job's scratch directory (the
        working directory HTCondor starts the script in), so every path in it becomes relative."""
        if not self.queue.batch.file_transfer:
            return worker
        ap = worker.access_point.rstrip("/")

        def move(value):
            value = str(value)
            return "." if value == ap else "./" + value[len(ap) + 1:] if value.startswith(ap + "/") else value

        return dataclasses.replace(
            worker, access_point=".", argv=tuple(map(move, worker.argv)),
            environment={name: move(value) for name, value in worker.environment.items()},
            pilots=tuple(PilotLaunch(move(p.directory), tuple(map(move, p.argv)),
                                     {name: move(value) for name, value in p.environment.items()})
                         for p in worker.pilots))

    def render(self, worker):
        return super().render(self.relocated(worker))

    # ---- submit, status, cancel, find --------------------------------------------------------------------------
    def submit(self, workers):
        results, items = {}, []
        for worker in workers:
            try:
                items.append((worker, self.item(worker)))
            except BatchError as exc:
                results[worker.worker_id] = SubmitResult(worker.worker_id, exc.status, message=str(exc))
        if items:
            results.update(self._submit(items))
        return [results[worker.worker_id] for worker in workers]

    def _submit(self, items):
        """One transaction for every worker (one cluster); with file transfer, their inputs spooled after it."""
        spool = self.queue.batch.file_transfer
        try:
            with self.security():
                schedd = self._schedd()
                done = schedd.submit(self.description(), spool=spool, itemdata=iter([i for _, i in items]))
                if spool:  # a spool that fails leaves no job waiting for its input: the schedd removes them
                    schedd.spool(done)
        except BatchError as exc:
            return {w.worker_id: SubmitResult(w.worker_id, exc.status, message=str(exc)) for w, _ in items}
        except _ERRORS as exc:
            self._location = None
            message = self.failure("submit", exc)
            return {w.worker_id: SubmitResult(w.worker_id, RETRY, message=message) for w, _ in items}
        cluster, first = done.cluster(), done.first_proc()
        return {w.worker_id: SubmitResult(w.worker_id, OK, f"{cluster}.{first + n}",
                                          f"HTCondor job {cluster}.{first + n}" + (" (input spooled)" if spool else ""))
                for n, (w, _) in enumerate(items)}

    def status(self, batch_ids):
        ids = [b for b in dict.fromkeys(str(b) for b in batch_ids) if _JOB_ID.fullmatch(b)]
        if not ids:
            return QueryResult(OK)
        try:
            with self.security():
                schedd = self._schedd()
                live, ads = self._ads(schedd, ids)
                if len(ads) < len(ids):  # a job leaving the queue can be in neither for a moment: ask once more
                    unknown = [b for b in ids if b not in ads]
                    again, more = self._ads(schedd, unknown)
                    live.update(again)
                    ads.update(more)
                states = {b: native_state(ads[b]) for b in ids if b in ads}
                states.update(self._remove_overdue(schedd, {b: live[b] for b in ids if b in live}, states))
                states.update(self._retrieve(schedd, {b: live[b] for b in ids if b in live}, states))
        except _ERRORS as exc:
            self._location = None
            return QueryResult(RETRY, message=self.failure("query", exc))
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
        except (*_ERRORS, BatchError) as exc:  # still held: removed at a later cycle
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
        except _ERRORS as exc:
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
            with self.security():
                ad = self._schedd().act(htcondor2.JobAction.Remove, valid, reason="cancelled by harvester")
        except _ERRORS as exc:
            self._location = None
            message = self.failure("remove", exc)
            return CancelResult({**results, **{b: (RETRY, message) for b in valid}})
        except BatchError as exc:
            return CancelResult({**results, **{b: (exc.status, str(exc)) for b in valid}})
        counts = {k: v for k, v in ad.items() if k.startswith("Total")}  # the schedd answers with totals only
        status = RETRY if counts.get("TotalError") or counts.get("TotalPermissionDenied") else OK
        return CancelResult({**results, **{b: (status, f"remove: {counts}") for b in valid}})

    def find(self, access_point):
        """The job submitted for ``access_point`` (its MinipandaAccessPoint attribute), live or in the history."""
        constraint = f"MinipandaAccessPoint == {classad2.quote(access_point)}"
        try:
            with self.security():
                schedd = self._schedd()
                ads = schedd.query(constraint, ["ClusterId", "ProcId"]) or schedd.history(
                    constraint, ["ClusterId", "ProcId"], match=1)
        except _ERRORS as exc:
            self._location = None
            raise BatchError(f"cannot look up {access_point}: {self.failure('query', exc)}", RETRY) from None
        return next(iter(_by_id(ads)), None)

    # ---- the schedd and how we authenticate to it --------------------------------------------------------------
    def _schedd(self):
        batch = self.queue.batch
        if not (batch.schedd or batch.pool):
            return self.schedd_class()
        if self._location is None:
            collector = self.collector_class(batch.pool)
            self._location = collector.locate(htcondor2.DaemonType.Schedd, batch.schedd)
        return self.schedd_class(self._location)

    def where(self):
        """The schedd in words, for messages."""
        batch = self.queue.batch
        if not (batch.schedd or batch.pool):
            return "the local schedd"
        name = batch.schedd or "the schedd"
        return f"schedd {name} of pool {batch.pool or 'of the local configuration'}"

    def methods(self):
        """The authentication methods this queue uses: IDTOKENS with a token file, FS with the local schedd, else
        None (the host's HTCondor configuration decides)."""
        batch = self.queue.batch
        if batch.token_file:
            return "IDTOKENS"
        return None if batch.schedd or batch.pool else "FS"

    @contextlib.contextmanager
    def security(self):
        """Hold the bindings' configuration for one call: this queue's authentication methods and token."""
        settings = {}
        if self.methods():
            settings["SEC_CLIENT_AUTHENTICATION_METHODS"] = self.methods()
        if self.queue.batch.token_file:
            settings["SEC_TOKEN_DIRECTORY"] = self._token_directory()
        with _CONFIG_LOCK:
            saved = {}
            for name, value in settings.items():
                try:
                    saved[name] = htcondor2.param[name]
                except KeyError:
                    saved[name] = None
                htcondor2.param[name] = value
            try:
                yield
            finally:
                for name, value in saved.items():
                    if value is None:
                        del htcondor2.param[name]
                    else:
                        htcondor2.param[name] = value

    def _token_directory(self):
        """A private directory holding a copy of batch.token_file (the bindings read every file of a token
        directory, and only those of mode 0600); the copy follows the file when it changes."""
        path = self.queue.batch.token_file
        try:
            info = os.stat(path)
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise BatchError(f"queue {self.queue.name}: cannot read batch.token_file {path} for IDTOKENS "
                             f"authentication with {self.where()}: {exc.strerror}", RETRY) from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise BatchError(f"queue {self.queue.name}: batch.token_file {path} for IDTOKENS authentication with "
                             f"{self.where()} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); a token "
                             "is a password: chmod 600 it", RETRY)
        if not token:
            raise BatchError(f"queue {self.queue.name}: batch.token_file {path} is empty: no IDTOKEN for IDTOKENS "
                             f"authentication with {self.where()}", RETRY)
        if self._token_dir is None:
            self._token_dir = tempfile.mkdtemp(prefix="minipanda-condor-token-")
            weakref.finalize(self, shutil.rmtree, self._token_dir, True)
        copy = os.path.join(self._token_dir, "token")
        if not os.path.exists(copy) or open(copy, encoding="utf-8").read() != token:
            fd = os.open(copy + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token)
            os.replace(copy + ".new", copy)
        return self._token_dir

    def failure(self, what, exc):
        """A failed call in words: the queue, the schedd and, when authentication failed, the method."""
        text = str(exc).strip() or type(exc).__name__
        if "AUTHENTICATE" in text:
            method = self.methods() or "the methods of the host's HTCondor configuration"
            token = f" with token file {self.queue.batch.token_file}" if self.queue.batch.token_file else ""
            return (f"queue {self.queue.name}: {self.where()} refused {what}: {method} authentication{token} "
                    f"failed: {text}")
        return f"queue {self.queue.name}: HTCondor {what} at {self.where()} failed: {text}"


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
