"""The server's tables (peewee models), bound at start to the database chosen by URL (see :mod:`minipanda.core.db`).

Column names are snake_case; :mod:`minipanda.core.jobspec` maps them to and from PanDA's wire names (PandaID,
jobPars, minRamCount, ...). Job attributes that minipanda stores but never queries live in ``Job.attributes``
(JSON) so that every PanDA JobSpec field a client sends comes back unchanged.
"""
import peewee
from minipanda.core.db import database

TEXT_LIMIT = 4000  # longest diagnostic kept per field; PanDA's columns are VARCHAR2(500..4000)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Job(BaseModel):
    panda_id = peewee.BigAutoField(column_name="panda_id")
    job_definition_id = peewee.BigIntegerField(default=0)
    jobset_id = peewee.BigIntegerField(default=0)
    task_id = peewee.BigIntegerField(null=True)
    job_name = peewee.CharField(max_length=256, default="")
    status = peewee.CharField(max_length=32)
    computing_site = peewee.CharField(max_length=128)
    prod_source_label = peewee.CharField(max_length=32, default="managed")
    prod_user_name = peewee.CharField(max_length=128, default="")
    working_group = peewee.CharField(max_length=128, null=True)
    vo = peewee.CharField(max_length=32, null=True)
    transformation = peewee.TextField(default="")
    job_pars = peewee.TextField(default="")
    attempt_nr = peewee.IntegerField(default=0)
    max_attempt = peewee.IntegerField(default=3)
    current_priority = peewee.IntegerField(default=1000)
    assigned_priority = peewee.IntegerField(default=1000)
    core_count = peewee.IntegerField(default=1)
    min_ram_count = peewee.IntegerField(default=0)
    max_walltime = peewee.IntegerField(default=0)
    max_cpu_count = peewee.IntegerField(default=0)
    max_disk_count = peewee.IntegerField(default=0)
    resource_type = peewee.CharField(max_length=32, null=True)
    creation_time = peewee.DateTimeField()
    modification_time = peewee.DateTimeField()
    state_changed_time = peewee.DateTimeField()
    start_time = peewee.DateTimeField(null=True)
    end_time = peewee.DateTimeField(null=True)
    heartbeat_time = peewee.DateTimeField(null=True)
    pilot_id = peewee.CharField(max_length=256, null=True)
    batch_id = peewee.CharField(max_length=128, null=True)
    node = peewee.CharField(max_length=256, null=True)
    harvester_id = peewee.CharField(max_length=128, null=True)
    worker_id = peewee.BigIntegerField(null=True)
    command_to_pilot = peewee.CharField(max_length=32, null=True)
    trans_exit_code = peewee.IntegerField(null=True)
    pilot_error_code = peewee.IntegerField(null=True)
    pilot_error_diag = peewee.TextField(null=True)
    exe_error_code = peewee.IntegerField(null=True)
    exe_error_diag = peewee.TextField(null=True)
    sup_error_code = peewee.IntegerField(null=True)
    sup_error_diag = peewee.TextField(null=True)
    cpu_consumption_time = peewee.BigIntegerField(null=True)
    cpu_consumption_unit = peewee.CharField(max_length=128, null=True)
    n_events = peewee.BigIntegerField(null=True)
    max_rss = peewee.BigIntegerField(null=True)
    max_pss = peewee.BigIntegerField(null=True)
    max_vmem = peewee.BigIntegerField(null=True)
    avg_rss = peewee.BigIntegerField(null=True)
    avg_pss = peewee.BigIntegerField(null=True)
    actual_core_count = peewee.IntegerField(null=True)
    job_metrics = peewee.TextField(null=True)
    pilot_timing = peewee.TextField(null=True)
    metadata = peewee.TextField(null=True)
    attributes = peewee.TextField(default="{}")
    # Schema 3 (tasks): scout jobs, the brokerage decision that placed the job, and whether the task side has
    # taken note of the job's final state (False only for task jobs not yet settled; NULL on older rows).
    scout = peewee.BooleanField(null=True, default=False)
    settled = peewee.BooleanField(null=True, default=True)
    brokerage_id = peewee.BigIntegerField(null=True)

    class Meta:
        table_name = "job"


