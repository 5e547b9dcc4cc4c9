"""Who may store which file in the file store: a job's stage-out, judged for the token that sends it.

A pilot's or harvester's token writes only what its job produces: both stores (``PUT /files/<scope>/<lfn>``,
minipanda/api/files.py, and the bulk log route, minipanda/api/logs_bulk.py) name the job (the ``X-PandaID`` header,
the manifest's ``pandaID``) and :func:`refusal` says whether that file may be written for it:

- the job is known (404) and in a state where stage-out happens: dispatched and not ended (409 while queued or once
  it has ended: nothing of it may be written then);
- ``lfn`` is one of the job's files of the kinds the route stores (outputs and the log; the bulk route the log
  only) (403): never an input, never a name the job did not declare;
- ``scope`` is the scope the job gives that file, or a scope of the site's layout (queuedata ``output_url`` may fix
  one, ``/files/logs/{lfn}``; the pilot may have it from a local file the server never saw), never a user's scope
  ``user.<name>`` the job does not give it (403): a pilot does not write into another user's scope;
- the size and adler32 sent match the ones the job declares for that file, when it declares them (400);
- the job is the token's: a minted pilot token's queue, harvester and worker, a harvester token's harvester
  (minipanda.core.policy, as for updateJob) (403).

A final report is held to what was stored: :func:`fail_mismatched_finals` fails (1172) a ``finished`` report whose
output or log is in the store with another size or adler32 than the report gives (the adler32 recorded when the
store wrote the file: no byte is read again).

A ``production`` token (a robot of the managers' role) is held to the same rules when it names a job, as a pilot
run with it does; without one it places files (a task's inputs) by :func:`placement_refusal`: a shared scope or its
own ``user.<name>``, never another user's (403). An ``admin`` token stores any name in any scope, and is held to
every rule above but the scope on the bulk log route, whose entries always name their job. Whatever the token, a
name already stored is never replaced (minipanda/api/files.py answers before the body is read).
"""
import functools
import logging
import os
import re

from minipanda.core import filestore, models, policy
from minipanda.core.states import ACTIVE_JOB_STATES, QUEUED_JOB_STATES
from minipanda.errors import SC_INVALID, RequestError

STAGE_OUT_STATES = frozenset(state.value for state in ACTIVE_JOB_STATES)
_QUEUED = frozenset(state.value for state in QUEUED_JOB_STATES)
USER_SCOPE = "user."  # a user's own scope, user.<name> (minipanda.core.policy.may_read_scope)
WRITTEN_KINDS = ("output", "log")  # the job's files a stage-out writes; inputs are read, never written
PUTADMISMATCH = 1172  # pilot3's "adler32 mismatch on output file": what the job reports is not what was stored
log = logging.getLogger(__name__)


def judged(identity):
    """Whether a single PUT by ``identity`` must name its job (every role but the managers')."""
    return not policy.manages_all(identity)


def placement_refusal(identity, scope):
    """Raise RequestError (403) when a manager's token may not place a file in ``scope`` without naming a job: a
    production token writes shared scopes and its own ``user.<name>`` (the whole name compared, as users read
    theirs: policy.may_read_scope), never another user's; an admin token writes any scope."""
    if identity.role != "admin" and scope.startswith(USER_SCOPE) and scope != USER_SCOPE + identity.name:
        raise RequestError(f"scope: {scope} is another user's scope; a {identity.role} token places files in shared "
                           f"scopes and its own {USER_SCOPE}{identity.name}, or stores a job's output or log naming "
                           "the job in X-PandaID", SC_INVALID, 403)


class StagedJob:
    """What the checks read of one job: its state, where it was dispatched, and its output and log files."""

    __slots__ = ("status", "queue", "harvester_id", "worker_id", "files")

    def __init__(self, status, queue, harvester_id, worker_id):
        self.status, self.queue, self.harvester_id, self.worker_id = status, queue, harvester_id, worker_id
        self.files = {}  # lfn -> (type, scope, fsize, checksum)


@functools.lru_cache(maxsize=64)
def _jobs_sql(param, n_ids):
    return ('SELECT j."panda_id", j."status", j."computing_site", j."harvester_id", j."worker_id", f."type", '
            f'f."lfn", f."scope", f."fsize", f."checksum" FROM "{models.Job._meta.table_name}" j LEFT JOIN '
            f'"{models.JobFile._meta.table_name}" f ON f."panda_id" = j."panda_id" AND f."type" IN (\'output\', '
            f"'log') WHERE j.\"panda_id\" IN ({', '.join([param] * n_ids)})")


