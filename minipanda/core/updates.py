"""Pilot updates: one job's (updateJob, pilot/update_job) and a batch's (updateJobsInBulk), by the same rules.

A report may change the job's state (a transition of :data:`states.JOB_TRANSITIONS`), set the fields it reports
(exit codes, diagnostics, metrics, the job report), give a job that has none its pilotID and batchID, and register
the job's output and log files. It is refused without a write when the job is unknown or final (``tobekilled``;
a repeat of the final state itself is "alreadydone"), killed or another pilot's (``tobekilled``), never
dispatched, or when the transition is not in the table (409).

A batch is applied as set operations in ONE transaction, whatever its size: one read of all its jobs, one
conditional UPDATE per (current state, reported state, columns reported) with each job's own values, one
multi-row status_log insert, one statement for the files. Each entry is judged alone, so a bad one is answered
with its reason while the others apply. On PostgreSQL whether an entry's change won is what its conditional UPDATE
returned for that job (a kill or the watchdog may have changed the job first); on SQLite, whose one writer nothing
can overtake inside the transaction, the jobs come as one row and the UPDATEs return none: each changes every job
it was given, or the batch fails and rolls back (states.change_each_job). A single update is a batch of one.
"""
import collections
import functools
import json
import logging

import orjson
from minipanda.core import bulk, db, jobspec, models, policy, stageout, states
from minipanda.core.jobs import parse_job_id
from minipanda.core.db import database
from minipanda.core.states import FINAL_JOB_STATES, QUEUED_JOB_STATES
from minipanda.errors import PILOT_STATES, SC_FAILED, SC_OK, SC_ROLE, TOBEKILLED, RequestError

log = logging.getLogger(__name__)

INT_FIELDS = {"transExitCode": "trans_exit_code", "pilotErrorCode": "pilot_error_code",
              "exeErrorCode": "exe_error_code", "cpuConsumptionTime": "cpu_consumption_time",
              "nEvents": "n_events", "maxRSS": "max_rss", "maxPSS": "max_pss", "maxVMEM": "max_vmem",
              "avgRSS": "avg_rss", "avgPSS": "avg_pss", "coreCount": "actual_core_count"}
METADATA_LIMIT = 1024 * 1024
WHOLE_TEXT_FIELDS = {"metaData", "jobMetrics"}
TEXT_FIELDS = {"pilotErrorDiag": "pilot_error_diag", "exeErrorDiag": "exe_error_diag",
               "cpuConsumptionUnit": "cpu_consumption_unit", "jobMetrics": "job_metrics",
               "pilotTiming": "pilot_timing", "metaData": "metadata", "node": "node"}
# Worked out once, per parameter name: its column, and the largest number (an integer column holds) or the longest
# text (a text column keeps).
_REPORTED = {**{name: (column, int, jobspec.column_maximum(column)) for name, column in INT_FIELDS.items()},
             **{name: (column, str, getattr(getattr(models.Job, column), "max_length", None) or models.TEXT_LIMIT)
                for name, column in TEXT_FIELDS.items()}}
_FINAL = frozenset(s.value for s in FINAL_JOB_STATES)
_QUEUED = frozenset(s.value for s in QUEUED_JOB_STATES)
_ALLOWED = frozenset((source.value, target.value) for source, targets in states.JOB_TRANSITIONS.items()
                     for target in targets)
_READ = ("panda_id", "status", "command_to_pilot", "attempt_nr", "pilot_id", "batch_id", "harvester_id",
         "worker_id", "task_id", "computing_site")
_FILE_CODE_LIMIT = 64  # guid and checksum columns


class _Job:
    """The columns of a job that judging an update reads, in the order of _READ (assigned at once: a setattr per
    column took 1.8 us per job, inside the writer's lock, against 0.4)."""

    __slots__ = _READ

    def __init__(self, row):
        (self.panda_id, self.status, self.command_to_pilot, self.attempt_nr, self.pilot_id, self.batch_id,
         self.harvester_id, self.worker_id, self.task_id, self.computing_site) = row