# Schema 11: three more indexes are partial, so a job changing state rewrites only the entries it needs (dispatch
# order only while activated, the unsettled jobs' states, the states of task jobs): minipanda.core.schema.JOB_INDEXES.
# Schema 8: jobs that reached a state in a time range (the monitor's charts; the retention duty's old final jobs):
# without it, every finished job of the live table is read through the status index. Since schema 12 it also
# gives the monitor's lists, most recently changed first (minipanda.monitor.queries.newest_ids), which had an
# index of their own on (modification_time, panda_id) from schema 8 to 11.
Job.add_index(Job.index(Job.status, Job.state_changed_time, name="job_status_changed"))


class JobFile(BaseModel):
    row_id = peewee.BigAutoField()
    job = peewee.ForeignKeyField(Job, backref="files", column_name="panda_id", object_id_name="panda_id",
                                  on_delete="CASCADE")
    type = peewee.CharField(max_length=20)  # input, output, log
    lfn = peewee.CharField(max_length=256)
    guid = peewee.CharField(max_length=64, null=True)
    scope = peewee.CharField(max_length=128, null=True)
    dataset = peewee.CharField(max_length=256, null=True)
    destination_dblock = peewee.CharField(max_length=256, null=True)
    fsize = peewee.BigIntegerField(null=True)
    checksum = peewee.CharField(max_length=64, null=True)
    status = peewee.CharField(max_length=32, default="ready")
    surl = peewee.TextField(null=True)

    class Meta:
        table_name = "job_file"
        indexes = ((("job", "type"), False),)


class StatusLog(BaseModel):
    panda_id = peewee.BigIntegerField(index=True)
    old_status = peewee.CharField(max_length=32, null=True)
    new_status = peewee.CharField(max_length=32)
    time = peewee.DateTimeField()
    reason = peewee.CharField(max_length=512, default="")
    # Schema 5: "transition" rows are state changes (each one in the transition table); "note" rows record a
    # decision about a job that stays in its state (the retry module's verdict on a failed job).
    kind = peewee.CharField(max_length=16, default="transition")

    class Meta:
        table_name = "status_log"


class Queue(BaseModel):
    name = peewee.CharField(max_length=128, primary_key=True)
    site = peewee.CharField(max_length=128, default="")
    status = peewee.CharField(max_length=32, default="online")
    queuedata = peewee.TextField(default="{}")
    modification_time = peewee.DateTimeField()

    class Meta:
        table_name = "queue"


class Worker(BaseModel):
    """A pilot's batch job as reported by harvester (harvester/update_workers) or by the pilot itself
    (updateWorkerPilotStatus, which sets only ``pilot_status`` and the times)."""

    harvester_id = peewee.CharField(max_length=128)
    worker_id = peewee.BigIntegerField()
    computing_site = peewee.CharField(max_length=128, default="")
    pilot_status = peewee.CharField(max_length=32, null=True)
    node = peewee.CharField(max_length=256, null=True)
    start_time = peewee.DateTimeField(null=True)
    end_time = peewee.DateTimeField(null=True)
    modification_time = peewee.DateTimeField()
    # Schema 4 (harvester): the worker as harvester reports it. NULL on rows only a pilot has written.
    status = peewee.CharField(max_length=32, null=True)
    batch_id = peewee.CharField(max_length=128, null=True)
    n_core = peewee.IntegerField(null=True)
    n_memory = peewee.IntegerField(null=True)  # MB
    walltime = peewee.IntegerField(null=True)  # seconds
    submit_time = peewee.DateTimeField(null=True)
    diag = peewee.TextField(null=True)
    access_point = peewee.TextField(null=True)
    pandaid_list = peewee.TextField(null=True)  # JSON list of PandaIDs
    # Schema 10: what the ended allocation delivered, as harvester summed it (docs/harvester.md); NULL when unknown
    n_nodes = peewee.IntegerField(null=True)
    elapsed_s = peewee.FloatField(null=True)  # charged per node by the scheduler
    charge_source = peewee.CharField(max_length=64, null=True)
    payload_wall_s = peewee.FloatField(null=True)
    payload_cpu_s = peewee.FloatField(null=True)
    pilot_wait_s = peewee.FloatField(null=True)
    pilot_drain_s = peewee.FloatField(null=True)
    jobs_run = peewee.IntegerField(null=True)

    class Meta:
        table_name = "worker"
        indexes = ((("harvester_id", "worker_id"), True),)


