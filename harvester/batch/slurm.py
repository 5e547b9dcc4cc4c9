"""Slurm: ``sbatch --parsable`` per worker, ONE ``squeue`` per queue per cycle, bulk ``scancel``.

The job script's ``#SBATCH`` header comes from the queue config and the worker; sbatch reads those lines itself (no
shell), so a header value must be a plain word: the queue config's checks guarantee it, and :func:`_word` refuses
anything else. The body sets the environment (values quoted), runs the queue's setup lines, then ``exec``s the
pilot (argv quoted), so the pilot's exit code is the job's and Slurm's signals reach it. A worker of several
pilots (``pilot.per_worker``) is one task with all their cores, the pilots processes of the batch step
(:mod:`harvester.batch.launch` says why not ``srun`` steps).

Status: ``squeue --states=all`` lists live jobs and the ended ones slurmctld still holds (``MinJobAge``, default
300 s; that is what ``scontrol show job`` would show, but in one call for many ids) with their exit codes. Ids it
no longer knows are looked up with ONE ``sacct`` call when accounting is on; without accounting they are unknown.
"""
import math
import re
import shlex

from harvester.batch.base import (FATAL, OK, RETRY, BatchError, BatchStatus, BatchSystem, CancelResult,
                                  QueryResult, SubmitResult)
from harvester.batch.launch import pilot_lines

