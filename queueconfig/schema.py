"""The queue schema: frozen pydantic models, one per section of a queue.

Keys that PanDA or Harvester already have keep their PanDA spelling (``maxWorkers``, ``corecount``,
``prodSourceLabels``, ``mapType``); keys new to minipanda are snake_case. Every field has a default, so ``{}`` is a
valid queue (one core, local fork, pull mode). Defaults that depend on other keys (``site``, ``mapType``, the
worker limits) are filled in before validation, so a loaded queue always holds effective values.
Cross-key rules live in :mod:`queueconfig.checks`.
"""
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from queueconfig import fields, placeholders
from queueconfig.checks import problems
from queueconfig.fields import (Count, Environment, FileName, Flag, Fraction, Host, HostPort, Name, OneLine, Path,
                                Port, Positive, Program, Seconds, Token, Url, User)

Label = Literal["managed", "user", "test", "ptest", "rc_test", "rc_test2", "rc_alrb", "prod_test", "install", "panda"]


class Section(BaseModel):
    """Base of every section: immutable, unknown keys refused. The docstring under each attribute describes its key
    in the JSON Schema (queueconfig.jsonschema reads them when the schema is asked for, not at every import)."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


class Resources(Section):
    """What one worker (one pilot) offers; the PanDA schedconfig names and units."""

    corecount: Positive = 1
    """Cores of one worker."""
    maxrss: Positive = 2000
    """Memory of one worker, MB (a job may use up to this)."""
    minrss: Count = 0
    """Smallest memory request of a job this queue accepts, MB."""
    maxtime: Positive = 86400
    """Longest walltime of a job, s."""
    maxwdir: Positive = 10000
    """Scratch space of a job's working directory, MB."""
    maxinputsize: Count = 10000
    """Largest total size of a job's input files, MB."""
    nodes_per_worker: Annotated[Positive, Field(le=1024)] = 1
    """Nodes in one worker's batch allocation (Slurm); pilot.per_node pilots run on each node (Harvester: nCore /
    nCorePerNode)."""
    cores_per_node: Optional[Positive] = None
    """Cores of one node (Harvester's nCorePerNode); default corecount x pilots per node. Jobs that need several
    nodes are counted in nodes of this size."""
    max_job_nodes: Annotated[Positive, Field(le=1024)] = 1
    """Most nodes one job may use. Above 1 the queue takes jobs larger than a node (mode push, OneToOne, Slurm):
    each gets one worker of ceil(coreCount / cores_per_node) nodes (maxrss MB on each) and runs with the
    allocation's node list."""