# `minipanda worker list --queue Q --status S` reads workers of one queue, newest first.
Worker.add_index(Worker.index(Worker.computing_site, Worker.status, name="worker_site_status"))


class Token(BaseModel):
    jti = peewee.CharField(max_length=64, primary_key=True)
    name = peewee.CharField(max_length=128)
    role = peewee.CharField(max_length=32)
    created = peewee.DateTimeField()
    expires = peewee.DateTimeField()
    revoked = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "token"


class Config(BaseModel):
    key = peewee.CharField(max_length=128, primary_key=True)
    value = peewee.TextField()

    class Meta:
        table_name = "config"


# ---- tasks (schema 3) ---------------------------------------------------------------------------------------------

FIRST_TASK_ID = 10_000_000  # pbook treats smaller numbers as request ids


class Task(BaseModel):
    """A JEDI task: one command over one input (or none), split into jobs by the generator."""

    jedi_task_id = peewee.BigAutoField()
    req_id = peewee.BigIntegerField(null=True)
    parent_tid = peewee.BigIntegerField(null=True)
    task_name = peewee.CharField(max_length=256)
    user_name = peewee.CharField(max_length=128, index=True)
    vo = peewee.CharField(max_length=32, default="")
    working_group = peewee.CharField(max_length=128, null=True)
    prod_source_label = peewee.CharField(max_length=32, default="user")
    status = peewee.CharField(max_length=32, index=True)
    old_status = peewee.CharField(max_length=32, null=True)  # the status a paused task resumes to
    params = peewee.TextField()  # the parameters as submitted (JSON)
    spec = peewee.TextField()  # the normalised parameters the generator works from (JSON)
    in_ds = peewee.CharField(max_length=256, null=True)
    site = peewee.TextField(default="")  # comma-separated queues the user allowed, empty = any
    excluded_site = peewee.TextField(default="")
    core_count = peewee.IntegerField(default=1)
    ram_count = peewee.IntegerField(default=0)  # MB per job
    walltime = peewee.IntegerField(default=0)  # seconds
    max_attempt = peewee.IntegerField(default=3)
    task_priority = peewee.IntegerField(null=True)
    n_scouts = peewee.IntegerField(default=0)
    n_chunks = peewee.IntegerField(default=0)  # jobs the split plans (first attempts)
    serial = peewee.IntegerField(default=0)  # last output serial number used
    error_dialog = peewee.TextField(default="")
    creation_time = peewee.DateTimeField()
    modification_time = peewee.DateTimeField(index=True)
    state_changed_time = peewee.DateTimeField()
    start_time = peewee.DateTimeField(null=True)
    end_time = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "task"


class TaskLog(BaseModel):
    task_id = peewee.BigIntegerField(index=True)
    old_status = peewee.CharField(max_length=32, null=True)
    new_status = peewee.CharField(max_length=32)
    time = peewee.DateTimeField()
    reason = peewee.CharField(max_length=512, default="")

    class Meta:
        table_name = "task_log"


