"""The server's tables (peewee models), bound at start to the database chosen by URL (see :mod:`minipanda.db`).

Column names are snake_case; :mod:`minipanda.jobspec` maps them to and from PanDA's wire names (PandaID,
jobPars, minRamCount, ...). Job attributes that minipanda stores but never queries live in ``Job.attributes``
(JSON) so that every PanDA JobSpec field a client sends comes back unchanged.
"""
import peewee

from minipanda.db import database

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

    class Meta:
        table_name = "job"


# Dispatch reads activated jobs of one queue in (priority desc, id) order: this index serves that ORDER BY directly.
Job.add_index(Job.index(Job.status, Job.computing_site, Job.current_priority.desc(), Job.panda_id,
                        name="job_dispatch_order"))


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
    """A pilot's batch job as reported by harvester or by the pilot itself (updateWorkerPilotStatus)."""

    harvester_id = peewee.CharField(max_length=128)
    worker_id = peewee.BigIntegerField()
    computing_site = peewee.CharField(max_length=128, default="")
    pilot_status = peewee.CharField(max_length=32, null=True)
    node = peewee.CharField(max_length=256, null=True)
    start_time = peewee.DateTimeField(null=True)
    end_time = peewee.DateTimeField(null=True)
    modification_time = peewee.DateTimeField()

    class Meta:
        table_name = "worker"
        indexes = ((("harvester_id", "worker_id"), True),)


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


ALL_MODELS = [Job, JobFile, StatusLog, Queue, Worker, Token, Config]
