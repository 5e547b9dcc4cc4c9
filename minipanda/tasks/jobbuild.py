"""Building job rows from a task chunk: placeholders, output and log names, and bulk inserts.

Names: outputs are ``<taskID>._<serial>.<name>`` and logs ``<taskID>._<serial>.log.tgz`` (flat form), or the
task's JEDI templates expanded with ``$JEDITASKID`` and ``${SN}``. The serial is the task's counter, one per job
(a retry gets a new serial, so a failed attempt's files never collide with the next one's).
"""
import json
import math
import shlex

from minipanda.core import models
from minipanda.core.bulk import insert_rows
from minipanda.tasks.jediparams import JEDI_PLACEHOLDER
from minipanda.tasks.taskparams import FLAT_PLACEHOLDER

JOB_COLUMNS = ("panda_id", "job_definition_id", "jobset_id", "task_id", "job_name", "status", "computing_site",
               "prod_source_label", "prod_user_name", "working_group", "vo", "transformation", "job_pars",
               "attempt_nr", "max_attempt", "current_priority", "assigned_priority", "core_count", "min_ram_count",
               "max_walltime", "max_cpu_count", "max_disk_count", "creation_time", "modification_time",
               "state_changed_time", "attributes", "scout", "settled", "brokerage_id")
FILE_COLUMNS = ("panda_id", "type", "lfn", "guid", "scope", "dataset", "destination_dblock", "fsize", "checksum",
                "status", "surl")
MB = 1024 * 1024


class Chunk:
    """One job's worth of input: the TaskInput rows of one chunk, and what its next attempt needs."""

    def __init__(self, index, slices):
        self.index, self.slices = index, slices
        self.attempt = max(s.attempt_nr for s in slices) + 1
        self.max_attempt = max((s.max_attempt or 0) for s in slices) or None
        self.ram = max((s.ram_count or 0) for s in slices) or None
        self.walltime = max((s.walltime or 0) for s in slices) or None
        self.parent = slices[0].panda_id  # the previous attempt, if any

    @property
    def files(self):
        return [s for s in self.slices if s.lfn]

    @property
    def disk_mb(self):
        return math.ceil(sum(s.fsize or 0 for s in self.files) / MB)


def names(task_id, serial):
    """The JEDI name variables for one job."""
    return {"JEDITASKID": str(task_id), "SN": "%06d" % serial, "SN/P": "%06d" % serial}


def expand_names(template, task_id, serial):
    """A file name template with $JEDITASKID and ${SN} filled in."""
    values = names(task_id, serial)
    return JEDI_PLACEHOLDER.sub(lambda m: values.get(m.group(3) or m.group(1) + (m.group(2) or ""), m.group(0)),
                                template)


def event_values(chunk):
    """(first event offset in the first slice, events in the job) or (None, None) without event ranges."""
    ranged = [s for s in chunk.slices if s.n_events is not None]
    if not ranged:
        return None, None
    return chunk.slices[0].first_event or 0, sum(s.n_events for s in ranged)


def expand_flat(command, chunk, outputs):
    """The flat form's ``exec`` for one chunk; ``outputs`` is [(name, lfn)]."""
    inputs = ",".join(s.lfn for s in chunk.files)
    first, n_events = event_values(chunk)
    by_name = dict(outputs)

    def value(match):
        name, arg = match.group(1), match.group(2)
        if name == "IN":
            return inputs
        if name == "OUT":
            return by_name[arg] if arg else ",".join(lfn for _, lfn in outputs)
        if name == "RNDM":
            return str(int(arg) + chunk.index)
        if name == "SKIPEVENTS":
            return str(first or 0)
        if name == "FIRSTEVENT":
            return str((first or 0) + 1)
        if name == "MAXEVENTS":
            return str(n_events if n_events is not None else -1)
        return match.group(0)

    return FLAT_PLACEHOLDER.sub(value, command)


def expand_jedi(template, chunk, task_id, serial, seq_offset=0):
    """PanDA's ``${...}`` job parameter placeholders for one chunk. ``${SURL}`` stays: it becomes the server's URL
    as the pilot that gets the job reached it (minipanda.api.file_server.with_server_url)."""
    lfns = [s.lfn for s in chunk.files]
    first, n_events = event_values(chunk)
    values = names(task_id, serial)
    values.update({"IN": ",".join(lfns), "IN/L": ",".join(lfns), "IN/T": str(lfns), "SURL": "${SURL}",
                   "SKIPEVENTS": str(first or 0), "FIRSTEVENT": str((first or 0) + 1),
                   "MAXEVENTS": str(n_events if n_events is not None else -1), "RNDMSEED": str(chunk.index + 1),
                   "SEQNUMBER": str((seq_offset or 0) + chunk.index)})
    return JEDI_PLACEHOLDER.sub(lambda m: values.get(m.group(3) or m.group(1) + (m.group(2) or ""), m.group(0)),
                                template)


