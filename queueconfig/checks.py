"""Rules that involve more than one key of a queue: conflicting settings (errors) and doubtful ones (warnings).

Each rule yields a :class:`Problem`: level ``"error"`` or ``"warning"``, ``loc`` the key the problem is reported on
(a tuple of keys from the queue), a text that names the other key involved and says why, and ``related``, the other
keys the rule read (so that the loader can leave out a conflict whose other side is itself invalid).
"""
from typing import NamedTuple

from queueconfig import allocation

ERROR, WARNING = "error", "warning"
PILOT_STOP_MARGIN_S = 60  # a pilot's lifetime is its worker's walltime minus this (harvester.handoff.pilots)


class Problem(NamedTuple):
    """One cross-key problem of a queue."""

    level: str
    loc: tuple
    text: str
    related: tuple = ()

_SSH_ONLY = ("host", "user", "key_file", "known_hosts", "jump_host", "jump_port", "jump_user", "port",
             "accept_unknown_host")
_MIN_MAX = ("nQueueLimitWorker", "nQueueLimitJob")
# a floor key -> the ratio keys it is the floor of (nQueueLimitWorkerMin also raises the core and memory floors)
_FLOORS = {"nQueueLimitWorkerMin": ("nQueueLimitWorkerRatio", "nQueueLimitWorkerCoresRatio",
                                    "nQueueLimitWorkerMemoryRatio"),
           "nQueueLimitWorkerCoresMin": ("nQueueLimitWorkerCoresRatio",),
           "nQueueLimitWorkerMemoryMin": ("nQueueLimitWorkerMemoryRatio",),
           "nQueueLimitJobMin": ("nQueueLimitJobRatio", "nQueueLimitJobCoresRatio"),
           "nQueueLimitJobCoresMin": ("nQueueLimitJobCoresRatio",)}
_JOB_LIMITS = ("nQueueLimitJob", "nQueueLimitJobRatio", "nQueueLimitJobMin", "nQueueLimitJobMax",
               "nQueueLimitJobCores", "nQueueLimitJobCoresRatio", "nQueueLimitJobCoresMin")


def problems(queue):
    """All cross-key problems of a validated queue.

    Args:
        queue: a :class:`queueconfig.schema.Queue`.

    Returns:
        A list of :class:`Problem`, errors and warnings mixed, in a stable order.
    """
    found = []
    for rule in (_mode, _limits, _resources, _nodes, _batch, _transport, _pilot, _storage, _sweeper):
        found.extend(Problem(*problem) for problem in rule(queue))
    return found


def _mode(q):
    if q.mode == "push" and q.mapType == "NoJob":
        yield ERROR, ("mapType",), ("NoJob means empty pilots that fetch their own jobs, but mode is push "
                                    "(harvester fetches jobs and binds them to workers): use mapType OneToOne or "
                                    "ManyToOne, or mode pull"), (("mode",),)
    if q.mode == "pull" and q.mapType != "NoJob":
        yield ERROR, ("mapType",), (f"{q.mapType} binds jobs to workers, which needs mode push; in mode pull "
                                    "pilots fetch their own jobs (mapType NoJob)"), (("mode",),)
    if q.jobsPerWorker > 1 and q.mapType != "ManyToOne":
        yield ERROR, ("jobsPerWorker",), (f"{q.jobsPerWorker} jobs per worker needs mapType ManyToOne "
                                          f"(mapType is {q.mapType})"), (("mapType",),)
    if q.mapType == "ManyToOne" and q.jobsPerWorker == 1:
        yield WARNING, ("jobsPerWorker",), "mapType ManyToOne with jobsPerWorker 1 works like OneToOne", (("mapType",),)
    if q.wnconnectivity == "none" and q.mode == "pull":
        yield ERROR, ("wnconnectivity",), ("none means the pilot has no network, so it cannot fetch a job itself: "
                                           "use mode push (harvester fetches jobs and hands them over in files)"), \
            (("mode",),)


