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

from harvester.batch.base import RETRY, BatchError, BatchStatus
from harvester.batch.jobscript import ScriptBatch, hms

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
WALLTIME_EXCEEDED = -29


class PBSBatch(ScriptBatch):
    """OpenPBS / PBS Professional."""

    name, prefix = "pbs", "#PBS"
    submit_command = ("qsub",)
    status_command = ("qstat", "-f", "-F", "json", "-x")
    select_command = ("qselect", "-x", "-N")
    cancel_command = ("qdel",)
    job_id_regexp = re.compile(r"^(?P<job_id>\d+(\[\d*\])?(\.[A-Za-z0-9_.-]+)?)$", re.MULTILINE)
    batch_id = re.compile(r"\d+(\[\d*\])?(\.[A-Za-z0-9_.-]+)?")
    fatal_errors = re.compile(r"Unknown queue|Unknown resource|Illegal attribute or resource value|"
                              r"exceeds queue resource limits|Bad UID|Unauthorized Request", re.IGNORECASE)
    gone_errors = re.compile(r"Unknown Job Id|Job has finished")

    def header_lines(self, worker):
        batch = self.queue.batch
        return [f"-N {self.job_name(worker.worker_id)}",
                *([f"-q {self.checked(batch.partition, 'batch.partition')}"] if batch.partition else []),
                *([f"-A {self.checked(batch.account, 'batch.account')}"] if batch.account else []),
                f"-l select=1:ncpus={int(worker.cores)}:mem={int(worker.memory_mb)}mb",
                f"-l walltime={hms(int(worker.walltime_s))}", "-r n",  # a rerun pilot would reuse its access point
                f"-o {self.checked(self.output_path(worker), 'access point')}",
                f"-e {self.checked(self.error_path(worker), 'access point')}"]

    def parse_status(self, stdout):
        return {job_id: native_state(job) for job_id, job in _jobs(stdout).items()}

    def pick(self, states, ids):
        """The server may spell its name longer than qsub did: an id matches on its sequence number too."""
        by_seq = {job_id.split(".")[0]: state for job_id, state in states.items()}
        picked = {batch_id: states.get(batch_id) or by_seq.get(batch_id.split(".")[0]) for batch_id in ids}
        return {batch_id: state for batch_id, state in picked.items() if state is not None}

    def find(self, access_point):
        """The job whose output goes to ``access_point`` (its name says the worker, its output path proves it)."""
        worker_id = access_point.rstrip("/").rsplit("/", 1)[-1]
        listed = self.run([*self.select_command, self.job_name(worker_id)])
        if not listed.ok:
            raise BatchError(f"cannot look up worker {worker_id}: {listed.describe()}", RETRY)
        ids, jobs = self.valid_ids(listed.stdout.split()), {}
        if ids:
            shown = self.run([*self.status_command, *ids])
            try:
                jobs = _jobs(shown.stdout)
            except ValueError:
                raise BatchError(f"cannot look up worker {worker_id}: {shown.describe()}", RETRY) from None
        wanted = f"{access_point.rstrip('/')}/{self.stdout_name}"
        return next((job_id for job_id, job in jobs.items()
                     if job.get("Output_Path", "").rpartition(":")[2] == wanted), None)


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
    return BatchStatus(state, diag, status if isinstance(status, int) else None, code, status == WALLTIME_EXCEEDED)


def _jobs(stdout):
    """``Jobs`` of a ``qstat -F json`` output (absent when qstat knew none of the ids); ValueError if no JSON."""
    data = json.loads(stdout or "{}")
    if not isinstance(data, dict):
        raise ValueError("not a qstat -F json object")
    return data.get("Jobs") or {}