class _Update:
    """One parsed entry: where it stands in the batch, and what it asks."""

    __slots__ = ("index", "panda_id", "state", "columns", "fileinfo", "params", "names", "values")

    def __init__(self, index, params):
        self.index, self.params = index, params
        self.panda_id = parse_job_id(params.get("jobId"))
        self.state = params.get("state")
        if self.state not in PILOT_STATES:
            raise RequestError(f"state: expected one of {sorted(PILOT_STATES)}, got {self.state!r}")
        self.columns, self.fileinfo = _reported(params)
        self.names = self.values = None

    def ready(self):
        """Work out the UPDATE's column names and this entry's values (in name order) before the writer's lock is
        taken, once nothing changes the entry any more (stageout may turn a finished report into a failed one)."""
        self.names = tuple(sorted(self.columns))
        self.values = tuple(self.columns[name] for name in self.names)


# An accepted entry's reply, as the transaction leaves it: built after the COMMIT, outside the writer's lock.
_ACCEPTED, _ACCEPTED_KILL = object(), object()


def update_job(params, binding=None, store=None):
    """Apply one pilot update (legacy updateJob / v1 pilot/update_job) and return the reply dict; a refused
    update raises its RequestError (the route answers it with its HTTP status). ``binding``: (harvester id,
    worker id or None) of a bound token (policy.update_binding), whose jobs alone it may update; ``store``: the
    server's FileStore, whose copies of a finished job's files the report must match (stageout)."""
    outcome = _apply([params], binding=binding, store=store)[0]
    if isinstance(outcome, RequestError):
        raise outcome
    return outcome


def update_jobs(entries, check=None, binding=None, store=None):
    """updateJobsInBulk: every entry applied in ONE transaction as set operations; the replies in order, a
    refused entry's with its StatusCode and reason (``jobList[i]: ...``). ``entries`` are updateJob parameter
    dicts (anything else is refused alone); ``check(entry)``, when given, returns the entry's checked parameters
    or raises RequestError (that entry alone is refused); ``binding`` and ``store`` as for update_job."""
    replies = []
    for index, outcome in enumerate(_apply(entries, check, binding, store)):
        if isinstance(outcome, RequestError):
            diag = str(outcome) if str(outcome).startswith("jobList[") else f"jobList[{index}]: {outcome}"
            outcome = {"StatusCode": outcome.code, "ErrorDiag": diag, "command": "NULL"}
        replies.append(outcome)
    return replies


def _apply(entries, check=None, binding=None, store=None):
    """A reply dict or a RequestError for each entry, in order; all the writes in one transaction.

    An entry for a job that an earlier entry of the same batch also reports is applied after it, in a later
    round (each round reads its jobs again), so a batch means what the same updates sent one by one mean."""
    outcomes, parsed = [None] * len(entries), []
    for index, params in enumerate(entries):
        try:
            if not isinstance(params, dict):
                raise RequestError(f"jobList[{index}]: expected an object")
            parsed.append(_Update(index, check(params) if check else params))
        except RequestError as exc:
            outcomes[index] = exc
    if not parsed:
        return outcomes
    if store is not None:  # before the transaction: the store's files are read outside the writer's lock
        stageout.fail_mismatched_finals(store, parsed)
    for update in parsed:
        update.ready()
    with database.atomic():
        while parsed:
            now, seen, this_round, later = states.utcnow(), set(), [], []
            for update in parsed:
                (later if update.panda_id in seen else this_round).append(update)
                seen.add(update.panda_id)
            _apply_round(this_round, now, outcomes, binding)
            parsed = later
    return [_reply() if outcome is _ACCEPTED else _reply(TOBEKILLED) if outcome is _ACCEPTED_KILL else outcome
            for outcome in outcomes]