class Limits(Section):
    """How many workers and jobs harvester keeps for the queue (Harvester's names and meaning)."""

    maxWorkers: Count = 10
    """Most workers at once (queued + running); 0 stops submission."""
    nQueueLimitWorker: Optional[Count] = None
    """Most queued (not yet running) workers; default maxWorkers."""
    maxNewWorkersPerCycle: Optional[Count] = None
    """Most workers submitted in one submitter cycle; default maxWorkers."""
    nQueueLimitJob: Optional[Count] = None
    """Push mode: most jobs fetched ahead of workers; default maxWorkers x jobsPerWorker. Ignored in pull mode."""
    nQueueLimitWorkerRatio: Optional[Count] = None
    """Queued-worker limit as a percentage of running workers."""
    nQueueLimitWorkerMin: Optional[Count] = None
    """Floor of the ratio-based queued-worker limit (and 1 core, 1000 MB per worker of the core and memory ones)."""
    nQueueLimitWorkerMax: Optional[Count] = None
    """Ceiling of the queued-worker limit (Harvester: an alias of nQueueLimitWorker)."""
    nQueueLimitWorkerCores: Optional[Count] = None
    """Most cores held by queued workers."""
    nQueueLimitWorkerCoresRatio: Optional[Count] = None
    """Queued-core limit as a percentage of running cores."""
    nQueueLimitWorkerCoresMin: Optional[Count] = None
    """Floor of the ratio-based queued-core limit."""
    nQueueLimitWorkerMemory: Optional[Count] = None
    """Most memory held by queued workers, MB."""
    nQueueLimitWorkerMemoryRatio: Optional[Count] = None
    """Queued-memory limit as a percentage of running memory."""
    nQueueLimitWorkerMemoryMin: Optional[Count] = None
    """Floor of the ratio-based queued-memory limit, MB."""
    nQueueLimitJobRatio: Optional[Count] = None
    """Prefetched-job limit as a percentage of running jobs."""
    nQueueLimitJobMin: Optional[Count] = None
    """Floor of the ratio-based prefetched-job limit."""
    nQueueLimitJobMax: Optional[Count] = None
    """Ceiling of the prefetched-job limit (Harvester: an alias of nQueueLimitJob)."""
    nQueueLimitJobCores: Optional[Count] = None
    """Most cores requested by prefetched jobs."""
    nQueueLimitJobCoresRatio: Optional[Count] = None
    """Prefetched-core limit as a percentage of running cores."""
    nQueueLimitJobCoresMin: Optional[Count] = None
    """Floor of the ratio-based prefetched-core limit."""
    maxNewWorkersPerMinute: Optional[Count] = None
    """Most workers submitted in any minute (politeness towards the batch system); default no cap."""
    extraPilotFraction: Fraction = 0.0
    """Pull mode: submit activated jobs x (1 + this) pilots, to cover pilots that find no job."""
    extraPilots: Count = 0
    """Pull mode: pilots submitted beyond the activated jobs."""
    maxSubmissionAttempts: Positive = 3
    """Submission attempts of one worker before it is given up."""

    @model_validator(mode="before")
    @classmethod
    def _default_from_max_workers(cls, data):
        if isinstance(data, dict):
            cap = data.get("maxWorkers", cls.model_fields["maxWorkers"].default)
            if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0:
                data = {"nQueueLimitWorker": cap, "maxNewWorkersPerCycle": cap, **data}
        return data


