"""harvester's own tables (peewee, one SQLite file per harvester home).

Rows that agents work on carry a lease (``lease_owner``, ``lease_expires``): an agent claims rows with one
conditional UPDATE and only then works on them (see :mod:`harvester.db`). Times are naive UTC.
"""
import peewee

database = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Worker(BaseModel):
    """One batch job running one pilot, or several side by side (pilot.per_worker)."""

    worker_id = peewee.AutoField()
    queue = peewee.CharField(max_length=128, index=True)
    status = peewee.CharField(max_length=16, default="submitted")  # harvester.states: WorkerStatus
    map_type = peewee.CharField(max_length=16, default="NoJob")
    batch_id = peewee.CharField(max_length=128, null=True)
    submit_phase = peewee.CharField(max_length=16, default="pending")  # harvester.states: SubmitPhase
    submission_attempts = peewee.IntegerField(default=0)
    next_attempt = peewee.DateTimeField(null=True)
    access_point = peewee.CharField(max_length=1024, default="")
    cores = peewee.IntegerField(default=1)  # the whole allocation: n_pilots x the queue's corecount
    memory_mb = peewee.IntegerField(default=0)
    n_pilots = peewee.IntegerField(default=1)  # pilots side by side in the allocation, each in its own directory
    waiting_pilots = peewee.IntegerField(null=True)  # of those, how many neither took a job nor ended (monitor)
    walltime_s = peewee.IntegerField(default=0)
    nodes = peewee.IntegerField(default=1)  # nodes of the allocation (its n_pilots spread evenly over them)
    submit_time = peewee.DateTimeField(null=True)
    start_time = peewee.DateTimeField(null=True)
    end_time = peewee.DateTimeField(null=True)
    status_changed = peewee.DateTimeField(null=True)
    modification_time = peewee.DateTimeField(null=True)
    last_seen = peewee.DateTimeField(null=True)  # the pilot's last sign of life (heartbeat file, report)
    node = peewee.CharField(max_length=256, null=True)
    diag = peewee.TextField(default="")
    error_code = peewee.IntegerField(default=0)  # why it failed: harvester.states.WorkerError
    last_plugin_output = peewee.TextField(default="")  # what the batch system said last, for `harvester explain`
    kill_reason = peewee.TextField(null=True)  # set when someone asked for the worker to be killed
    pilot_token_jti = peewee.CharField(max_length=64, null=True)
    token_revoked = peewee.BooleanField(default=False)
    reported = peewee.BooleanField(default=False)  # the server has the worker's latest status
    cleaned = peewee.BooleanField(default=False)  # access point removed
    lease_owner = peewee.CharField(max_length=128, null=True)
    lease_expires = peewee.DateTimeField(null=True)
    # What the allocation delivered, once it ended (harvester.agents.accounting): the scheduler's elapsed time and
    # where it came from, and the pilots' own figures (NULL when no pilot left its usage file)
    elapsed_s = peewee.FloatField(null=True)
    charge_source = peewee.CharField(max_length=64, null=True)
    payload_wall_s = peewee.FloatField(null=True)
    payload_cpu_s = peewee.FloatField(null=True)
    pilot_wait_s = peewee.FloatField(null=True)  # pilots up without a payload (asking for a job, staging, reporting)
    pilot_drain_s = peewee.FloatField(null=True)  # pilot slots of the allocation without a pilot (ended early)
    jobs_run = peewee.IntegerField(null=True)

    class Meta:
        indexes = ((("queue", "status"), False), (("status", "cleaned"), False))


class WorkerStatusLog(BaseModel):
    """Every worker status change, with its reason."""

    id = peewee.AutoField()
    worker_id = peewee.IntegerField(index=True)
    old_status = peewee.CharField(max_length=16, null=True)
    new_status = peewee.CharField(max_length=16)
    time = peewee.DateTimeField()
    reason = peewee.TextField()
    kind = peewee.CharField(max_length=16, default="transition")  # or "note": an event without a status change