def with_renames(command, outputs):
    """Run ``command``, then give its outputs their task names (as prun's wrapper does) when it succeeded."""
    renames = " && ".join(f"mv -f -- {shlex.quote(name)} {shlex.quote(lfn)}" for name, lfn in outputs)
    return "{ " + command + "\n} && " + renames


def job_rows(task, spec, chunk, serial, panda_id, now, common):
    """(job row tuple in JOB_COLUMNS order, [file row tuples]) for one chunk.

    ``common`` holds per-batch values: status, site, priority, brokerage_id, scout.
    """
    task_id = task.jedi_task_id
    outputs = [(o["name"], expand_names(o["lfn"], task_id, serial), o["dataset"]) for o in spec["outputs"]]
    log_lfn = expand_names(spec["log"]["lfn"], task_id, serial)
    if spec["form"] == "flat":
        command = expand_flat(spec["exec"], chunk, [(n, lfn) for n, lfn, _ in outputs])
        if outputs and "%OUT" not in spec["exec"]:
            command = with_renames(command, [(n, lfn) for n, lfn, _ in outputs])
        transformation, job_pars = spec["transformation"], "-c " + shlex.quote(command)
    else:
        transformation = spec["transformation"]
        job_pars = expand_jedi(spec["jobPars"], chunk, task_id, serial, spec.get("seqOffset"))
    attributes = {"processingType": "minipanda-task", "jediTaskID": task_id}
    if chunk.parent and chunk.attempt > 1:
        attributes["parentID"] = chunk.parent
    ram = chunk.ram or task.ram_count
    walltime = chunk.walltime or task.walltime
    job = (panda_id, task_id, task_id, task_id, f"{task.task_name.rstrip('/')}.{serial:06d}", common["status"],
           common["site"], task.prod_source_label, task.user_name, task.working_group, task.vo, transformation,
           job_pars, chunk.attempt, chunk.max_attempt or task.max_attempt, common["priority"], common["priority"],
           task.core_count, ram, walltime, 0, chunk.disk_mb, now, now, now, json.dumps(attributes),
           common["scout"], False, common["brokerage_id"])
    files = [(panda_id, "input", s.lfn, s.guid, None, s.dataset, None, s.fsize, s.checksum, "ready",
              f"{s.location.rstrip('/')}/{s.lfn}" if s.location else None) for s in chunk.files]
    files += [(panda_id, "output", lfn, None, dataset_scope(dataset, task.user_name), dataset, dataset, None, None,
               "defined", None) for _, lfn, dataset in outputs]
    log_dataset = spec["log"]["dataset"]
    files.append((panda_id, "log", log_lfn, None, dataset_scope(log_dataset, task.user_name), log_dataset,
                  log_dataset, None, None, "defined", None))
    return job, files


def dataset_scope(name, owner=None):
    """The scope of a user or group dataset (``user.alice.x`` -> ``user.alice``), as PanDA names them; None for
    other names (their files keep the queue's default scope). The task owner's own datasets are in the owner's
    whole scope: ``user.bob.jr.x`` of user ``bob.jr`` -> ``user.bob.jr`` (no two users' scopes overlap:
    minipanda.core.auth.check_scope_overlap)."""
    if owner and (name or "").startswith(f"user.{owner}."):
        return f"user.{owner}"
    parts = (name or "").split(".")
    return ".".join(parts[:2]) if parts[0] in ("user", "group") and len(parts) > 2 and parts[1] else None


def insert_jobs(jobs, files):
    """Bulk-insert job rows (JOB_COLUMNS tuples) and their file rows (FILE_COLUMNS tuples)."""
    convert = models.Job.creation_time.db_value
    jobs = [row[:22] + (convert(row[22]), convert(row[23]), convert(row[24])) + row[25:] for row in jobs]
    insert_rows(models.Job._meta.table_name, JOB_COLUMNS, jobs)
    insert_rows(models.JobFile._meta.table_name, FILE_COLUMNS, files)