class Batch(Section):
    """The batch system that runs the workers, and what goes into each job script."""

    system: Literal["local", "slurm", "pbs", "lsf", "htcondor"] = "local"
    """local (fork on the submit host), slurm, pbs, lsf or htcondor."""
    partition: Optional[Token] = None
    """Slurm partition, or PBS/LSF queue."""
    account: Optional[Token] = None
    """Account (Slurm/PBS/LSF) or accounting group (HTCondor) charged."""
    qos: Optional[Token] = None
    """Slurm quality of service."""
    walltime: Optional[Positive] = None
    """Walltime requested for a worker, s; default pilot.lifetime plus 10 minutes."""
    shape: Literal["fixed", "backfill"] = "fixed"
    """fixed: every worker asks for resources.nodes_per_worker nodes and batch.walltime. backfill (Slurm): harvester
    asks the scheduler (sbatch --test-only) when each of a few shapes within those limits would start, and submits
    the one that starts soonest and still fits the waiting work."""
    min_walltime: Optional[Positive] = None
    """backfill: the shortest walltime a worker may be given, s; default batch.walltime (only the nodes vary)."""
    schedd: Optional[Host] = None
    """HTCondor schedd name; default the local schedd."""
    pool: Optional[HostPort] = None
    """HTCondor central manager host[:port]; default the local pool."""
    held_timeout: Positive = 3600
    """HTCondor: seconds a job may stay held before harvester removes it (the hold reason becomes the diag)."""
    token_file: Optional[Path] = None
    """HTCondor: an IDTOKEN file (mode 0600) for the schedd; harvester then authenticates with IDTOKENS only.
    Default: FS authentication with a local schedd, the host's HTCondor configuration with a remote one."""
    file_transfer: Flag = False
    """HTCondor: the pilot zipapp, its token and queuedata travel with the job (HTCondor file transfer, spooled
    through the schedd) and the pilot runs in HTCondor's scratch directory: no file system shared with the execute
    nodes (nor the schedd) is needed. Pull mode only."""
    extra_directives: tuple[str, ...] = ()
    """Extra scheduler options, one per entry (Slurm/PBS/LSF: '--exclusive'; HTCondor: 'key = value')."""
    skip_directives: tuple[OneLine, ...] = ()
    """Prefixes of generated directives to leave out (e.g. '--mem' where a site forbids it)."""
    environment: Environment = Field(default_factory=dict, validate_default=True)
    """Environment variables set in the job script, NAME: value (values are quoted, not expanded)."""
    setup: tuple[OneLine, ...] = ()
    """Shell lines run in the job script before the pilot starts (e.g. 'module load python/3.11')."""

    @field_validator("extra_directives")
    @classmethod
    def _check_directives(cls, value, info: ValidationInfo):
        check = fields.condor_directive if info.data.get("system") == "htcondor" else fields.directive
        problems = []
        for index, line in enumerate(value):
            try:
                check(line)
            except ValueError as exc:
                problems.append(f"entry {index} {line!r} {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return value


class Transport(Section):
    """How harvester reaches the batch system: on this host, or over SSH (host keys always verified)."""

    type: Literal["local", "ssh"] = "local"
    """local or ssh."""
    host: Optional[Host] = None
    """SSH: the login/submit host."""
    port: Port = 22
    """SSH: port of the host."""
    user: Optional[User] = None
    """SSH: login name; default the harvester's user."""
    key_file: Optional[Path] = None
    """SSH: private key file; default the SSH agent and ~/.ssh keys."""
    known_hosts: Optional[Path] = None
    """SSH: known_hosts file used to verify host keys; default ~/.ssh/known_hosts."""
    accept_unknown_host: Flag = False
    """SSH: trust a host whose key is not yet in known_hosts on first connection, and record its key there (a
    changed key is always refused); default false: an unknown host is refused."""
    jump_host: Optional[Host] = None
    """SSH: optional jump (bastion) host."""
    jump_port: Port = 22
    """SSH: port of the jump host."""
    jump_user: Optional[User] = None
    """SSH: login name on the jump host; default user."""
    workdir: Optional[Path] = None
    """Base directory of worker directories, on the submit host; default under harvester's home (~ when ssh)."""
    connect_timeout: Positive = 30
    """SSH: seconds to wait for a connection."""
    command_timeout: Positive = 300
    """Seconds a batch command (submit, status, cancel) may take."""
    python: Program = "python3"
    """SSH: the Python 3 (3.6 or later) on the submit host that harvester's file operations in access points and
    storage paths run with (a helper kept open per connection; SFTP cannot refuse symlinks safely)."""


class Handoff(Section):
    """File names of the handoff protocol in the worker's directory (as pilot3, Harvester and our pilot use them)."""

    job: FileName = "pandaJobData.out"
    """Job definitions, harvester -> pilot."""
    request: FileName = "worker_requestjob.json"
    """A job request, pilot -> harvester."""
    attributes: FileName = "worker_attributes.json"
    """The pilot's report at each update, pilot -> harvester."""
    report: FileName = "jobReport.json"
    """The payload's job report, pilot -> harvester."""
    event_status: FileName = "event_status.dump.json"
    """Outputs of a finished job, pilot -> harvester."""
    pandaids: FileName = "worker_pandaids.json"
    """PandaIDs of the worker."""
    kill: FileName = "kill_worker"
    """Touched by the pilot when it is done (or asked to stop)."""
    kill_payload: FileName = "pilot_kill_payload"
    """Touched by harvester to make the pilot kill its payload."""
    heartbeat: FileName = "worker_heartbeat.json"
    """Touched by the pilot at each heartbeat."""

    @model_validator(mode="after")
    def _distinct(self):
        seen = {}
        for key, value in self:
            if value in seen:
                raise ValueError(f"{key} and {seen[value]} are both {value!r}: each handoff file needs its own name")
            seen[value] = key
        return self


class Pilot(Section):
    """What the pilot does on the worker node."""

    timefloor: Count = 0
    """Minutes during which a pilot keeps asking for new jobs; 0 = one job per pilot."""
    lifetime: Positive = 86400
    """Seconds a pilot may live."""
    per_worker: Annotated[Positive, Field(le=256)] = 1
    """Pilots one worker runs side by side in its batch allocation (ManyToOne or pull mode), each with
    resources.corecount cores and maxrss memory and its own handoff directory pilot-N in the access point; the
    worker asks the batch system for per_worker times the cores and memory."""
    per_node: Optional[Annotated[Positive, Field(le=256)]] = None
    """Pilots on each node of a worker (resources.nodes_per_worker x per_node in all); default 1 on a worker of
    several nodes, else pilot.per_worker."""
    stageout_reserve: Count = 300
    """Seconds of a pilot's lifetime kept for stage-out and its final report: no job starts later than that."""
    heartbeat: Positive = 300
    """Seconds between job heartbeats."""
    lost_heartbeat: Positive = 1800
    """Seconds without a heartbeat after which the server declares the job lost."""
    looping_limit: Positive = 7200
    """Seconds without any file in the job directory changing before the job counts as looping."""
    getjob_tries: Positive = 2
    """Job requests a pilot makes before it gives up when the server has no job for it."""
    getjob_interval: Seconds = 60
    """Seconds between a pilot's job requests that found no job."""
    handoff_wait: Positive = 300
    """File mode: seconds a pilot waits for harvester to answer its request for another job."""
    copytool: Literal["copy", "symlink", "mv", "http"] = "mv"
    """Stage-in tool: copy, symlink, mv (copy in, move out) or http (storage.input type server)."""
    handoff: Handoff = Field(default_factory=Handoff)
    """Names of the handoff files."""
    handoff_max_bytes: Positive = 1048576
    """Most bytes harvester reads of one handoff file from a pilot (reports, job requests, PandaID lists, outbox
    entries); a larger one fails that worker's job with a diag saying so, and is never read."""
    extra_args: tuple[OneLine, ...] = ()
    """Extra pilot arguments, one argv element per entry."""
    command: Optional[Annotated[tuple[OneLine, ...], Field(min_length=1)]] = None
    """The pilot's whole command line, one argv element per entry, instead of minipanda's pilot zipapp; may use
    the placeholders {access_point} {queue} {queuedata} {storagedata} {walltime} {server} {token_file}."""
    environment: Environment = Field(default_factory=dict, validate_default=True)
    """Environment variables of the pilot, NAME: value; values may use the placeholders of command."""

    @field_validator("command")
    @classmethod
    def _check_command(cls, value):
        _check_placeholders(enumerate(value or ()), "entry {key} {text!r}")
        return value

    @field_validator("environment")
    @classmethod
    def _check_environment(cls, value):
        _check_placeholders(value.items(), "{key}: {text!r}")
        return value


def _check_placeholders(items, label):
    """Raise one ValueError naming every entry whose placeholders are wrong."""
    problems = []
    for key, text in items:
        try:
            placeholders.check(text)
        except ValueError as exc:
            problems.append(f"{label.format(key=key, text=text)} {exc}")
    if problems:
        raise ValueError("; ".join(problems))


class Sweeper(Section):
    """When harvester gives up on a worker and how long it keeps a worker's directory."""

    max_queued_time: Positive = 172800
    """Seconds a worker may stay queued (submitted, not yet running) before it is killed."""
    stale_time: Optional[Positive] = None
    """Seconds without any sign of life from a running pilot before its worker is killed; default
    pilot.lost_heartbeat."""
    keep_finished: Count = 86400
    """Seconds the directory of a finished worker is kept (0: removed at once)."""
    keep_failed: Count = 259200
    """Seconds the directory of a failed, cancelled or missed worker is kept, for a look at its logs."""


class Endpoint(Section):
    """Where files are read from or written to."""

    type: Literal["local", "shared", "server"] = "local"
    """local (the worker's own directory), shared (a directory on a shared file system) or server (the minipanda
    server's file store, over HTTP)."""
    path: Optional[Path] = None
    """shared: the directory."""
    url: Optional[Url] = None
    """server: URL template of a file, with {lfn} {scope} {dataset}; a leading '/' is relative to the server."""


class Storage(Section):
    """Input and output storage of jobs (pilots and harvester must see the same paths)."""

    input: Endpoint = Field(default_factory=Endpoint)
    output: Endpoint = Field(default_factory=Endpoint)


class Queue(Section):
    """One computing queue (a PanDA queue): identity, mode, resources, limits, batch, transport, pilot, storage,
    sweeper."""

    name: Name
    """The queue's name (its key in the file)."""
    template: Optional[Name] = None
    """Queue whose values this one inherits (Harvester's templateQueueName)."""
    is_template: Flag = False
    """Only a template: not a real queue (Harvester's isTemplateQueue)."""
    description: OneLine = ""
    """Free text."""
    site: Optional[Name] = None
    """Site the queue belongs to; default the queue name."""
    status: Literal["online", "offline", "test", "brokeroff"] = "online"
    """online, offline (nothing dispatched or submitted), test (test jobs only), brokeroff (no new tasks)."""
    prodSourceLabels: tuple[Label, ...] = Field(("managed", "user"), min_length=1)
    """Job labels served (managed, user, test, ptest, ...); default both production and user jobs (a Harvester
    file's queue without prodSourceLabel serves managed, as in Harvester)."""
    mode: Literal["pull", "push"] = "pull"
    """pull: pilots fetch their jobs; push: harvester fetches jobs and hands them to workers."""
    mapType: Optional[Literal["NoJob", "OneToOne", "ManyToOne"]] = None
    """Jobs per worker: NoJob (pull), OneToOne or ManyToOne (push); default from mode."""
    jobsPerWorker: Positive = 1
    """ManyToOne: jobs given to one worker."""
    wnconnectivity: Literal["full", "http", "none"] = "full"
    """Network of worker nodes: full, http (to the server only) or none (files only, harvester relays)."""
    resources: Resources = Field(default_factory=Resources)
    limits: Limits = Field(default_factory=Limits)
    batch: Batch = Field(default_factory=Batch)
    transport: Transport = Field(default_factory=Transport)
    pilot: Pilot = Field(default_factory=Pilot)
    storage: Storage = Field(default_factory=Storage)
    sweeper: Sweeper = Field(default_factory=Sweeper)

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data):
        return derived_defaults(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo):
        if (info.context or {}).get("checks", True) and not self.is_template:
            errors = [f"{'.'.join(p.loc)}: {p.text}" for p in problems(self) if p.level == "error"]
            if errors:
                raise ValueError("; ".join(errors))
        return self