class HeldJob(BaseModel):
    """A job harvester fetched for a push-mode queue, until its final report reached the server."""

    panda_id = peewee.BigIntegerField(primary_key=True)
    queue = peewee.CharField(max_length=128, index=True)
    attempt_nr = peewee.IntegerField(default=0)
    definition = peewee.TextField()  # the getJob dict, JSON
    status = peewee.CharField(max_length=16, default="fetched")  # harvester.states: HeldJobStatus
    cores = peewee.IntegerField(default=1)  # the job's coreCount (nQueueLimitJobCores counts them)
    worker_id = peewee.IntegerField(null=True, index=True)
    fetched_time = peewee.DateTimeField()
    last_report = peewee.TextField(default="")  # the last pilot attributes forwarded, JSON
    last_heartbeat = peewee.DateTimeField(null=True)  # last heartbeat sent to the server on the pilot's behalf


class JobWorker(BaseModel):
    """Which job ran (or runs) in which worker: push-mode bindings and PandaIDs pull-mode pilots report."""

    panda_id = peewee.BigIntegerField()
    worker_id = peewee.IntegerField(index=True)
    time = peewee.DateTimeField()

    class Meta:
        indexes = ((("panda_id", "worker_id"), True),)


class Outbox(BaseModel):
    """A report for the server, kept until the server acknowledged it; sent in id order."""

    id = peewee.AutoField()
    kind = peewee.CharField(max_length=16)  # job_final, job_heartbeat
    key = peewee.CharField(max_length=128, index=True)  # job:<PandaID>:<attemptNr>: heartbeats are replaced
    payload = peewee.TextField()  # JSON
    worker_id = peewee.IntegerField(null=True)
    source_path = peewee.CharField(max_length=1024, null=True)  # a pilot outbox file to remove once delivered
    created = peewee.DateTimeField()
    tries = peewee.IntegerField(default=0)
    last_error = peewee.TextField(default="")
    rejected = peewee.BooleanField(default=False)  # refused for good by the server: kept, not resent


class Command(BaseModel):
    """A command from the server, kept until executed and acknowledged."""

    command_id = peewee.BigIntegerField(primary_key=True)
    command = peewee.CharField(max_length=64)
    params = peewee.TextField(default="{}")
    received = peewee.DateTimeField()
    status = peewee.CharField(max_length=16, default="received")  # received, done, acknowledged
    result = peewee.TextField(default="")


class QueueState(BaseModel):
    """What harvester keeps per queue: the adjuster's decision, backoff after failures, a paused queue's error."""

    queue = peewee.CharField(max_length=128, primary_key=True)
    config_error = peewee.TextField(default="")  # the queue's config is invalid: paused
    to_submit = peewee.IntegerField(default=0)  # decided by the adjuster, taken by the submitter
    decision = peewee.TextField(default="")  # JSON: each limit, its value, the winner
    decision_time = peewee.DateTimeField(null=True)
    shape = peewee.TextField(default="")  # JSON: the submitter's last backfill shape and its candidates
    failures = peewee.IntegerField(default=0)  # consecutive submission/plugin failures
    backoff_until = peewee.DateTimeField(null=True)
    last_error = peewee.TextField(default="")
    n_workers_override = peewee.IntegerField(null=True)  # SET_N_WORKERS from the server
    stats_requested = peewee.BooleanField(default=False)


class AgentRun(BaseModel):
    """The last cycle of each agent, for `harvester status`."""

    agent = peewee.CharField(max_length=32, primary_key=True)
    last_start = peewee.DateTimeField(null=True)
    last_duration = peewee.FloatField(default=0.0)
    last_error = peewee.TextField(default="")
    last_error_time = peewee.DateTimeField(null=True)
    runs = peewee.IntegerField(default=0)
    errors = peewee.IntegerField(default=0)


class Lease(BaseModel):
    """Named leases: ``instance`` is the running harvester (refreshed every cycle)."""

    name = peewee.CharField(max_length=64, primary_key=True)
    owner = peewee.CharField(max_length=128)
    pid = peewee.IntegerField(default=0)
    host = peewee.CharField(max_length=256, default="")
    expires = peewee.DateTimeField()
    started = peewee.DateTimeField()


class Setting(BaseModel):
    key = peewee.CharField(max_length=64, primary_key=True)
    value = peewee.TextField()


ALL_MODELS = [Worker, WorkerStatusLog, HeldJob, JobWorker, Outbox, Command, QueueState, AgentRun, Lease, Setting]