def _limits(q):
    lim, cap = q.limits, ("limits", "maxWorkers")
    for key in ("nQueueLimitWorker", "maxNewWorkersPerCycle"):
        value = getattr(lim, key)
        if value is not None and value > lim.maxWorkers:
            yield ERROR, ("limits", key), (f"{value} is above limits.maxWorkers ({lim.maxWorkers}): no more than "
                                           "maxWorkers workers ever exist, so this limit could never take effect"), \
                (cap,)
    for base in _MIN_MAX:
        low, high = getattr(lim, base + "Min"), getattr(lim, base + "Max")
        if low is not None and high is not None and low > high:
            yield ERROR, ("limits", base + "Min"), f"{low} is above limits.{base}Max ({high})", \
                (("limits", base + "Max"),)
    for key, ratios in _FLOORS.items():
        if getattr(lim, key) is not None and all(getattr(lim, ratio) is None for ratio in ratios):
            yield WARNING, ("limits", key), (f"does nothing without limits.{' or limits.'.join(ratios)}: it is the "
                                             "floor of a limit given as a percentage of what runs"), \
                tuple(("limits", ratio) for ratio in ratios)
    if q.mode == "pull":
        for key in _JOB_LIMITS:
            if key in lim.model_fields_set:
                yield WARNING, ("limits", key), "ignored in mode pull: pilots fetch their own jobs", (("mode",),)
    if q.mode == "push":
        for key in ("extraPilots", "extraPilotFraction"):
            if key in lim.model_fields_set and getattr(lim, key):
                yield WARNING, ("limits", key), "ignored in mode push: workers are sized by the jobs fetched", \
                    (("mode",),)
        if lim.nQueueLimitJob == 0:
            yield ERROR, ("limits", "nQueueLimitJob"), "0 in mode push: harvester would never fetch a job", (("mode",),)


def _resources(q):
    res = q.resources
    if res.minrss > res.maxrss:
        yield ERROR, ("resources", "minrss"), (f"{res.minrss} MB is above resources.maxrss ({res.maxrss} MB): "
                                               "no job could fit"), (("resources", "maxrss"),)
    if res.maxinputsize > res.maxwdir:
        yield WARNING, ("resources", "maxinputsize"), (f"{res.maxinputsize} MB of input would not fit in "
                                                       f"resources.maxwdir ({res.maxwdir} MB)"), \
            (("resources", "maxwdir"),)
    if res.maxtime > q.pilot.lifetime:
        yield WARNING, ("resources", "maxtime"), (f"jobs may run {res.maxtime} s but pilot.lifetime is "
                                                  f"{q.pilot.lifetime} s: the longest jobs would be cut off"), \
            (("pilot", "lifetime"),)


def _nodes(q):
    """Workers of several nodes, pilots per node, and jobs larger than a node."""
    res, pilot, system = q.resources, q.pilot, q.batch.system
    nodes, per_node = res.nodes_per_worker, allocation.pilots_per_node(q)
    for key, value in (("nodes_per_worker", nodes), ("max_job_nodes", res.max_job_nodes)):
        if value > 1 and system != "slurm":
            yield ERROR, ("resources", key), (f"{value} nodes need batch.system slurm (the pilots and payloads on "
                                              f"the other nodes are started with srun); {system} cannot spread a "
                                              "worker over several nodes"), (("batch", "system"),)
    if nodes > 1 and q.mapType == "OneToOne":
        yield ERROR, ("resources", "nodes_per_worker"), (
            f"{nodes} nodes per worker, but mapType OneToOne gives a worker one job: use mode pull or mapType "
            "ManyToOne for pilots on several nodes, or resources.max_job_nodes for jobs that need several nodes"), \
            (("mapType",),)
    if pilot.per_node is not None and "per_worker" in pilot.model_fields_set and \
            pilot.per_worker != nodes * pilot.per_node:
        yield ERROR, ("pilot", "per_worker"), (f"{pilot.per_worker} pilots per worker, but resources.nodes_per_worker "
                                               f"{nodes} x pilot.per_node {pilot.per_node} makes "
                                               f"{nodes * pilot.per_node}: set one of them"), \
            (("pilot", "per_node"), ("resources", "nodes_per_worker"))
    elif pilot.per_node is None and nodes > 1 and "per_worker" in pilot.model_fields_set and \
            pilot.per_worker % nodes:
        yield ERROR, ("pilot", "per_worker"), (f"{pilot.per_worker} pilots cannot be spread evenly over "
                                               f"resources.nodes_per_worker {nodes} nodes: set pilot.per_node"), \
            (("resources", "nodes_per_worker"),)
    if pilot.per_node is not None and q.mapType == "OneToOne" and pilot.per_node > 1:
        yield ERROR, ("pilot", "per_node"), (f"{pilot.per_node} pilots per node, but mapType OneToOne gives a worker "
                                             "one job: use mapType ManyToOne (push) or mode pull"), (("mapType",),)
    if res.cores_per_node is not None:
        if res.corecount > res.cores_per_node:
            yield ERROR, ("resources", "corecount"), (f"{res.corecount} cores per pilot are more than "
                                                      f"resources.cores_per_node ({res.cores_per_node})"), \
                (("resources", "cores_per_node"),)
        elif per_node * res.corecount > res.cores_per_node:
            key = "per_node" if pilot.per_node is not None or nodes > 1 else "per_worker"
            yield ERROR, ("pilot", key), (f"{per_node} pilots x resources.corecount {res.corecount} = "
                                          f"{per_node * res.corecount} cores on one node, above "
                                          f"resources.cores_per_node ({res.cores_per_node}): the pilots of a node "
                                          "would not fit on it"), \
                (("resources", "cores_per_node"), ("resources", "corecount"))
    if res.max_job_nodes > 1:
        if q.mode != "push" or q.mapType != "OneToOne":
            yield ERROR, ("resources", "max_job_nodes"), (
                f"jobs of up to {res.max_job_nodes} nodes need mode push with mapType OneToOne: harvester must hold "
                f"the job to give it a worker of its size (mode is {q.mode}, mapType {q.mapType})"), \
                (("mode",), ("mapType",))
        if res.cores_per_node is None:
            yield ERROR, ("resources", "cores_per_node"), (
                f"missing: resources.max_job_nodes {res.max_job_nodes} counts a job's cores in nodes, which needs "
                "the cores of one node"), (("resources", "max_job_nodes"),)