def staged_jobs(ids):
    """{PandaID: StagedJob} of those of ``ids`` the server knows, in one query (the job_file rows by their
    (panda_id, type) index: no index on lfn is needed)."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    database = models.Job._meta.database
    jobs = {}
    for panda_id, status, queue, harvester_id, worker_id, kind, lfn, scope, fsize, checksum in database.execute_sql(
            _jobs_sql(database.param, len(ids)), ids).fetchall():
        job = jobs.get(panda_id)
        if job is None:
            job = jobs[panda_id] = StagedJob(status, queue, harvester_id, worker_id)
        if lfn is not None:
            job.files[lfn] = (kind, scope, fsize, checksum)
    return jobs


def refusal(identity, panda_id, job, scope, lfn, kinds=WRITTEN_KINDS, fsize=None, adler32=None):
    """Raise RequestError when ``identity`` may not store ``scope``/``lfn`` for job ``panda_id`` (``job``: its
    StagedJob, None when unknown); ``kinds``: the job's file types this route writes; ``fsize`` and ``adler32``
    (8 hex digits): what the request says it stores, checked against what the job declares."""
    if job is None:
        raise RequestError(f"job {panda_id} is unknown", SC_INVALID, 404)
    if job.status not in STAGE_OUT_STATES:
        why = "it was not dispatched, no pilot writes its files" if job.status in _QUEUED else \
            "it has ended: its files were staged out before its final report"
        raise RequestError(f"job {panda_id} is {job.status}: {why}", SC_INVALID, 409)
    declared = job.files.get(lfn)
    if declared is None or declared[0] not in kinds:
        what = " or ".join(f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" for kind in kinds)
        raise RequestError(f"lfn: {lfn} is not {what} file of job {panda_id}", SC_INVALID, 403)
    kind, declared_scope, declared_size, declared_checksum = declared
    if identity.role != "admin" and scope != declared_scope and scope.startswith(USER_SCOPE):
        raise RequestError(f"scope: {scope} is a user's scope, not the one job {panda_id} gives its {kind} {lfn} "
                           f"({declared_scope or 'none'})", SC_INVALID, 403)
    if declared_size not in (None, 0) and fsize is not None and fsize != declared_size:
        raise RequestError(f"Content-Length: {fsize} bytes, job {panda_id} declares {declared_size} for {lfn}")
    want = _declared_adler32(declared_checksum)
    if want is not None and adler32 is not None and adler32 != want:
        raise RequestError(f"X-Checksum: adler32 {adler32}, job {panda_id} declares {want} for {lfn}")
    refused = policy.queue_refusal(identity, job.queue)
    binding = policy.update_binding(identity)
    if refused is None and binding is not None:
        refused = policy.job_update_refusal(binding, panda_id, job.harvester_id, job.worker_id)
    if refused is not None:
        raise RequestError(refused, SC_INVALID, 403)


def _declared_adler32(checksum):
    """The adler32 (8 lower-case hex digits) a job file's ``checksum`` declares (``ad:…`` or bare), else None."""
    if not checksum:
        return None
    kind, _, value = str(checksum).rpartition(":")
    if kind not in ("", "ad", "adler32") or not re.fullmatch(r"[0-9a-fA-F]{1,8}", value):
        return None
    return value.lower().zfill(8)


@functools.lru_cache(maxsize=64)
def _scopes_sql(param, n_ids):
    return (f'SELECT "panda_id", "lfn", "scope" FROM "{models.JobFile._meta.table_name}" WHERE "panda_id" IN '
            f"({', '.join([param] * n_ids)}) AND \"type\" IN ('output', 'log')")


def fail_mismatched_finals(store, updates):
    """Turn each ``finished`` update (minipanda.core.updates) whose reported output or log file (its ``xml``) is in
    ``store`` with another size or adler32 into a failure with :data:`PUTADMISMATCH`, logged. A file is looked for
    where the job's scope puts it and where the reported surl says it went; one in neither place is not checked
    (stored elsewhere), nor is an md5 the store cannot compare. Only updates with files cost anything: one query of
    their jobs' declared scopes, and a stat and an extended-attribute read per stored file."""
    finals = [update for update in updates if update.state == "finished" and update.fileinfo]
    if not finals:
        return
    database = models.Job._meta.database
    ids = sorted({update.panda_id for update in finals})
    scopes = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        scopes.update(((panda_id, lfn), scope) for panda_id, lfn, scope in database.execute_sql(
            _scopes_sql(database.param, len(chunk)), chunk).fetchall())
    for update in finals:
        for lfn, info in update.fileinfo.items():
            if (update.panda_id, lfn) not in scopes or not isinstance(info, dict):
                continue  # not a declared output or log: never registered (minipanda.core.updates)
            diag = _stored_mismatch(store, scopes[(update.panda_id, lfn)], lfn, info)
            if diag is not None:
                log.warning("job %s reported finished, but %s: taken as failed with %d (if the report is accepted)",
                            update.panda_id, diag, PUTADMISMATCH)
                update.state = "failed"
                update.columns.update(pilot_error_code=PUTADMISMATCH, pilot_error_diag=f"server: {diag}"[:500])
                break


def _stored_mismatch(store, scope, lfn, info):
    """Why the report ``info`` ({fsize, adler32 or checksum, surl}) of file ``lfn`` disagrees with its copy in
    ``store``, or None (it agrees, or no copy is there)."""
    candidates = [(scope, lfn)] if scope else []
    match = filestore.SURL_IN_STORE.match(str(info.get("surl") or "").split("?")[0])
    if match and match.groups() not in candidates:
        candidates.append(match.groups())
    for where in candidates:
        try:
            _, path = store.locate(*where)
            size = os.stat(path).st_size
        except (RequestError, OSError):
            continue  # not a name of the store, or nothing stored there
        name = "/".join(where)
        reported = info.get("fsize")
        if reported not in (None, "") and _number(reported) != size:
            return f"{lfn} is reported with fsize {str(reported)[:40]!r}, its copy {name} in the server's store " \
                   f"has {size} bytes"
        checksum = info.get("adler32") or info.get("checksum")
        if checksum in (None, "") or str(checksum).lower().startswith("md5:"):
            continue
        want, stored = _declared_adler32(checksum), filestore.stored_adler32(path)
        if want != stored:
            return f"{lfn} is reported with adler32 {str(checksum)[:40]!r}, its copy {name} in the server's store " \
                   f"has {stored}"
    return None


def _number(value):
    try:
        return int(str(value).strip())
    except ValueError:
        return None
