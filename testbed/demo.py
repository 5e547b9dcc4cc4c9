"""The demo task: one small input file per job in the server's file store, a payload that reads it and writes
an output, and the task's progress read from the server's database."""
import io
import os
import shlex
import uuid
import zlib

from testbed.config import QUEUE

DATASET = "testbed.demo.in"
TASK_NAME = "testbed.demo"
WARM_UP_TASK_NAME = "testbed.warm-up"
OUTPUT = "out.txt"


def adler32(data):
    return f"{zlib.adler32(data) & 0xffffffff:08x}"


FILES = ("small", "none", "1mb")  # --files: a small text input, no file at all, a 1 MB input
MB = 1 << 20


def payload_command(job_seconds, fail_marks=None, files="small"):
    """(Fail once when this input's mark is in ``fail_marks``,) sleep, then the input upper-cased into out.txt;
    without files, only the sleep (``true`` when it is 0)."""
    if files == "none":
        return f"sleep {job_seconds:g}" if job_seconds > 0 else "true"
    parts = []
    if fail_marks:
        marks = shlex.quote(fail_marks)
        parts.append(f'if rm {marks}/%IN 2>/dev/null; then echo "testbed: failing once on purpose" >&2; '
                     "exit 3; fi")
    if job_seconds > 0:
        parts.append(f"sleep {job_seconds:g}")
    parts.append(f"tr a-z A-Z < %IN > {OUTPUT}")
    return "; ".join(parts)


def input_files(jobs, files="small"):
    """(lfn, content) of the demo dataset: one text file per job, small or of 1 MB."""
    for i in range(jobs):
        lfn = f"in.{i:06d}.txt"
        text = (f"minipanda testbed input {i} of {jobs}\n"
                f"the payload upper-cases this file into its output\n").encode()
        yield lfn, (text * (MB // len(text) + 1))[:MB] if files == "1mb" else text


def prepare(v1, home, jobs, job_seconds, fail_some, files="small"):
    """The demo task's inputs written to ``home.data``, put in the file store and registered as a dataset; returns
    the task's parameters for :func:`submit_prepared`.

    ``v1(path, **params)`` calls the server's API. With ``fail_some``, every 10th input gets a mark in
    ``home.fail_marks``: its first payload removes the mark and fails. With ``files`` "none", the task is
    ``jobs`` jobs without input or output (each still uploads its log).
    """
    from minipanda.core import filestore

    common = {"taskName": TASK_NAME, "site": [QUEUE], "nScouts": 0, "maxAttempt": 3, "prodSourceLabel": "managed",
              "coreCount": 1, "ramCount": 500, "walltime": 600}
    if files == "none":
        return dict(common, exec=payload_command(job_seconds, files=files), nJobs=jobs)

    store = filestore.FileStore(os.path.join(home.server, "files"))
    if fail_some:
        os.makedirs(home.fail_marks, exist_ok=True)
    registered = []
    for i, (lfn, content) in enumerate(input_files(jobs, files)):
        with open(os.path.join(home.data, lfn), "wb") as handle:
            handle.write(content)
        store.put(DATASET, lfn, io.BytesIO(content), len(content), len(content))
        registered.append({"lfn": lfn, "fsize": len(content), "checksum": "ad:" + adler32(content),
                           "guid": str(uuid.uuid4()), "location": home.data})
        if fail_some and i % 10 == 0:
            open(os.path.join(home.fail_marks, lfn), "w").close()
    v1("dataset/add", name=DATASET, files=registered)
    return dict(common, exec=payload_command(job_seconds, home.fail_marks if fail_some else None),
                inDS=DATASET, nFilesPerJob=1, outputs=[OUTPUT])


def submit_prepared(v1, task_parameters):
    return v1("task/submit", task_parameters=task_parameters, parent_tid=None)


def submit_warm_up(v1, jobs):
    """The warm-up task (``minipanda testbed --warm-up``): ``jobs`` jobs that run ``true``, without files; its id."""
    return v1("task/submit", task_parameters={
        "taskName": WARM_UP_TASK_NAME, "site": [QUEUE], "nScouts": 0, "maxAttempt": 3, "prodSourceLabel": "managed",
        "coreCount": 1, "ramCount": 500, "walltime": 600, "exec": "true", "nJobs": jobs}, parent_tid=None)


def task_state(task_id):
    """The task's status and its jobs by status (in-process read of the server's database)."""
    from minipanda.core import counts, models

    status = models.Task.select(models.Task.status).where(models.Task.jedi_task_id == task_id).scalar()
    # the counts the database keeps: read twice a second, a GROUP BY over the task's jobs cost more than a job
    return {"task": status, "jobs": counts.jobs_by_task([task_id])[task_id]}


def pilots_up():
    """Pilots that told the server they started (updateWorkerPilotStatus) and not yet that they ended."""
    from minipanda.core import models

    return models.Worker.select().where(models.Worker.pilot_status == "started").count()