def _apply_round(updates, now, outcomes, binding=None):
    """Judge each update (one per job) against its job, then write the accepted ones in one statement per group."""
    jobs = _read_jobs([update.panda_id for update in updates])
    transitions, same_state = collections.defaultdict(list), collections.defaultdict(list)
    for update in updates:
        job = jobs.get(update.panda_id)
        try:
            if binding is not None and job is not None:
                _check_binding(job, binding)
            verdict = _judge(job, update)
        except RequestError as exc:
            outcomes[update.index] = exc
            continue
        if verdict is not None:
            outcomes[update.index] = verdict
            continue
        names, values = update.names, update.values
        if (not job.pilot_id and update.params.get("pilotID")) or (not job.batch_id and update.params.get("batchID")):
            columns = dict(update.columns)
            if not job.pilot_id and update.params.get("pilotID"):
                columns["pilot_id"] = str(update.params["pilotID"])[:256]
            if not job.batch_id and update.params.get("batchID"):
                columns["batch_id"] = str(update.params["batchID"])[:128]
            names = tuple(sorted(columns))
            values = tuple(columns[name] for name in names)
        groups = same_state if update.state == job.status else transitions
        groups[(job.status, update.state, names)].append((update, values))
    # What this transaction read of the jobs: on SQLite, where no other writer can move them before the COMMIT,
    # the UPDATEs need not return what they changed (states.change_each_job)
    read = {pid: (job.task_id, job.computing_site) for pid, job in jobs.items()}
    won = states.change_each_job([(source, target, names, [(u.panda_id, *values) for u, values in members],
                                   f"pilot reported {target}")
                                  for (source, target, names), members in transitions.items()],
                                 fields={models.Job.heartbeat_time: now}, now=now, read=read)
    heartbeat = models.Job.heartbeat_time.db_value(now)
    for (status, _, names), members in same_state.items():  # a heartbeat: fields only, no state change
        rows = [(u.panda_id, *values) for u, values in members]
        if db.is_postgres():
            won.update(bulk.update_each("job", "panda_id", {"heartbeat_time": heartbeat}, names, rows,
                                        "(\"status\" || '') = %s" % database.param, [status]))
            continue
        changed = bulk.update_each("job", "panda_id", {"heartbeat_time": heartbeat}, names, rows,
                                   "(\"status\" || '') = %s" % database.param, [status], returning=None)
        if changed != len(rows):
            raise RuntimeError(f"a bulk update read {len(rows)} {status} jobs and changed {changed} of them in the "
                               "same transaction")
        won.update(row[0] for row in rows)
    files = []
    for groups in (transitions, same_state):
        for members in groups.values():
            for update, _ in members:
                if update.panda_id not in won:  # someone else (a kill, the watchdog) changed the job first
                    outcomes[update.index] = RequestError(f"job {update.panda_id} changed state concurrently; retry "
                                                          "the update", SC_FAILED, 409)
                    continue
                command = jobs[update.panda_id].command_to_pilot
                outcomes[update.index] = _ACCEPTED_KILL if command == TOBEKILLED else _ACCEPTED
                if update.fileinfo:
                    files.append(update)
    _register_files(files)


def _check_binding(job, binding):
    """Refuse (403) an update from a bound token for a job not dispatched to it; a job its harvester acquired that
    no worker holds yet becomes the updating worker's (one conditional UPDATE: two workers cannot both take it)."""
    refusal = policy.job_update_refusal(binding, job.panda_id, job.harvester_id, job.worker_id)
    if refusal is None and binding[1] is not None and job.worker_id is None:
        Job = models.Job
        taken = Job.update(worker_id=binding[1]).where(Job.panda_id == job.panda_id, Job.worker_id.is_null())
        if not taken.execute():
            refusal = f"job {job.panda_id} was bound to another worker meanwhile; this token may not update it"
        job.worker_id = binding[1]
    if refusal:
        raise RequestError(refusal, SC_ROLE, 403)