WALLTIME_MARGIN_S = 600  # batch.walltime's default: the pilot's lifetime plus time to stage out and report


def derived_defaults(data):
    """Fill the defaults that depend on other keys into a raw queue dict (a new dict; the input is not changed)."""
    data = dict(data)
    if isinstance(data.get("name"), str):
        data.setdefault("site", data["name"])
    mode = data.get("mode", "pull")
    if mode in ("pull", "push"):
        data.setdefault("mapType", "NoJob" if mode == "pull" else "OneToOne")
    limits, per_worker = data.get("limits", {}), data.get("jobsPerWorker", 1)
    if mode == "push" and isinstance(limits, dict) and "nQueueLimitJob" not in limits:
        cap = limits.get("maxWorkers", Limits.model_fields["maxWorkers"].default)
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (cap, per_worker)):
            data["limits"] = {**limits, "nQueueLimitJob": cap * per_worker}
    pilot, sweeper, batch = data.get("pilot", {}), data.get("sweeper", {}), data.get("batch", {})
    if isinstance(pilot, dict) and isinstance(batch, dict) and batch.get("walltime") is None:
        lifetime = pilot.get("lifetime", Pilot.model_fields["lifetime"].default)
        if isinstance(lifetime, int) and not isinstance(lifetime, bool) and lifetime >= 1:
            data["batch"] = {**batch, "walltime": lifetime + WALLTIME_MARGIN_S}
    if isinstance(pilot, dict) and isinstance(sweeper, dict) and "stale_time" not in sweeper:
        lost = pilot.get("lost_heartbeat", Pilot.model_fields["lost_heartbeat"].default)
        if isinstance(lost, int) and not isinstance(lost, bool) and lost >= 1:
            data["sweeper"] = {**sweeper, "stale_time": lost}
    return data


def ordered(raw, model=Queue):
    """A copy of a raw queue dict with its keys in schema order (unknown keys last), for readable output."""
    rank = {key: index for index, key in enumerate(model.model_fields)}
    result = {}
    for key in sorted(raw, key=lambda k: rank.get(k, len(rank))):
        value, field = raw[key], model.model_fields.get(key)
        sub = _section_model(field.annotation) if field else None
        result[key] = ordered(value, sub) if sub and isinstance(value, dict) else value
    return result


def _section_model(annotation):
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
