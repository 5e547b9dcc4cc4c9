"""Slurm: ``sbatch --parsable`` per worker, ONE ``squeue`` per queue per cycle, bulk ``scancel``.

sbatch reads the ``#SBATCH`` lines itself (no shell), so a value there must be a plain word. The job's comment and
working directory are the worker's access point: how :meth:`SlurmBatch.find` recognises a job a killed harvester
did not record. A worker of several pilots on one node (``pilot.per_worker``) is one task with all their cores, the
pilots processes of the batch step; on several nodes (``resources.nodes_per_worker``) one task per node, each
node's pilots started by a launcher in one ``srun`` step (:mod:`harvester.batch.launch` says how they still stop
warmly). A job that needs several nodes runs its one pilot in the batch step; its payload gets the allocation.

Status: ``squeue --states=all`` lists live jobs and the ended ones slurmctld still holds (``MinJobAge``, default
300 s; what ``scontrol show job`` would show, but in one call for many ids) with their exit codes. Ids it no longer
knows are looked up with ONE ``sacct`` call when accounting is on; without accounting they are unknown.
"""
import dataclasses
import datetime
import logging
import re

from harvester.batch.base import OK, BatchError, BatchStatus
from harvester.batch.jobscript import ScriptBatch, days_hms

STATES = {  # Slurm job state -> worker state (harvester.states); any other ended state is failed
    "PENDING": "submitted", "CONFIGURING": "submitted", "REQUEUED": "submitted", "REQUEUE_HOLD": "submitted",
    "REQUEUE_FED": "submitted", "RESV_DEL_HOLD": "submitted", "SUSPENDED": "running", "RUNNING": "running",
    "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running", "RESIZING": "running",
    "COMPLETED": "finished", "CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "failed",
    "NODE_FAIL": "failed", "PREEMPTED": "failed", "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed",
    "DEADLINE": "failed", "SPECIAL_EXIT": "failed", "REVOKED": "failed",
}
ENDED = ("failed", "cancelled", "finished")
log = logging.getLogger(__name__)
STOP_WARNING_S = 60  # Slurm signals the batch shell (USR1: a warm stop for pilots) this long before the time limit


