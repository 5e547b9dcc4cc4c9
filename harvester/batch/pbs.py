"""PBS Professional / OpenPBS: ``qsub`` a script with ``#PBS`` lines, ``qstat -f -F json -x`` for many jobs in one
call, ``qdel`` in one call.

Formats (OpenPBS 20-23 manuals and job.h): qsub prints the job id ``<seq>.<server>``; ``qstat -F json`` prints
``{"timestamp", "pbs_version", "pbs_server", "Jobs": {id: {"job_state", "Exit_status", "comment", ...}}}`` for the
ids it knows and one ``qstat: Unknown Job Id <id>`` line on stderr for each other (exit status non-zero);
``Exit_status`` is the script's exit code, 256+N after signal N, negative when PBS itself ended the job. Finished
jobs (``F``) stay visible only while the server keeps job history (``job_history_enable``).
"""
import json
import re

from harvester.batch.base import OK, RETRY, BatchError, BatchStatus, CancelResult, QueryResult, SubmitResult
from harvester.batch.jobscript import ScriptBatch, hms, safe

# native state -> (worker state, what it means); F and X are settled by the exit status
STATES = {"Q": ("submitted", "queued"), "H": ("submitted", "held"), "W": ("submitted", "waiting for its start time"),
          "T": ("submitted", "being moved"), "M": ("submitted", "moved to another server"),
          "R": ("running", "running"), "B": ("running", "array begun"), "E": ("running", "exiting"),
          "S": ("idle", "suspended"), "U": ("idle", "suspended (workstation busy)")}
# PBS's own negative exit codes (OpenPBS src/include/job.h, JOB_EXEC_*)
EXEC_CODES = {-1: "could not start the job", -2: "job start failed after its files were staged",
              -3: "requeued after a start failure", -10: "invalid user on the execution host",
              -11: "requeued by the server", -20: "requeued: a sister node failed",
              -24: "killed: ncpus burst limit", -25: "killed: ncpus sum limit", -26: "killed: vmem limit",
              -27: "killed: mem limit", -28: "killed: cput limit", -29: "killed: walltime limit"}
_GONE = re.compile(r"Unknown Job Id|Job has finished")


class PBSBatch(ScriptBatch):
    """OpenPBS / PBS Professional."""

    name, prefix = "pbs", "#PBS"
    submit_command = ("qsub",)
    status_command = ("qstat", "-f", "-F", "json", "-x")
    select_command = ("qselect", "-x", "-N")
    cancel_command = ("qdel",)
    job_id_regexp = re.compile(r"(?P<job_id>\d+(\[\d*\])?(\.[A-Za-z0-9_.-]+)?)")
    fatal_errors = ("Unknown queue", "Unknown resource", "Illegal attribute or resource value",
                    "exceeds queue resource limits", "Bad UID", "Unauthorized Request")

    def options(self, worker):
        batch = worker.queue.batch
        return [f"-N {self.job_name(worker)}", *([f"-q {safe(batch.partition, 'batch.partition')}"]
                                                  if batch.partition else []),
                *([f"-A {safe(batch.account, 'batch.account')}"] if batch.account else []),
                f"-l select=1:ncpus={int(worker.cores)}:mem={int(worker.memory_mb)}mb",
                f"-l walltime={hms(int(worker.walltime_s))}", "-r n",  # a rerun pilot would reuse its access point
                f"-o {safe(self.output_path(worker), 'access point')}",
                f"-e {safe(self.error_path(worker), 'access point')}"]

    def submit(self, workers):
        return [self._submit_one(worker) for worker in workers]

    def _submit_one(self, worker):
        result = self.run([*self.submit_command, self.script_path(worker)])
        lines = result.stdout.strip().splitlines()
        match = self.job_id_regexp.fullmatch(lines[-1].strip()) if result.ok and lines else None
        if not match:
            return self.submit_failed(worker, result, "qsub gave no job id")
        return SubmitResult(worker.worker_id, OK, match["job_id"], result.stdout.strip())

    def status(self, batch_ids):
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return QueryResult(OK)
        result = self.run([*self.status_command, *ids])
        try:
            jobs = _jobs(result.stdout)
        except ValueError:
            return QueryResult(RETRY, message=f"qstat output is not JSON: {result.describe()}")
        errors = [line for line in result.stderr.splitlines() if line.strip() and not _GONE.search(line)]
        if not result.ok and (errors or result.timed_out or not result.stderr.strip()):
            return QueryResult(RETRY, message=f"qstat failed: {result.describe()}")  # never "all jobs gone"
        by_seq = {job_id.split(".")[0]: job for job_id, job in jobs.items()}
        states = {}
        for batch_id in ids:  # the server may spell its name longer than qsub did: match on the sequence too
            job = jobs.get(batch_id) or by_seq.get(batch_id.split(".")[0])
            if job is not None:
                states[batch_id] = native_state(job)
        return QueryResult(OK, states)

    def cancel(self, batch_ids):
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return CancelResult()
        result = self.run([*self.cancel_command, *ids])
        results = {batch_id: (OK, "qdel accepted") for batch_id in ids}
        said = [line for line in f"{result.stdout}\n{result.stderr}".splitlines() if line.strip()]
        for batch_id in ids:
            line = next((line for line in said if line.rstrip().endswith(batch_id)), None)
            if line is not None:
                results[batch_id] = (OK, f"already gone: {line}") if _GONE.search(line) else (RETRY, line)
        if not result.ok and not any(line.rstrip().endswith(tuple(ids)) for line in said):
            results = {batch_id: (RETRY, f"qdel failed: {result.describe()}") for batch_id in ids}
        return CancelResult(results)

    def find(self, access_point):
        """The job whose output goes to ``access_point`` (its name says the worker, its output path proves it)."""
        worker_id = access_point.rstrip("/").rsplit("/", 1)[-1]
        listed = self.run([*self.select_command, f"harvester-{worker_id}"])
        if not listed.ok:
            raise BatchError(f"cannot look up worker {worker_id}: {listed.describe()}", RETRY)
        ids, jobs = listed.stdout.split(), {}
        if ids:
            shown = self.run([*self.status_command, *ids])
            try:
                jobs = _jobs(shown.stdout)
            except ValueError:
                raise BatchError(f"cannot look up worker {worker_id}: {shown.describe()}", RETRY) from None
        wanted = f"{access_point.rstrip('/')}/{self.stdout_name}"
        for job_id, job in jobs.items():
            if job.get("Output_Path", "").rpartition(":")[2] == wanted:
                return job_id
        return None


def native_state(job):
    """One job's :class:`BatchStatus` from its ``qstat -F json`` attributes."""
    code, comment = job.get("job_state", "?"), job.get("comment", "")
    status = job.get("Exit_status")
    words = [f"PBS state {code}"]
    if code in ("F", "X"):
        state = "cancelled" if status is None else "finished" if status == 0 else "failed"
        words.append("deleted before it ran" if status is None else f"exit status {status}")
        if isinstance(status, int) and status > 256:
            words.append(f"killed by signal {status - 256}")
        elif isinstance(status, int) and status < 0:
            words.append(EXEC_CODES.get(status, "ended by PBS"))
    else:
        state, meaning = STATES.get(code, ("submitted", "unknown state"))
        words.append(meaning)
    diag = "; ".join(words + ([comment] if comment else []))
    return BatchStatus(state, diag, status if isinstance(status, int) else None)


def _jobs(stdout):
    """``Jobs`` of a ``qstat -F json`` output (absent when qstat knew none of the ids); ValueError if no JSON."""
    return json.loads(stdout or "{}").get("Jobs") or {}
