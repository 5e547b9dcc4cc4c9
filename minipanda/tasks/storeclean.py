"""The file store's part of retention: files in ``<home>/files`` that nobody needs any more are deleted.

- a job's log tarball: ``retention.log_days`` after the job ended (default 14);
- an output of a task in a final state: ``retention.fetched_output_days`` after a person first downloaded it
  (default 1; ``GET /files/...`` with a token that is not a pilot's marks it), else ``retention.output_days``
  after the task ended (default 30); never while a task that is not over reads the dataset as its input;
- a prun sandbox: once no task in the live tables names it (its tasks were archived, or it was never used) and
  it was last uploaded or found by prun's duplicate check more than ``retention.job_days`` ago.

0 days keeps that kind forever. Each deletion is logged with the file and why, its row says ``deleted`` (job_file
and the dataset's file row), and the totals go to the retention_stat table that ``/metrics`` reads. A file is
deleted before its row is marked, so a crash in between leaves a row that the next run marks.
"""
import datetime
import json
import logging
import os
import re

from minipanda.core import filestore, models
from minipanda.core.db import database
from minipanda.core.states import FINAL_JOB_STATES, FINAL_TASK_VALUES
from minipanda.errors import RequestError
from minipanda.tasks import sandbox

log = logging.getLogger(__name__)
FINAL_JOBS = [s.value for s in FINAL_JOB_STATES]
IN_STORE = re.compile(r"/files/([^/]+)/?$")
DELETED = "deleted"


def _unlink(path):
    """Size of the file removed, or None when it was not there."""
    try:
        size = os.path.getsize(path)
        os.unlink(path)
        return size
    except FileNotFoundError:
        return None


def delete_logs(home, days, now, batch=1000):
    """Log tarballs of jobs that ended more than ``days`` ago; returns (files, bytes)."""
    JobFile, Job, DatasetFile = models.JobFile, models.Job, models.DatasetFile
    store = filestore.FileStore(os.path.join(home, "files"))
    cutoff = now - datetime.timedelta(days=days)
    files = size = 0
    last = 0
    while True:
        rows = list(JobFile.select(JobFile.row_id, JobFile.job, JobFile.lfn, JobFile.scope, JobFile.surl)
                    .join(Job, on=(JobFile.job == Job.panda_id))
                    .where(JobFile.row_id > last, JobFile.type == "log", JobFile.status != DELETED,
                           Job.status.in_(FINAL_JOBS), Job.state_changed_time < cutoff)
                    .order_by(JobFile.row_id).limit(batch))
        if not rows:
            break
        last = rows[-1].row_id
        gone = []
        for row in rows:
            found = filestore.find_file(store, row.scope, row.lfn, row.surl)
            in_store = found is not None or bool(filestore.SURL_IN_STORE.match(row.surl or ""))
            if not in_store:
                continue  # kept elsewhere (a queue whose logs do not go to this server): not ours to delete
            removed = _unlink(found[2]) if found else None
            if removed is not None:
                files, size = files + 1, size + removed
                log.info("deleted the log tarball %s of job %s (ended more than %g days ago)", found[2],
                         row.panda_id, days)
            gone.append(row)
        if gone:
            with database.atomic():
                JobFile.update(status=DELETED).where(JobFile.row_id.in_([r.row_id for r in gone])).execute()
                for row in gone:
                    DatasetFile.update(status=DELETED).where(DatasetFile.lfn == row.lfn,
                                                             DatasetFile.panda_id == row.panda_id).execute()
        if len(rows) < batch:
            break
    return files, size