class SlurmBatch(ScriptBatch):
    """Workers as Slurm batch jobs."""

    name, prefix = "slurm", "#SBATCH"
    several_nodes = True
    submit_command = ("sbatch", "--parsable")
    status_command = ("squeue", "--noheader", "--states=all", "--Format=JobID:|,State:|,exit_code:|,NodeList:|,"
                                                              "Reason:|")
    history_command = ("sacct", "--noheader", "--parsable2", "--allocations",
                       "--format=JobID,State,ExitCode,NodeList,Reason,ElapsedRaw")
    history_disabled = re.compile("accounting storage is disabled")
    usage_command = ("squeue", "--noheader", "--states=all", "--Format=JobID:|,TimeUsed:|")
    find_command = ("squeue", "--noheader", "--states=all", "--me", "--Format=JobID:|,WorkDir:|,Comment:|")
    cancel_command = ("scancel",)
    test_only_command = ("sbatch", "--test-only")
    test_only_start = re.compile(r"to start at (?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
    job_id_regexp = re.compile(r"^(?P<job_id>\d+)(;\S+)?$", re.MULTILINE)  # "id" or "id;cluster"
    job_line = re.compile(r"job id (?P<job_id>\d+)")
    output_file = re.compile(r"slurm-(?P<job_id>\d+)\.out")  # --output of header_lines, in the access point
    word_punctuation = "_.,+:/=%@-"
    fatal_errors = re.compile(r"invalid (partition|account|qos)|Requested time limit is invalid|"
                              r"node configuration is not available|Unable to open file|unrecognized option|"
                              r"invalid option|Invalid generic resource|More processors requested than permitted|"
                              r"Memory specification can not be satisfied", re.IGNORECASE)
    gone_errors = re.compile(r"Invalid job id specified|already completing or completed|Job has already finished")

    def header_lines(self, worker):
        ap = self.checked(worker.access_point, "access point")
        nodes = max(1, int(worker.nodes))
        # one task per node with that node's cores (--mem is per node): the batch step, and on several nodes the
        # step of one launcher per node (launch.py), or the payload's own srun
        tasks = ["--nodes=1", "--ntasks=1"] if nodes == 1 else [f"--nodes={nodes}", "--ntasks-per-node=1"]
        return [f"--job-name={self.job_name(worker.worker_id)}", f"--comment={ap}", f"--chdir={ap}",
                f"--output={ap}/slurm-%j.out", f"--error={ap}/slurm-%j.err", *tasks,
                f"--cpus-per-task={int(worker.cores) // nodes}", f"--mem={int(worker.memory_mb) // nodes}M",
                f"--time={days_hms(int(worker.walltime_s))}", f"--signal=B:USR1@{STOP_WARNING_S}",
                *self.placement()]

    def placement(self):
        """The queue's ``--partition``, ``--account`` and ``--qos`` (those it sets)."""
        batch = self.queue.batch
        return [f"--{key}={self.checked(getattr(batch, key), 'batch.' + key)}"
                for key in ("partition", "account", "qos") if getattr(batch, key)]

    def start_estimate(self, nodes, cores_per_node, memory_per_node_mb, walltime_s):
        """``sbatch --test-only`` of a job of this shape (the worker's partition, account and qos): the start it
        prints, "Job N to start at 2026-12-07T03:20:11 using ..." (Slurm's clock)."""
        argv = [*self.test_only_command, f"--nodes={int(nodes)}", "--ntasks-per-node=1",
                f"--cpus-per-task={int(cores_per_node)}", f"--mem={int(memory_per_node_mb)}M",
                f"--time={days_hms(int(walltime_s))}", *self.placement(), "--wrap=true"]
        result = self.run(argv)
        match = self.test_only_start.search(f"{result.stdout}\n{result.stderr}") if result.ok else None
        if match is None:
            raise BatchError(f"sbatch --test-only: no start time: {result.describe()}")
        return datetime.datetime.fromisoformat(match["start"])

    def id_args(self, ids):
        return [f"--jobs={','.join(sorted(ids, key=int))}"]

    def parse_status(self, stdout):
        return parse_squeue(stdout)

    def parse_history(self, stdout):
        return parse_sacct(stdout)  # its ElapsedRaw is the time charged for the jobs squeue no longer lists

    def listed(self, ids):
        """squeue, and the time charged for the jobs it lists as ended (:meth:`with_usage`)."""
        return self.with_usage(super().listed(ids))

    def with_usage(self, result):
        """ONE ``squeue --Format=JobID,TimeUsed`` for the ended jobs squeue listed: their elapsed time. A failed
        query leaves it unknown; it never holds the states back."""
        ended = sorted((i for i, s in result.states.items() if s.state in ENDED and s.elapsed_s is None), key=int)
        if result.status != OK or not ended:
            return result
        found = self.run([*self.usage_command, *self.id_args(ended)])
        if not found.ok:
            log.warning("queue %s: the elapsed time of ended jobs is unknown: %s", self.queue.name,
                        found.describe())
            return result
        for fields in (line.split("|") for line in found.stdout.splitlines()):
            seconds = duration_s(fields[1]) if len(fields) >= 2 and fields[0] in ended else None
            if seconds is not None:
                result.states[fields[0]] = dataclasses.replace(result.states[fields[0]], elapsed_s=seconds,
                                                               charge_source="squeue TimeUsed")
        return result

    def find(self, access_point):
        """The id of the job whose comment or working directory is ``access_point`` (squeue), else of the
        ``slurm-<id>.out`` Slurm wrote there (a job squeue forgot); None when neither; the newest if several."""
        result = self.run(self.find_command)
        if not result.ok:
            raise BatchError(f"cannot look for the job of {access_point}: {result.describe()}")
        found = [int(f[0]) for f in (line.split("|") for line in result.stdout.splitlines())
                 if len(f) >= 3 and f[0].isdigit() and access_point in (f[1], "|".join(f[2:-1]))]
        if not found:  # ended longer ago than squeue remembers (MinJobAge): the output file Slurm made names it
            found = [int(m["job_id"]) for m in map(self.output_file.fullmatch, self.transport.listdir(access_point))
                     if m]
        return str(max(found)) if found else None


def parse_squeue(text):
    """``{job id: BatchStatus}`` from :attr:`SlurmBatch.status_command` output (``id|state|wait status|nodes|
    reason|``; the wait status is exit code << 8 | signal)."""
    states = {}
    for fields in (line.split("|") for line in text.splitlines()):
        if len(fields) >= 5 and fields[0].isdigit():
            status = int(fields[2]) if fields[2].isdigit() else 0
            code = 128 + (status & 0x7F) if status & 0x7F else status >> 8
            states[fields[0]] = native_state(fields[0], fields[1], code, fields[3], "|".join(fields[4:]).rstrip("|"))
    return states


def parse_sacct(text):
    """``{job id: BatchStatus}`` from ``sacct --parsable2`` (JobID|State|ExitCode code:signal|NodeList|Reason);
    steps (``123.batch``) and array or het parts are not workers."""
    states = {}
    for fields in (line.split("|") for line in text.splitlines()):
        if len(fields) >= 5 and fields[0].isdigit():
            code, _, signum = fields[2].partition(":")
            exit_code = 128 + int(signum) if signum.isdigit() and int(signum) else int(code) if code.isdigit() else None
            state = native_state(fields[0], fields[1].split()[0], exit_code, fields[3], fields[4])
            if len(fields) >= 6 and fields[5].isdigit() and state.state in ENDED:
                state = dataclasses.replace(state, elapsed_s=float(fields[5]), charge_source="sacct ElapsedRaw")
            states[fields[0]] = state
    return states


def duration_s(text):
    """Seconds of a Slurm duration (``[D-][HH:]MM:SS``), None when it is not one."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not (days.isdigit() or not days) or not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return float(seconds + int(days or 0) * 86400)


def native_state(job_id, native, exit_code, nodes, reason):
    """One job's :class:`BatchStatus`: ``Slurm job <id> <STATE> (<reason>), exit code N on <nodes>``."""
    state = STATES.get(native, "failed" if native else "submitted")
    diag = f"Slurm job {job_id} {native}" + (f" ({reason})" if reason and reason != "None" else "")
    if state in ENDED and exit_code is not None:
        diag += f", exit code {exit_code}"
    if nodes and nodes not in ("(null)", "None assigned"):
        diag += f" on {nodes}"
    return BatchStatus(state, diag, exit_code if state in ENDED else None, native, native == "TIMEOUT")
