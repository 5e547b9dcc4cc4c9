"""IBM Spectrum LSF: ``bsub`` reads the job script with its ``#BSUB`` lines on stdin, ``bjobs -json -o ...`` tells
the state of many jobs in one call, ``bkill`` cancels many in one call.

Formats (IBM Spectrum LSF 10.1 command reference): bsub prints ``Job <id> is submitted to [default] queue <q>.``;
``bjobs -json`` prints ``{"COMMAND": "bjobs", "JOBS": n, "RECORDS": [{FIELD: "text", ...}]}`` with upper-case field
names, every value a string (``EXIT_CODE`` empty unless non-zero), and a record ``{"JOBID", "ERROR": "Job <id> is
not found"}`` for an id it does not know (finished jobs stay known for ``CLEAN_PERIOD``, 1 h by default); bkill
prints one ``Job <id> ...`` line per job.
"""
import json
import re

from harvester.batch.base import FATAL, OK, RETRY, BatchError, BatchStatus, CancelResult, QueryResult, SubmitResult
from harvester.batch.jobscript import ScriptBatch, minutes, safe

# native state -> (worker state, what it means); DONE and EXIT are settled below
STATES = {"PEND": ("submitted", "pending"), "PSUSP": ("submitted", "suspended while pending"),
          "WAIT": ("submitted", "waiting in a chunk"), "PROV": ("submitted", "waiting for its host"),
          "RUN": ("running", "running"), "UNKWN": ("running", "its host's batch daemon is unreachable"),
          "USUSP": ("idle", "suspended by its owner"), "SSUSP": ("idle", "suspended by LSF"),
          "DONE": ("finished", "done"), "EXIT": ("failed", "exited"),
          "ZOMBI": ("failed", "killed while its host was unreachable")}
FIELDS = "jobid stat exit_code exit_reason pend_reason"
_JOB_LINE = re.compile(r"Job <(?P<job_id>[^>]+)>:? *(?P<text>.*)")
_GONE = re.compile(r"not found|No matching job|already finished", re.IGNORECASE)


class LSFBatch(ScriptBatch):
    """IBM Spectrum LSF."""

    name, prefix = "lsf", "#BSUB"
    submit_command = ("bsub",)  # the script on stdin: only then does bsub read its #BSUB lines
    status_command = ("bjobs", "-a", "-json", "-o", FIELDS)
    find_command = ("bjobs", "-a", "-json", "-o", "jobid stat output_file", "-J")
    cancel_command = ("bkill",)
    job_id_regexp = re.compile(r"Job <(?P<job_id>\d+)> is submitted")
    fatal_errors = ("No such queue", "Queue does not exist", "Bad project name", "Bad argument", "not a valid",
                    "Bad resource requirement", "User permission denied")

    def options(self, worker):
        batch, cores = worker.queue.batch, int(worker.cores)
        return [f"-J {self.job_name(worker)}", *([f"-q {safe(batch.partition, 'batch.partition')}"]
                                                  if batch.partition else []),
                *([f"-P {safe(batch.account, 'batch.account')}"] if batch.account else []),
                f"-n {cores}", *(["-R span[hosts=1]"] if cores > 1 else []),  # one pilot runs on one host
                f"-M {int(worker.memory_mb)}MB", f"-W {minutes(int(worker.walltime_s))}",
                f"-cwd {safe(worker.access_point, 'access point')}",
                f"-o {safe(self.output_path(worker), 'access point')}",
                f"-e {safe(self.error_path(worker), 'access point')}"]

    def submit(self, workers):
        return [self._submit_one(worker) for worker in workers]

    def _submit_one(self, worker):
        script = self.transport.read_file(self.script_path(worker))
        if script is None:
            return SubmitResult(worker.worker_id, FATAL, message=f"no job script {self.script_path(worker)} "
                                                                   "(write_script() first)")
        result = self.run(self.submit_command, input=script)
        match = self.job_id_regexp.search(result.stdout) if result.ok else None
        if not match:
            return self.submit_failed(worker, result, "bsub gave no job id")
        return SubmitResult(worker.worker_id, OK, match["job_id"], result.stdout.strip())

    def status(self, batch_ids):
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return QueryResult(OK)
        result = self.run([*self.status_command, *ids])
        try:
            records = _records(result.stdout)
        except ValueError:
            return QueryResult(RETRY, message=f"bjobs output is not JSON: {result.describe()}")
        errors = [line for line in result.stderr.splitlines() if line.strip() and not _GONE.search(line)]
        if not result.ok and (errors or result.timed_out):
            return QueryResult(RETRY, message=f"bjobs failed: {result.describe()}")  # never "all jobs gone"
        known = {r["JOBID"]: r for r in records if r.get("JOBID") and "ERROR" not in r and "STAT" in r}
        return QueryResult(OK, {batch_id: native_state(known[batch_id]) for batch_id in ids if batch_id in known})

    def cancel(self, batch_ids):
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return CancelResult()
        result = self.run([*self.cancel_command, *ids])
        said = {}
        for line in f"{result.stdout}\n{result.stderr}".splitlines():
            match = _JOB_LINE.search(line)
            if match:
                said[match["job_id"]] = match["text"]
        results = {}
        for batch_id in ids:
            text = said.get(batch_id)
            if text is None:
                results[batch_id] = (OK if result.ok else RETRY, f"bkill: {result.describe()}")
            else:
                results[batch_id] = (OK if "terminated" in text or _GONE.search(text) else RETRY, text)
        return CancelResult(results)

    def find(self, access_point):
        """The job whose output goes to ``access_point`` (its name says the worker, its output path proves it)."""
        worker_id = access_point.rstrip("/").rsplit("/", 1)[-1]
        result = self.run([*self.find_command, f"harvester-{worker_id}"])
        try:
            records = _records(result.stdout)
        except ValueError:
            if _GONE.search(result.stdout + result.stderr):
                return None
            raise BatchError(f"cannot look up worker {worker_id}: {result.describe()}", RETRY) from None
        wanted = f"{access_point.rstrip('/')}/{self.stdout_name}"
        return next((r["JOBID"] for r in records if r.get("OUTPUT_FILE") == wanted and "ERROR" not in r), None)


def native_state(record):
    """One job's :class:`BatchStatus` from its ``bjobs -json`` record."""
    code = record.get("STAT", "")
    state, meaning = STATES.get(code, ("submitted", "unknown state"))
    exit_text = (record.get("EXIT_CODE") or "").strip()
    exit_code = int(exit_text) if exit_text.lstrip("-").isdigit() else (0 if code == "DONE" else None)
    reason = (record.get("EXIT_REASON") or record.get("PEND_REASON") or "").strip().rstrip(";")
    if code == "EXIT" and reason.startswith(("TERM_OWNER", "TERM_ADMIN")):
        state = "cancelled"  # bkill by the owner or an administrator, not a failure of the pilot
    words = [f"LSF state {code}", meaning, *([f"exit code {exit_code}"] if code == "EXIT" and exit_code else []),
             *([reason] if reason else [])]
    return BatchStatus(state, "; ".join(words), exit_code)


def _records(stdout):
    """``RECORDS`` of a ``bjobs -json`` output; ValueError when it is not that."""
    data = json.loads(stdout)
    if not isinstance(data, dict) or not isinstance(data.get("RECORDS"), list):
        raise ValueError("no RECORDS")
    return data["RECORDS"]
