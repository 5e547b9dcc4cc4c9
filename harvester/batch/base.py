"""The batch plugin contract: render a worker's job script, submit workers, query many in ONE call, cancel.

A plugin is one small class per batch system (dask-jobqueue style): its commands are class attributes, each
command an argv list run through a :class:`harvester.transport.Transport`, never a shell line. Results are typed:
every outcome is ``ok``, ``retry`` (try again later: the scheduler is busy, the connection dropped) or ``fatal``
(this worker can never be submitted as it is: a bad script, a refused option).
"""
import dataclasses
from typing import Optional

OK, RETRY, FATAL = "ok", "retry", "fatal"


@dataclasses.dataclass(frozen=True)
class PilotLaunch:
    """One of several pilots of a worker: its own handoff directory, command line, and the environment variables
    whose values differ from the worker's (its HARVESTER_WORKDIR, placeholders naming its directory)."""

    directory: str
    argv: tuple
    environment: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a plugin needs to know of one worker (a plain copy, so plugins never touch the database).

    Attributes:
        worker_id: harvester's id of the worker.
        queue: the :class:`queueconfig.schema.Queue` it serves.
        access_point: the worker's directory on the batch system's file system.
        argv: the pilot's command line (argv list) the job script runs.
        environment: environment variables the job script sets (NAME -> value; values quoted, never expanded).
        cores, memory_mb, walltime_s: what the worker asks the batch system for (for all its pilots together).
        pilots: when the worker runs several pilots side by side (pilot.per_worker), one :class:`PilotLaunch`
            each, and ``argv`` is unused; empty for one pilot.
    """

    worker_id: int
    queue: object
    access_point: str
    argv: tuple
    environment: dict
    cores: int
    memory_mb: int
    walltime_s: int
    pilots: tuple = ()


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """The outcome of submitting one worker: ``status`` is ok/retry/fatal; ``batch_id`` set when ok."""

    worker_id: int
    status: str
    batch_id: Optional[str] = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class BatchStatus:
    """What the batch system says of one batch job: a worker state (a ``harvester.states.WorkerStatus`` value)
    and the scheduler's own words (native state, reason, exit code) kept as the worker's diag."""

    state: str
    diag: str = ""
    exit_code: Optional[int] = None


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
        transport: where commands run (:mod:`harvester.transport`).
        spool: a directory on the batch side the plugin may use for its own files (local plugin: pid and exit
            files), or None.
    """

    name = "base"
    script_name = "job.sh"
    """The job script's file name in the worker's access point."""

    def __init__(self, transport, spool=None):
        self.transport, self.spool = transport, spool

    def script_path(self, worker: WorkerSpec) -> str:
        """Where the job script of ``worker`` lives (in its access point, on the batch side)."""
        return f"{worker.access_point.rstrip('/')}/{self.script_name}"

    def write_script(self, worker: WorkerSpec) -> str:
        """Render the job script and write it into the worker's access point (created if needed); its path."""
        self.transport.makedirs(worker.access_point, 0o755)
        path = self.script_path(worker)
        self.transport.write_file(path, self.render(worker), 0o700)
        return path

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
        """Drop what the plugin keeps of ended batch jobs (the sweeper calls it once a worker is cleaned up)."""