_WORD = re.compile(r"[A-Za-z0-9_.,+:/=%@-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BREAKS = re.compile(r"[\n\r\0]")
STATES = {  # Slurm job state -> worker state (harvester.states)
    "PENDING": "submitted", "CONFIGURING": "submitted", "REQUEUED": "submitted", "REQUEUE_HOLD": "submitted",
    "REQUEUE_FED": "submitted", "RESV_DEL_HOLD": "submitted", "SUSPENDED": "running", "RUNNING": "running",
    "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running", "RESIZING": "running",
    "COMPLETED": "finished", "CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "failed",
    "NODE_FAIL": "failed", "PREEMPTED": "failed", "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed",
    "DEADLINE": "failed", "SPECIAL_EXIT": "failed", "REVOKED": "failed",
}
# sbatch errors that no retry can fix (the script or the queue config must change)
FATAL_ERRORS = re.compile(r"invalid (partition|account|qos|qos specification)|Invalid (partition|account|qos)|"
                          r"Requested time limit is invalid|node configuration is not available|Unable to open file|"
                          r"unrecognized option|invalid option|Invalid generic resource|"
                          r"More processors requested than permitted|Memory specification can not be satisfied",
                          re.IGNORECASE)
GONE = re.compile(r"Invalid job id specified|already completing or completed|Job has already finished")
_SCRIPT = """#!/bin/sh
{header}
# harvester worker {worker_id} of queue {queue}
{exports}{setup}{pilots}"""


class SlurmBatch(BatchSystem):
    """Workers as Slurm batch jobs; the job's comment and working directory are the worker's access point, which
    is how :meth:`find` recognises a job a killed harvester did not record."""

    name = "slurm"
    submit_command = ("sbatch", "--parsable")
    status_command = ("squeue", "--noheader", "--states=all",
                      "--Format=JobID:|,State:|,exit_code:|,NodeList:|,Reason:|")
    accounting_command = ("sacct", "--noheader", "--parsable2", "--allocations",
                          "--format=JobID,State,ExitCode,NodeList,Reason")
    find_command = ("squeue", "--noheader", "--states=all", "--me", "--Format=JobID:|,WorkDir:|,Comment:|")
    cancel_command = ("scancel",)
    job_id_regexp = re.compile(r"(?P<job_id>\d+)(;\S+)?")
    directive = "#SBATCH"

    queue = None  # the queue served, set by plugin_for: its transport.command_timeout bounds every command

    def __init__(self, transport, spool=None):
        super().__init__(transport, spool)
        self.accounting = None  # None: not known yet; False after sacct said accounting is disabled

    @property
    def timeout(self):
        return self.queue.transport.command_timeout if self.queue is not None else 300

    def header_lines(self, worker):
        q, ap = worker.queue, worker.access_point
        options = [f"--job-name=harvester-{q.name}-{worker.worker_id}", f"--comment={ap}", f"--chdir={ap}",
                   f"--output={ap}/slurm-%j.out", f"--error={ap}/slurm-%j.err", "--nodes=1", "--ntasks=1",
                   f"--cpus-per-task={worker.cores}", f"--mem={worker.memory_mb}M",
                   f"--time={_slurm_time(worker.walltime_s)}"]
        options += [f"--{key}={getattr(q.batch, key)}" for key in ("partition", "account", "qos")
                    if getattr(q.batch, key)]
        options = [o for o in options if not any(o.startswith(p) for p in q.batch.skip_directives)]
        lines = [f"{self.directive} {_word(o, worker)}" for o in options]
        return lines + [f"{self.directive} {_one_line(d, worker)}" for d in q.batch.extra_directives]

    def render(self, worker):
        env = {**worker.queue.batch.environment, **worker.environment}
        bad = [n for n, v in env.items() if not _ENV_NAME.fullmatch(n) or _BREAKS.search(str(v))]
        values = [*worker.argv, *(str(value) for pilot in worker.pilots
                                  for value in (*pilot.argv, *pilot.environment.values()))]
        if bad or any(_BREAKS.search(value) for value in values):
            raise BatchError(f"worker {worker.worker_id}: environment variables {bad} or the pilot's arguments "
                             "cannot be written into a job script (a name is letters, digits and _; no value may "
                             "hold a line break or NUL: it would start a new script line)", FATAL)
        exports = "".join(f"export {name}={shlex.quote(str(value))}\n" for name, value in env.items())
        setup = "".join(_one_line(line, worker) + "\n" for line in worker.queue.batch.setup)
        if any(line.lstrip().startswith(self.directive) for line in worker.queue.batch.setup):
            raise BatchError(f"queue {worker.queue.name}: a batch.setup line starts with {self.directive}; put "
                             "scheduler options in batch.extra_directives", FATAL)
        return _SCRIPT.format(header="\n".join(self.header_lines(worker)), worker_id=worker.worker_id,
                              queue=worker.queue.name, exports=exports, setup=setup,
                              pilots=pilot_lines(worker))

    def submit(self, workers):
        return [self._submit_one(worker) for worker in workers]

    def _submit_one(self, worker):
        result = self.transport.run([*self.submit_command, self.script_path(worker)], timeout=self.timeout)
        lines = result.stdout.strip().splitlines()
        match = self.job_id_regexp.fullmatch(lines[-1].strip()) if result.ok and lines else None
        if match:
            return SubmitResult(worker.worker_id, OK, match["job_id"], f"Slurm job {match['job_id']}")
        if result.timed_out or result.returncode == 255:  # the answer was lost, perhaps not the submission
            found = self._find_quietly(worker.access_point)
            if found:
                return SubmitResult(worker.worker_id, OK, found, f"Slurm job {found}, found by its comment after "
                                                                 f"sbatch's answer was lost: {result.describe()}")
        fatal = not result.timed_out and result.returncode != 255 and (
            FATAL_ERRORS.search(result.stderr) or result.returncode in (126, 127))
        what = "sbatch printed no job id" if result.ok else "sbatch failed"
        return SubmitResult(worker.worker_id, FATAL if fatal else RETRY,
                            message=f"{what} (expected {self.job_id_regexp.pattern}): {result.describe()}")

    def status(self, batch_ids):
        ids = sorted({str(b) for b in batch_ids if str(b).isdigit()}, key=int)
        if not ids:
            return QueryResult(OK)
        result = self.transport.run([*self.status_command, f"--jobs={','.join(ids)}"], timeout=self.timeout)
        if not result.ok and not GONE.search(result.stderr):  # one unknown id alone makes squeue fail
            return QueryResult(RETRY, message=f"squeue: {result.describe()}")
        states = parse_squeue(result.stdout) if result.ok else {}
        left = [i for i in ids if i not in states]
        if left and self.accounting is not False:
            states.update(self._accounting(left))
        return QueryResult(OK, {i: states[i] for i in ids if i in states})

    def _accounting(self, ids):
        result = self.transport.run([*self.accounting_command, f"--jobs={','.join(ids)}"], timeout=self.timeout)
        if "accounting storage is disabled" in result.stderr:
            self.accounting = False
            return {}
        self.accounting = self.accounting or result.ok or None
        return parse_sacct(result.stdout) if result.ok else {}

    def cancel(self, batch_ids):
        ids = [str(b) for b in dict.fromkeys(batch_ids)]
        if not ids:
            return CancelResult()
        result = self.transport.run([*self.cancel_command, *ids], timeout=self.timeout)
        if result.ok:
            return CancelResult({i: (OK, "scancel sent") for i in ids})
        if result.returncode == 255 or result.timed_out or not result.stderr.strip():
            return CancelResult({i: (RETRY, f"scancel: {result.describe()}") for i in ids})
        results = {}
        for i in ids:
            said = [line for line in result.stderr.splitlines() if re.search(rf"\b{i}\b", line)]
            gone = all(GONE.search(line) for line in said)
            results[i] = (OK, "already ended" if said else "scancel sent") if gone else (RETRY, "; ".join(said))
        return CancelResult(results)

    def find(self, access_point):
        """The id of the job whose comment or working directory is ``access_point`` (a submission a crash left
        unrecorded), or None; the newest one if several."""
        result = self.transport.run(list(self.find_command), timeout=self.timeout)
        if not result.ok:
            raise BatchError(f"cannot look for the job of {access_point}: {result.describe()}")
        found = [int(f[0]) for f in (line.split("|") for line in result.stdout.splitlines())
                 if len(f) >= 3 and f[0].isdigit() and access_point in (f[1], "|".join(f[2:-1]))]
        return str(max(found)) if found else None


    def _find_quietly(self, access_point):
        try:
            return self.find(access_point)
        except BatchError:
            return None


def parse_squeue(text):
    """``{job id: BatchStatus}`` from :attr:`SlurmBatch.status_command` output (``id|state|wait status|nodes|
    reason|``)."""
    states = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        status = int(fields[2]) if fields[2].isdigit() else 0
        code = 128 + (status & 0x7F) if status & 0x7F else status >> 8
        states[fields[0]] = _status(fields[0], fields[1], code, fields[3], "|".join(fields[4:]).rstrip("|"))
    return states


def parse_sacct(text):
    """``{job id: BatchStatus}`` from ``sacct --parsable2`` (JobID|State|ExitCode code:signal|NodeList|Reason)."""
    states = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 or not fields[0].isdigit():
            continue  # steps (123.batch) and array/het parts are not workers
        code, _, signum = fields[2].partition(":")
        exit_code = 128 + int(signum) if signum.isdigit() and int(signum) else int(code) if code.isdigit() else None
        states[fields[0]] = _status(fields[0], fields[1].split()[0], exit_code, fields[3], fields[4])
    return states


def _status(job_id, native, exit_code, nodes, reason):
    state = STATES.get(native, "failed" if native else "submitted")
    diag = f"Slurm job {job_id} {native}" + (f" ({reason})" if reason and reason != "None" else "")
    if state in ("failed", "cancelled", "finished") and exit_code is not None:
        diag += f", exit code {exit_code}"
    if nodes and nodes not in ("(null)", "None assigned"):
        diag += f" on {nodes}"
    return BatchStatus(state, diag, exit_code if state in ("failed", "cancelled", "finished") else None)


def _slurm_time(seconds):
    """``D-HH:MM:SS`` rounded up to whole minutes (Slurm's unit)."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 1440}-{minutes // 60 % 24:02d}:{minutes % 60:02d}:00"


def _word(option, worker):
    if not _WORD.fullmatch(option):
        raise BatchError(f"worker {worker.worker_id}: {option!r} cannot go into an #SBATCH line (sbatch reads "
                         "those lines itself: only letters, digits and _ . , + : / = % @ - are safe there)", FATAL)
    return option


def _one_line(text, worker):
    if _BREAKS.search(text):
        raise BatchError(f"worker {worker.worker_id}: {text!r} holds a line break; it would change the script",
                         FATAL)
    return text