def _judge(job, update):
    """None when ``update`` may be applied to ``job``; else the reply to send without a write (or raise the
    RequestError that refuses it)."""
    panda_id, state, params = update.panda_id, update.state, update.params
    if job is None:
        log.warning("update for unknown job %s from %s", panda_id, params.get("node"))
        return _reply(TOBEKILLED, SC_FAILED, f"job {panda_id} is unknown")
    if job.status in _FINAL:
        if state in ("finished", "failed") and job.status == state:
            return _reply(None, SC_OK, f"alreadydone: job {panda_id} is already {job.status}", alreadyDone=True)
        return _reply(TOBEKILLED, SC_OK, f"job {panda_id} is already {job.status}")
    reason = _kill_reason(job, params)
    if reason and not (state == "failed" and job.command_to_pilot == TOBEKILLED and not _foreign(job, params)):
        return _reply(TOBEKILLED, SC_OK, reason)
    if job.status in _QUEUED:
        raise RequestError(f"job {panda_id} is {job.status}: it was never dispatched to a pilot", http=409)
    if state != job.status and (job.status, state) not in _ALLOWED:
        raise RequestError(f"state: job state change {job.status} -> {state} is not allowed; job {panda_id} stays "
                           f"{job.status}", http=409)
    return None


def _reply(command=None, code=SC_OK, diag=None, **extra):
    out = {"StatusCode": code, "command": command or "NULL"}
    if diag:
        out["ErrorDiag"] = diag
    out.update(extra)
    return out


def _kill_reason(job, params):
    """Why this pilot must stop, or None: killed, another attempt, or another pilot owns the job."""
    if job.command_to_pilot == TOBEKILLED or job.status in ("cancelled", "closed"):
        return f"job {job.panda_id} was killed"
    attempt = params.get("attemptNr")
    if attempt not in (None, "", "NULL") and str(attempt).strip() != str(job.attempt_nr):
        return f"job {job.panda_id} is at attemptNr {job.attempt_nr}, the update is for {attempt}"
    pilot_id = params.get("pilotID")
    if pilot_id and job.pilot_id and pilot_id != job.pilot_id:
        return f"job {job.panda_id} was sent to another pilot"
    batch_id = params.get("batchID")
    if batch_id and job.batch_id and batch_id != job.batch_id:
        return f"job {job.panda_id} belongs to batch job {job.batch_id}, not {batch_id}"
    return None


def _foreign(job, params):
    pilot_id = params.get("pilotID")
    return bool(pilot_id and job.pilot_id and pilot_id != job.pilot_id)


def _read_jobs(panda_ids):
    """{panda_id: _Job} of the listed jobs that exist: one hand-written primary-key query per 500 ids (peewee
    took ~0.7 ms to render a SELECT of all ~70 job columns for each update). On SQLite the jobs come as ONE row
    of JSON (as a claim's do, states._change_picked_sqlite): each row of a result is a step that lets go of the GIL
    and must win it back, with the writer's lock in hand. The columns read are short (ids, states, names of at
    most 256 characters), far within SQLite's string limit for 500 jobs."""
    jobs, postgres = {}, db.is_postgres()
    for start in range(0, len(panda_ids), 500):
        chunk = panda_ids[start:start + 500]
        cursor = database.execute_sql(_read_sql(database.param, len(chunk), postgres), chunk)
        rows = cursor.fetchall() if postgres else orjson.loads(cursor.fetchone()[0])
        jobs.update((row[0], _Job(row)) for row in rows)
    return jobs


@functools.lru_cache(maxsize=64)
def _read_sql(param, n_ids, postgres):
    columns, ids = ", ".join('"%s"' % c for c in _READ), ", ".join([param] * n_ids)
    if postgres:
        return f'SELECT {columns} FROM "job" WHERE "panda_id" IN ({ids})'
    return f'SELECT json_group_array(json_array({columns})) FROM "job" WHERE "panda_id" IN ({ids})'


