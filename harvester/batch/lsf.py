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

from harvester.batch.base import FATAL, RETRY, BatchError, BatchStatus
from harvester.batch.jobscript import ScriptBatch, minutes

# native state -> (worker state, what it means); an EXIT by the owner or an administrator is cancelled
STATES = {"PEND": ("submitted", "pending"), "PSUSP": ("submitted", "suspended while pending"),
          "WAIT": ("submitted", "waiting in a chunk"), "PROV": ("submitted", "waiting for its host"),
          "RUN": ("running", "running"), "UNKWN": ("running", "its host's batch daemon is unreachable"),
          "USUSP": ("idle", "suspended by its owner"), "SSUSP": ("idle", "suspended by LSF"),
          "DONE": ("finished", "done"), "EXIT": ("failed", "exited"),
          "ZOMBI": ("failed", "killed while its host was unreachable")}
FIELDS = "jobid stat exit_code exit_reason pend_reason"


class LSFBatch(ScriptBatch):
    """IBM Spectrum LSF."""

    name, prefix = "lsf", "#BSUB"
    submit_command = ("bsub",)  # the script on stdin: only then does bsub read its #BSUB lines
    status_command = ("bjobs", "-a", "-json", "-o", FIELDS)
    find_command = ("bjobs", "-a", "-json", "-o", "jobid stat output_file", "-J")
    cancel_command = ("bkill",)
    job_id_regexp = re.compile(r"Job <(?P<job_id>\d+)> is submitted")
    batch_id = re.compile(r"\d+(\[\d+\])?")
    job_line = re.compile(r"Job <(?P<job_id>[^>]+)>")
    fatal_errors = re.compile(r"No such queue|Queue does not exist|Bad project name|Bad argument|not a valid|"
                              r"Bad resource requirement|User permission denied", re.IGNORECASE)
    gone_errors = re.compile(r"not found|No matching job|already finished", re.IGNORECASE)
    cancel_accepted = re.compile(r"is being terminated")

    def header_lines(self, worker):
        batch, cores = self.queue.batch, int(worker.cores)
        return [f"-J {self.job_name(worker.worker_id)}",
                *([f"-q {self.checked(batch.partition, 'batch.partition')}"] if batch.partition else []),
                *([f"-P {self.checked(batch.account, 'batch.account')}"] if batch.account else []),
                f"-n {cores}", *(["-R span[hosts=1]"] if cores > 1 else []),  # one pilot runs on one host
                f"-M {int(worker.memory_mb)}MB", f"-W {minutes(int(worker.walltime_s))}",
                f"-cwd {self.checked(worker.access_point, 'access point')}",
                f"-o {self.checked(self.output_path(worker), 'access point')}",
                f"-e {self.checked(self.error_path(worker), 'access point')}"]

    def submit_argv(self, worker):
        script = self.transport.read_file(self.script_path(worker))
        if script is None:
            raise BatchError(f"no job script {self.script_path(worker)} (write_script() first)", FATAL)
        return list(self.submit_command), script

    def parse_status(self, stdout):
        return {r["JOBID"]: native_state(r) for r in _records(stdout) if r.get("JOBID") and "ERROR" not in r
                and "STAT" in r}

    def find(self, access_point):
        """The job whose output goes to ``access_point`` (its name says the worker, its output path proves it)."""
        worker_id = access_point.rstrip("/").rsplit("/", 1)[-1]
        result = self.run([*self.find_command, self.job_name(worker_id)])
        try:
            records = _records(result.stdout)
        except ValueError:
            if self.gone_errors.search(result.stdout + result.stderr):
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
    return BatchStatus(state, "; ".join(words), exit_code, code, reason.startswith("TERM_RUNLIMIT"))


def _records(stdout):
    """``RECORDS`` of a ``bjobs -json`` output; ValueError when it is not that."""
    data = json.loads(stdout)
    if not isinstance(data, dict) or not isinstance(data.get("RECORDS"), list):
        raise ValueError("no RECORDS")
    return data["RECORDS"]