class Dataset(BaseModel):
    """A named collection of files: registered input, or a task's output or log."""

    name = peewee.CharField(max_length=256, unique=True)
    type = peewee.CharField(max_length=16, default="input")  # input, output, log
    user_name = peewee.CharField(max_length=128)
    task_id = peewee.BigIntegerField(null=True, index=True)
    creation_time = peewee.DateTimeField()
    modification_time = peewee.DateTimeField()

    class Meta:
        table_name = "dataset"


class DatasetFile(BaseModel):
    """One file of a dataset (JEDI_DATASET_CONTENTS for registered data): where it is and what it holds."""

    file_id = peewee.BigAutoField()
    dataset = peewee.ForeignKeyField(Dataset, backref="files", on_delete="CASCADE")
    lfn = peewee.CharField(max_length=256)
    guid = peewee.CharField(max_length=64)
    fsize = peewee.BigIntegerField(default=0)
    checksum = peewee.CharField(max_length=64, default="")
    location = peewee.TextField(default="")  # directory (or URL) holding the file
    n_events = peewee.BigIntegerField(null=True)
    status = peewee.CharField(max_length=32, default="ready")
    panda_id = peewee.BigIntegerField(null=True)  # the job that produced an output
    creation_time = peewee.DateTimeField()
    # Schema 8: when a person (not a pilot) first downloaded the file from the server's file store; the retention
    # duty deletes a fetched output of a finished task sooner (minipanda.tasks.storeclean).
    fetched_time = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "file"
        # (lfn) finds the row of a file the store serves (GET /files/<scope>/<lfn> marks it fetched).
        indexes = ((("dataset", "lfn"), True), (("lfn",), False))


class TaskInput(BaseModel):
    """One piece of a task's input: a file, an event range of a file, or pseudo input. ``chunk`` is the job it
    belongs to in the split; ``status`` follows PanDA's input file states (ready, picked, running, finished,
    failed); ``panda_id`` is the latest job that processes it."""

    row_id = peewee.BigAutoField()
    task_id = peewee.BigIntegerField()
    chunk = peewee.IntegerField()
    file_id = peewee.BigIntegerField(null=True)
    lfn = peewee.CharField(max_length=256, null=True)
    dataset = peewee.CharField(max_length=256, null=True)
    guid = peewee.CharField(max_length=64, null=True)
    fsize = peewee.BigIntegerField(default=0)
    checksum = peewee.CharField(max_length=64, null=True)
    location = peewee.TextField(null=True)
    first_event = peewee.BigIntegerField(null=True)
    n_events = peewee.BigIntegerField(null=True)
    status = peewee.CharField(max_length=32, default="ready")
    attempt_nr = peewee.IntegerField(default=0)  # attempts made so far; the next job is attempt_nr + 1
    max_attempt = peewee.IntegerField(null=True)  # None: the task's maxAttempt (a task retry raises it)
    ram_count = peewee.IntegerField(null=True)  # None: the task's; set by increase_memory retries
    walltime = peewee.IntegerField(null=True)  # None: the task's; set by increase_walltime retries
    panda_id = peewee.BigIntegerField(null=True, index=True)

    class Meta:
        table_name = "task_input"
        # (task_id, status, chunk) serves the generator's "next ready chunks in order" without a sort.
        indexes = ((("task_id", "chunk"), False), (("task_id", "status", "chunk"), False))


class Brokerage(BaseModel):
    """One brokerage decision for a batch of jobs with the same needs: every candidate queue and why it was kept
    or skipped."""

    id = peewee.BigAutoField()
    task_id = peewee.BigIntegerField(null=True, index=True)
    time = peewee.DateTimeField()
    requirements = peewee.TextField()  # JSON
    candidates = peewee.TextField()  # JSON list of {queue, kept, reason, running, queued, weight}
    outcome = peewee.TextField(default="")

    class Meta:
        table_name = "brokerage"