def _batch(q):
    batch, system = q.batch, q.batch.system
    related = (("batch", "system"),)
    if system != "htcondor":
        for key in ("schedd", "pool", "token_file", "file_transfer"):
            if getattr(batch, key) not in (None, False):
                yield ERROR, ("batch", key), f"only meaningful with batch.system htcondor (system is {system})", related
    if batch.file_transfer and q.mode == "push":
        yield ERROR, ("batch", "file_transfer"), (
            "mode push needs a file system the pilot shares with harvester: jobs (and, without network, every "
            "report) go through files in the access point while the pilot runs, and HTCondor's file transfer moves "
            "files only when the job starts and ends; use mode pull, or access points on a shared file system "
            "without file_transfer"), (("mode",),)
    if batch.file_transfer and q.transport.type == "ssh":
        yield ERROR, ("batch", "file_transfer"), (
            "transport type ssh: harvester sends the job's input files to the schedd from its own host, but the "
            "access points are on the ssh host; use transport type local with file_transfer"), (("transport", "type"),)
    unsupported = {"local": ("partition", "account", "qos"), "htcondor": ("partition", "qos"),
                   "pbs": ("qos",), "lsf": ("qos",)}.get(system, ())
    for key in unsupported:
        if getattr(batch, key) is not None:
            yield ERROR, ("batch", key), f"batch.system {system} has no {key}", related
    if system == "local" and batch.extra_directives:
        yield ERROR, ("batch", "extra_directives"), "batch.system local has no scheduler to pass directives to", related
    if batch.shape == "backfill" and system != "slurm":
        yield ERROR, ("batch", "shape"), (f"backfill asks the scheduler when a job would start (sbatch --test-only), "
                                          f"which only batch.system slurm offers (system is {system})"), related
    if batch.min_walltime is not None and batch.shape != "backfill":
        yield WARNING, ("batch", "min_walltime"), "does nothing without batch.shape backfill", (("batch", "shape"),)
    if batch.min_walltime is not None and batch.walltime is not None and batch.min_walltime > batch.walltime:
        yield ERROR, ("batch", "min_walltime"), (f"{batch.min_walltime} s is longer than batch.walltime "
                                                 f"({batch.walltime} s), the longest a worker may ask"), \
            (("batch", "walltime"),)
    if batch.walltime is not None and batch.walltime < q.pilot.lifetime:
        yield ERROR, ("batch", "walltime"), (f"{batch.walltime} s is shorter than pilot.lifetime "
                                             f"({q.pilot.lifetime} s): the batch system would kill pilots early"), \
            (("pilot", "lifetime"),)


def _transport(q):
    tr, related = q.transport, (("transport", "type"),)
    if tr.type == "ssh" and tr.host is None:
        yield ERROR, ("transport", "host"), "missing: transport type ssh needs the host to connect to", related
    if tr.type == "local":
        for key in _SSH_ONLY:
            if key in tr.model_fields_set:
                yield ERROR, ("transport", key), "only meaningful with transport type ssh (type is local)", related
    if tr.type == "ssh" and tr.jump_host is None:
        for key in ("jump_port", "jump_user"):
            if key in tr.model_fields_set:
                yield ERROR, ("transport", key), "set without transport.jump_host", (("transport", "jump_host"),)


