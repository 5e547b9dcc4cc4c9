"""The batch plugin contract: render a worker's job script, submit workers, query many in ONE call, cancel, find.

A plugin is one small class per batch system (dask-jobqueue style), made for ONE queue: the queue, the transport
that reaches its submit host and a spool directory are given when it is made (:func:`harvester.batch.plugin_for`),
and no plugin changes them. Commands are class attributes, each an argv list run through the transport with the
queue's ``transport.command_timeout``, never a shell line. Results are typed: every outcome is ``ok``, ``retry``
(try again later: the scheduler is busy, the connection dropped) or ``fatal`` (this worker can never be submitted
as it is: a bad script, a refused option).
"""
import dataclasses
import re
import shlex
from typing import Optional

OK, RETRY, FATAL = "ok", "retry", "fatal"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE_BREAK = re.compile(r"[\n\r]")


@dataclasses.dataclass(frozen=True)
class PilotLaunch:
    """One of several pilots of a worker: its own handoff directory, command line, and the environment variables
    whose values differ from the worker's (its HARVESTER_WORKDIR, placeholders naming its directory)."""

    directory: str
    argv: tuple
    environment: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a plugin needs to know of one worker (a plain copy, so plugins never touch the database); the queue's
    settings are the plugin's own.

    Attributes:
        worker_id: harvester's id of the worker.
        access_point: the worker's directory on the batch system's file system.
        argv: the pilot's command line (argv list) the job script runs.
        environment: environment variables the job script sets (NAME -> value; values quoted, never expanded).
        cores, memory_mb, walltime_s: what the worker asks the batch system for (for all its pilots together).
        pilots: when the worker runs several pilots side by side (pilot.per_worker), one :class:`PilotLaunch`
            each, and ``argv`` is unused; empty for one pilot.
        nodes: nodes of the allocation (cores and memory are spread evenly over them); with several pilots, the
            first len(pilots) / nodes run on the first node, and so on. One pilot on several nodes runs on the first
            and its payload gets the allocation (a job that needs several nodes).
    """

    worker_id: int
    access_point: str
    argv: tuple
    environment: dict
    cores: int
    memory_mb: int
    walltime_s: int
    pilots: tuple = ()
    nodes: int = 1


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """The outcome of submitting one worker: ``status`` is ok/retry/fatal; ``batch_id`` set when ok."""

    worker_id: int
    status: str
    batch_id: Optional[str] = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class BatchStatus:
    """What the batch system says of one batch job.

    Attributes:
        state: a worker state (a ``harvester.states.WorkerStatus`` value).
        diag: the scheduler's own words (native state, reason, exit code), kept as the worker's diag.
        exit_code: the job's exit code once it ended (128+N after signal N), else None.
        native: the scheduler's own state code (Slurm ``TIMEOUT``, PBS ``F``, LSF ``EXIT``, HTCondor ``4``).
        walltime_exceeded: the scheduler ended the job at its time limit (Slurm TIMEOUT, PBS -29, LSF
            TERM_RUNLIMIT), which is not a failure of the pilot's payload.
    """

    state: str
    diag: str = ""
    exit_code: Optional[int] = None
    native: str = ""
    walltime_exceeded: bool = False
    elapsed_s: Optional[float] = None
    """Once it ended: the time the scheduler charges for it (on each of its nodes), s, when it says."""
    charge_source: str = ""
    """Where ``elapsed_s`` comes from (``sacct ElapsedRaw``, ``squeue TimeUsed``)."""


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """The outcome of one status query: ``status`` ok/retry/fatal, ``states`` batch id -> :class:`BatchStatus`.
    A batch id missing from ``states`` is one the batch system does not know (any more)."""

    status: str
    states: dict = dataclasses.field(default_factory=dict)
    message: str = ""


@dataclasses.dataclass(frozen=True)
class CancelResult:
    """The outcome of cancelling: ``status`` ok/retry/fatal per batch id in ``results`` (id -> (status, message))."""

    results: dict = dataclasses.field(default_factory=dict)


class BatchError(Exception):
    """Raised inside a plugin; ``status`` says whether retrying can help."""

    def __init__(self, message, status=RETRY):
        super().__init__(message)
        self.status = status


class BatchSystem:
    """Base of every batch plugin.

    Args:
        queue: the :class:`queueconfig.schema.Queue` served; status() and cancel() read its settings here.
        transport: where commands run (:mod:`harvester.transport`).
        spool: a directory on the batch side the plugin may use for its own files (local plugin: pid and exit
            files), or None.
    """

    name = "base"
    script_name = "job.sh"
    """The job script's file name in the worker's access point."""
    several_nodes = False
    """Whether the plugin can run a worker on several nodes (WorkerSpec.nodes above 1)."""
    one_line_values = True
    """Whether a value written into the job script must be one line (a scheduler that reads directives from the
    script could take a line of a value for one)."""

    def __init__(self, queue, transport, spool=None):
        self.queue, self.transport, self.spool = queue, transport, spool

    def run(self, argv, input=None, cwd=None):
        """Run one scheduler command through the transport, bounded by the queue's ``transport.command_timeout``."""
        return self.transport.run(list(argv), timeout=self.queue.transport.command_timeout, input=input, cwd=cwd)

    def start_estimate(self, nodes, cores_per_node, memory_per_node_mb, walltime_s):
        """When the scheduler would start a job of this shape (a datetime on its clock); a :class:`BatchError` when
        it cannot tell (batch.shape backfill, :mod:`harvester.shapes`)."""
        raise BatchError(f"batch system {self.name} cannot estimate start times", FATAL)

    def script_path(self, worker: WorkerSpec) -> str:
        """Where the job script of ``worker`` lives (in its access point, on the batch side)."""
        return f"{worker.access_point.rstrip('/')}/{self.script_name}"

    def write_script(self, worker: WorkerSpec) -> str:
        """Render the job script and write it into the worker's access point (created if needed); its path."""
        if worker.nodes > 1 and not self.several_nodes:
            raise BatchError(f"queue {self.queue.name}: worker {worker.worker_id} asks {worker.nodes} nodes, but "
                             f"batch system {self.name} runs a worker on one node only", FATAL)
        self.transport.makedirs(worker.access_point, 0o755)
        path = self.script_path(worker)
        self.transport.write_file(path, self.render(worker), 0o700)
        return path

    def exports(self, worker):
        """The ``export NAME=value`` lines of :meth:`environment`, each value quoted."""
        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in self.environment(worker))

    def environment(self, worker):
        """(name, value) pairs: the queue's ``batch.environment``, then the worker's own (harvester's ids,
        pilot.environment).

        Raises:
            BatchError: (fatal) a name that is no variable name, a NUL, or (``one_line_values``) a line break in a
                value, or in the pilots' arguments and environments, which this script cannot hold.
        """
        merged = {**self.queue.batch.environment, **worker.environment}
        pairs = [(name, str(value)) for name, value in merged.items()]
        values = [value for _, value in pairs] + [str(v) for v in worker.argv] + [
            str(v) for pilot in worker.pilots for v in (*pilot.argv, *pilot.environment.values())]
        names = [name for name, _ in pairs] + [name for pilot in worker.pilots for name in pilot.environment]
        bad = [name for name in names if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise BatchError(f"worker {worker.worker_id}: environment variables {bad} cannot be set (a name is "
                             "letters, digits and _)", FATAL)
        broken = [v for v in values if "\0" in v or self.one_line_values and _LINE_BREAK.search(v)]
        if broken:
            rule = "a line break or NUL" if self.one_line_values else "a NUL byte"
            raise BatchError(f"worker {worker.worker_id}: {broken[0][:80]!r} cannot be written into its job script: "
                             f"no environment value or pilot argument may hold {rule} (it would end its line)",
                             FATAL)
        return pairs

    def render(self, worker: WorkerSpec) -> str:
        """The job script text for one worker (every value quoted)."""
        raise NotImplementedError

    def submit(self, workers) -> list:
        """Submit each worker whose script is already in its access point; one :class:`SubmitResult` each."""
        raise NotImplementedError

    def status(self, batch_ids) -> QueryResult:
        """The state of many batch jobs in ONE call."""
        raise NotImplementedError

    def cancel(self, batch_ids) -> CancelResult:
        """Cancel batch jobs (one call where the scheduler allows it)."""
        raise NotImplementedError

    def find(self, access_point):
        """The batch id of the job submitted for ``access_point``, or None when the batch system has none: how a
        submission that a killed harvester left unrecorded is recovered, never submitted twice.

        Raises:
            BatchError: the batch system cannot tell now (a lookup that fails is never "not there").
        """
        raise NotImplementedError

    def forget(self, batch_ids):
        """Drop what the plugin keeps of ended batch jobs; the sweeper calls it when it cleans their workers up."""