def _reported(params):
    """({column: database value}, file info or None) of one update; RequestError naming every bad field."""
    errors, columns = [], {}
    for name, value in params.items():  # the entry's own keys (a few), not every field the protocol has
        known = _REPORTED.get(name)
        if known is None or value is None or value == "" or value == "NULL":
            continue
        column, kind, limit = known
        if kind is int:
            value = jobspec.to_int(value, name, errors, limit)
            if value is not None:
                columns[column] = value
            continue
        if not isinstance(value, str):
            value = json.dumps(value)
        if "\x00" in value:
            errors.append(f"{name}: a NUL character cannot be stored")
        elif name in WHOLE_TEXT_FIELDS:
            # A job report is JSON: cutting it would corrupt it, so it is kept whole or refused.
            if len(value) > METADATA_LIMIT:
                errors.append(f"{name}: {len(value)} characters; at most {METADATA_LIMIT} are kept")
            else:
                columns[column] = value
        else:
            columns[column] = value[:limit]
    fileinfo = None
    xml = params.get("xml")
    if not jobspec.is_null(xml):
        try:
            fileinfo = json.loads(xml) if isinstance(xml, str) else xml
        except ValueError:
            errors.append("xml: expected JSON file info {lfn: {guid, fsize, adler32, surl}}")
        if fileinfo is not None and not isinstance(fileinfo, dict):
            errors.append("xml: expected a JSON object keyed by file name")
            fileinfo = None
        for lfn, info in (fileinfo or {}).items():
            if isinstance(info, dict):
                for key in ("guid", "adler32", "checksum"):
                    if info.get(key) is not None and len(str(info[key])) > _FILE_CODE_LIMIT - 3:
                        errors.append(f"xml: {str(lfn)[:80]!r}.{key}: longer than {_FILE_CODE_LIMIT - 3} characters")
                if info.get("surl") is not None and "\x00" in str(info["surl"]):
                    errors.append(f"xml: {str(lfn)[:80]!r}.surl: a NUL character cannot be stored")
    if errors:
        raise RequestError("; ".join(errors))
    return columns, fileinfo


@functools.lru_cache(maxsize=64)
def _files_sql(param, n_ids):
    return (f'SELECT "row_id", "panda_id", "lfn", "guid" FROM "{models.JobFile._meta.table_name}" WHERE "panda_id" '
            f"IN ({', '.join([param] * n_ids)}) AND \"type\" IN ('output', 'log')")


def _register_files(updates):
    """The output and log files the accepted updates report (their ``xml``), in one read and one update."""
    if not updates:
        return
    JobFile = models.JobFile
    known = {}
    ids = [update.panda_id for update in updates]
    for start in range(0, len(ids), 500):  # a hand-written statement: peewee's rendering cost more than the rest
        chunk = ids[start:start + 500]
        cursor = database.execute_sql(_files_sql(database.param, len(chunk)), chunk)
        known.update(((panda_id, lfn), (row_id, guid)) for row_id, panda_id, lfn, guid in cursor.fetchall())
    rows = []
    for update in updates:
        status = {"finished": "finished", "failed": "failed"}.get(update.state, "running")
        for lfn, info in update.fileinfo.items():
            row = known.get((update.panda_id, lfn))
            if row is None or not isinstance(info, dict):
                log.warning("job %s reported file %r that it does not declare as output; ignored", update.panda_id,
                            str(lfn)[:200])
                continue
            adler = info.get("adler32") or info.get("checksum")
            checksum = f"ad:{adler}" if adler and ":" not in str(adler) else adler
            rows.append((str(info.get("guid") or row[1]) if (info.get("guid") or row[1]) else None,
                         jobspec.to_int(info.get("fsize"), "fsize", []),
                         None if checksum is None else str(checksum),
                         None if info.get("surl") is None else str(info["surl"]), status, row[0]))
    bulk.update_rows(JobFile._meta.table_name, ("guid", "fsize", "checksum", "surl", "status"), "row_id", rows)