def _pilot(q):
    pilot = q.pilot
    if pilot.timefloor * 60 > pilot.lifetime:
        yield ERROR, ("pilot", "timefloor"), (f"{pilot.timefloor} min is longer than pilot.lifetime "
                                              f"({pilot.lifetime} s)"), (("pilot", "lifetime"),)
    if pilot.lost_heartbeat < 2 * pilot.heartbeat:
        yield ERROR, ("pilot", "lost_heartbeat"), (f"{pilot.lost_heartbeat} s is less than twice pilot.heartbeat "
                                                   f"({pilot.heartbeat} s): one late heartbeat would mark a "
                                                   "healthy job as lost"), (("pilot", "heartbeat"),)
    if pilot.command is not None and pilot.extra_args:
        yield ERROR, ("pilot", "extra_args"), ("set with pilot.command, which replaces the whole pilot command "
                                               "line: put these arguments into pilot.command"), \
            (("pilot", "command"),)
    if pilot.per_worker > 1 and q.mapType == "OneToOne":
        yield ERROR, ("pilot", "per_worker"), (f"{pilot.per_worker} pilots per worker, but mapType OneToOne gives a "
                                               "worker one job: use mapType ManyToOne (push) or mode pull"), \
            (("mapType",),)
    if pilot.per_worker > 1 and q.mapType == "ManyToOne" and q.jobsPerWorker < pilot.per_worker:
        yield WARNING, ("pilot", "per_worker"), (f"{pilot.per_worker} pilots per worker share jobsPerWorker "
                                                 f"{q.jobsPerWorker} jobs: some pilots start with no job and wait "
                                                 "for one"), (("jobsPerWorker",),)
    shortest = q.batch.min_walltime if q.batch.shape == "backfill" and q.batch.min_walltime else q.batch.walltime
    # the reserve is our pilot's rule: a queue's own pilot.command (pilot3, a site's wrapper) keeps its own
    if pilot.command is None and shortest is not None and pilot.stageout_reserve + PILOT_STOP_MARGIN_S >= shortest:
        yield ERROR, ("pilot", "stageout_reserve"), (
            f"{pilot.stageout_reserve} s leaves no time for a job in a worker of {shortest} s (batch."
            f"{'min_walltime' if shortest != q.batch.walltime else 'walltime'}): the pilot ends "
            f"{PILOT_STOP_MARGIN_S} s before the walltime and starts no job later than this reserve before its end"), \
            (("batch", "walltime"), ("batch", "min_walltime"))
    if pilot.copytool == "http" and q.wnconnectivity == "none":
        yield ERROR, ("pilot", "copytool"), ("http needs network on the worker node, but wnconnectivity is none: "
                                             "use copy, symlink or mv with shared storage"), (("wnconnectivity",),)


def _storage(q):
    sides = {"input": q.storage.input, "output": q.storage.output}
    for side, end in sides.items():
        related = (("storage", side, "type"),)
        if end.type == "shared" and end.path is None:
            yield ERROR, ("storage", side, "path"), "missing: type shared needs the directory", related
        if end.type != "shared" and end.path is not None:
            yield ERROR, ("storage", side, "path"), f"only meaningful with type shared (type is {end.type})", related
        if end.type != "server" and end.url is not None:
            yield ERROR, ("storage", side, "url"), f"only meaningful with type server (type is {end.type})", related
        if end.type == "server" and q.wnconnectivity == "none" and q.mode != "push":
            yield ERROR, ("storage", side, "type"), ("server means the pilot moves files over HTTP, but "
                                                     "wnconnectivity is none and no harvester relays them (pull "
                                                     "mode): use type shared or local, or mode push"), \
                (("wnconnectivity",), ("mode",))
    tool, source = q.pilot.copytool, q.storage.input.type
    relayed = q.mode == "push" and q.wnconnectivity == "none"  # harvester stages: the pilot sees its directory only
    if tool == "http" and relayed:
        yield ERROR, ("pilot", "copytool"), ("http needs network, but wnconnectivity is none: harvester puts the "
                                             "inputs in the pilot's directory; use copy, symlink or mv"), \
            (("wnconnectivity",),)
    elif tool == "http" and source != "server":
        yield ERROR, ("pilot", "copytool"), (f"http downloads inputs from the server's file store, but "
                                             f"storage.input is type {source}: use copy, symlink or mv, or "
                                             "storage.input type server"), (("storage", "input", "type"),)
    if source == "server" and tool != "http" and not relayed:
        yield ERROR, ("pilot", "copytool"), (f"{tool} works on files the worker node can see, but storage.input "
                                             "is type server: use copytool http"), (("storage", "input", "type"),)


def _sweeper(q):
    stale, heartbeat = q.sweeper.stale_time, q.pilot.heartbeat
    # equal to lost_heartbeat (its default): the pilot rule above already reports a too short one
    if stale is not None and stale < 2 * heartbeat and stale != q.pilot.lost_heartbeat:
        yield ERROR, ("sweeper", "stale_time"), (f"{stale} s is less than twice pilot.heartbeat ({heartbeat} s): "
                                                 "one late heartbeat would get a healthy pilot killed"), \
            (("pilot", "heartbeat"),)