class RetryRule(BaseModel):
    """Retry module rule: a failure matching (source, code, diag regex) gets ``action``."""

    error_source = peewee.CharField(max_length=16, default="any")  # pilot, exe, sup, any
    error_code = peewee.IntegerField(null=True)  # None matches any code
    diag_pattern = peewee.CharField(max_length=256, default="")
    action = peewee.CharField(max_length=32)  # no_retry, limit_retry, increase_memory, increase_walltime
    parameter = peewee.FloatField(null=True)
    active = peewee.BooleanField(default=True)
    description = peewee.CharField(max_length=256, default="")
    created = peewee.DateTimeField()

    class Meta:
        table_name = "retry_rule"


# ---- harvester (schema 4) ------------------------------------------------------------------------------------------


class HarvesterInstance(BaseModel):
    """A harvester process as its last heartbeat described it."""

    harvester_id = peewee.CharField(max_length=128, primary_key=True)
    host = peewee.CharField(max_length=256, default="")
    version = peewee.CharField(max_length=64, default="")
    start_time = peewee.DateTimeField(null=True)
    last_heartbeat = peewee.DateTimeField()
    agents = peewee.TextField(null=True)  # JSON {agent: {runs, errors, last_duration, last_error_time}} (metrics)
    # Schema 7: JSON {"queues": {queue: {paused, backoff_s, failures, error}}, "home": {size_bytes, avail_bytes}}
    # from the heartbeat: what an admin is alerted on (/metrics), which only harvester knows.
    report = peewee.TextField(null=True)

    class Meta:
        table_name = "harvester_instance"


class HarvesterCommand(BaseModel):
    """A command to harvester (KILL_WORKERS, SET_N_WORKERS, REPORT_WORKER_STATS). ``harvester_id`` NULL means
    any harvester: the first to acquire it takes it (``acquired_by``), the others never see it."""

    id = peewee.BigAutoField()
    harvester_id = peewee.CharField(max_length=128, null=True)
    command = peewee.CharField(max_length=64)
    params = peewee.TextField(default="{}")  # JSON
    ack_requested = peewee.BooleanField(default=True)
    status = peewee.CharField(max_length=16, default="queued")  # queued, sent, acknowledged
    acquired_by = peewee.CharField(max_length=128, null=True)
    creation_time = peewee.DateTimeField()
    status_time = peewee.DateTimeField()

    class Meta:
        table_name = "harvester_command"
        indexes = ((("status", "harvester_id", "id"), False),)


class WorkerStatistics(BaseModel):
    """The latest worker counts one harvester reported for one queue: {jobType: {resourceType: {status: n}}}."""

    harvester_id = peewee.CharField(max_length=128)
    queue = peewee.CharField(max_length=128)
    statistics = peewee.TextField()  # JSON
    modification_time = peewee.DateTimeField()

    class Meta:
        table_name = "worker_statistics"
        indexes = ((("harvester_id", "queue"), True),)


# ---- retention (schema 8) -----------------------------------------------------------------------------------------


class RetentionStat(BaseModel):
    """What the retention duty has done since the database was made, per kind (jobs and tasks archived, archives
    expired, log tarballs, outputs and sandboxes deleted): read by /metrics, so every server process reports the
    same totals and they outlive restarts."""

    kind = peewee.CharField(max_length=32, primary_key=True)
    count = peewee.BigIntegerField(default=0)
    bytes = peewee.BigIntegerField(default=0)
    last_time = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "retention_stat"


TASK_MODELS = [Task, TaskLog, Dataset, DatasetFile, TaskInput, Brokerage, RetryRule]
HARVESTER_MODELS = [HarvesterInstance, HarvesterCommand, WorkerStatistics]
ALL_MODELS = [Job, JobFile, StatusLog, Queue, Worker, Token, Config] + TASK_MODELS + HARVESTER_MODELS + [RetentionStat]