def delete_outputs(home, days, fetched_days, now, batch=1000):
    """Outputs of tasks in a final state, fetched ``fetched_days`` ago or ended ``days`` ago; (files, bytes)."""
    if not days and not fetched_days:
        return 0, 0
    Dataset, DatasetFile, Task = models.Dataset, models.DatasetFile, models.Task
    due = None
    if days:
        due = Task.modification_time < now - datetime.timedelta(days=days)
    if fetched_days:
        fetched = DatasetFile.fetched_time < now - datetime.timedelta(days=fetched_days)
        due = fetched if due is None else (due | fetched)
    unfinished = Task.select(Task.in_ds).where(Task.status.not_in(list(FINAL_TASK_VALUES)), Task.in_ds.is_null(False))
    read = {name.rstrip("/") for (name,) in unfinished.tuples()}
    store = filestore.FileStore(os.path.join(home, "files"))
    files = size = 0
    last = 0
    while True:
        rows = list(DatasetFile.select(DatasetFile.file_id, DatasetFile.lfn, DatasetFile.location,
                                       Dataset.name.alias("dataset_name"), DatasetFile.fetched_time)
                    .join(Dataset).join(Task, on=(Dataset.task_id == Task.jedi_task_id))
                    .where(DatasetFile.file_id > last, Dataset.type == "output",
                           Task.status.in_(list(FINAL_TASK_VALUES)), DatasetFile.status != DELETED,
                           DatasetFile.location.contains("/files/"), due)
                    .order_by(DatasetFile.file_id).limit(batch).objects())
        if not rows:
            break
        last = rows[-1].file_id
        gone = []
        for row in rows:
            match = IN_STORE.search(row.location or "")
            if match is None or row.dataset_name.rstrip("/") in read:
                continue
            try:
                _, path = store.locate(match.group(1), row.lfn)
            except RequestError:
                continue
            removed = _unlink(path)
            if removed is not None:
                files, size = files + 1, size + removed
                why = f"downloaded at {row.fetched_time:%Y-%m-%d %H:%M}" if row.fetched_time else \
                    f"its task ended more than {days:g} days ago"
                log.info("deleted the output %s of dataset %s (%s)", path, row.dataset_name, why)
            gone.append(row.file_id)
        if gone:
            with database.atomic():
                DatasetFile.update(status=DELETED).where(DatasetFile.file_id.in_(gone)).execute()
        if len(rows) < batch:
            break
    return files, size


def delete_sandboxes(home, days, now):
    """Sandboxes no live task names, last used more than ``days`` ago; returns (files, bytes)."""
    boxes = sandbox.Sandboxes(home)
    cutoff = (now - datetime.timedelta(days=days)).replace(tzinfo=datetime.timezone.utc).timestamp()
    candidates = []
    try:
        users = sorted(os.listdir(boxes.index))
    except FileNotFoundError:
        return 0, 0
    for user in users:
        directory = os.path.join(boxes.index, user)
        try:
            entries = sorted(os.listdir(directory))
        except (NotADirectoryError, FileNotFoundError):
            continue
        for entry in entries:
            name = entry[:-5]
            if entry.endswith(".json") and sandbox.SANDBOX_NAME.match(name) and \
                    os.path.getmtime(os.path.join(directory, entry)) < cutoff:
                candidates.append((user, name, os.path.join(directory, entry)))
    if not candidates:
        return 0, 0
    used = tasks_sandboxes()  # read after the candidates: a task submitted meanwhile keeps its sandbox
    files = size = 0
    for user, name, entry in candidates:
        if name in used:
            continue
        try:
            _, path = boxes.store.locate(boxes.scope(user), name)
        except RequestError:
            continue
        removed = _unlink(path)
        os.unlink(entry)
        if removed is not None:
            files, size = files + 1, size + removed
        log.info("deleted the sandbox %s of %s (no task in the live tables uses it; last used more than %g days "
                 "ago)", name, user, days)
    return files, size


def tasks_sandboxes():
    """Names of the sandboxes the tasks in the live tables run with."""
    names = set()
    for (spec,) in models.Task.select(models.Task.spec).tuples():
        try:
            name = sandbox.task_sandbox(json.loads(spec).get("jobPars"))
        except (ValueError, AttributeError):
            continue
        if name:
            names.add(name)
    return names


def mark_fetched(scope, lfn, now):
    """Note that a person downloaded ``scope/lfn`` (the first time only): a fetched output goes sooner."""
    DatasetFile = models.DatasetFile
    with database.atomic():
        DatasetFile.update(fetched_time=now).where(DatasetFile.lfn == lfn, DatasetFile.fetched_time.is_null(),
                                          DatasetFile.location.endswith(f"/files/{scope}")).execute()
