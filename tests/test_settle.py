"""The settle duty sees every change once: a job that ends between two cycles is settled by the next one, exactly
once (its inputs, its files, its retry verdict), an input whose job runs says so, and a task completes only once
every job of it ended AND was settled. On SQLite and PostgreSQL."""
from minipanda.core import counts, models, queues
from minipanda.core.states import TaskStatus
from minipanda.tasks import generator, service, settings, settle
from test_counts import claim, service_identity, update

CONFIG = settings.Settings({"brokerage.bootstrap_queued": 100})


def make_task(n_jobs):
    queues.ensure_queues(["QS"])
    task_id = service.submit_task({"taskName": "settled", "exec": "echo %RNDM:1", "nJobs": n_jobs, "nScouts": 0,
                                   "site": "QS", "maxAttempt": 3}, service_identity())
    while generator.run(CONFIG):
        pass
    return task_id


def inputs(task_id):
    return counts.inputs_by_task([task_id])[task_id]


def notes(panda_id):
    return models.StatusLog.select().where(models.StatusLog.panda_id == panda_id,
                                           models.StatusLog.kind == "note").count()


def registered(panda_ids):
    return models.DatasetFile.select().where(models.DatasetFile.panda_id.in_(panda_ids)).count()


def test_a_job_that_ends_between_two_cycles_is_settled_once(database):
    task_id = make_task(4)
    first, second, third, fourth = claim("QS", n_jobs=4, label="user")
    assert inputs(task_id) == {"picked": 4}
    assert settle.run(CONFIG) == {"settled": 0, "retries": 0, "completed": 0}
    assert inputs(task_id) == {"running": 4}  # sent to a pilot: their inputs say so

    update(first, "running")
    update(second, "starting")
    assert settle.run(CONFIG)["settled"] == 0

    update(first, "finished")  # between two cycles
    assert settle.run(CONFIG)["settled"] == 1
    assert settle.run(CONFIG)["settled"] == 0  # not again
    logs = registered([first])
    assert logs >= 1  # its log file went to the task's log dataset
    assert inputs(task_id) == {"finished": 1, "running": 3}

    update(second, "failed")  # one fails, another finishes, in the same gap
    update(third, "running")
    update(third, "finished")
    assert settle.run(CONFIG) == {"settled": 2, "retries": 1, "completed": 0}
    assert settle.run(CONFIG)["settled"] == 0
    assert notes(second) == 1  # the retry verdict once
    assert registered([first]) == logs and registered([third]) >= 1  # no file registered twice
    assert inputs(task_id) == {"finished": 2, "ready": 1, "running": 1}
    assert models.Job.select().where(models.Job.task_id == task_id, models.Job.settled == False).count() == 1  # noqa


def test_a_task_completes_once_its_last_job_is_settled_not_before(database):
    task_id = make_task(2)
    for panda_id in claim("QS", n_jobs=2, label="user"):
        update(panda_id, "running")
        update(panda_id, "finished")
    # a soft finish (its jobs run to their end): the task completes from its inputs' states once no job is open
    assert service.command(task_id, service_identity(), "finish", soft=True)[0] == 0
    # its jobs ended after the last cycle settled what it had: the task is not over until they are settled
    assert settle.complete_tasks(None) == 0
    assert models.Task.get_by_id(task_id).status == TaskStatus.FINISHING.value
    assert settle.run(CONFIG) == {"settled": 2, "retries": 0, "completed": 1}
    task = models.Task.get_by_id(task_id)
    assert task.status == TaskStatus.DONE.value, (task.status, task.error_dialog)  # 2 of 2 inputs finished
    assert settle.run(CONFIG) == {"settled": 0, "retries": 0, "completed": 0}


def test_a_finished_jobs_log_is_registered_as_reported_once_and_a_file_already_held_is_left_alone(database):
    """register_outputs writes its rows as plain parameters (round 8): every column as the job reported it, the
    time as a time, and a file its dataset already holds stays as it was, with no error."""
    import datetime

    task_id = make_task(3)
    first, second, third = claim("QS", n_jobs=3, label="user")
    JobFile = models.JobFile
    logs = {f.panda_id: f for f in JobFile.select().where(JobFile.job.in_([first, second, third]), JobFile.type == "log")}
    assert set(logs) == {first, second, third}
    JobFile.update(fsize=1234, checksum="ad:0badf00d", surl="http://server:25080/files/user.alice/x.log.tgz") \
        .where(JobFile.row_id == logs[first].row_id).execute()  # reported by the pilot; `second`'s log never was
    # `third`'s log is in its dataset already (a file registered before, by hand)
    held = models.DatasetFile.create(dataset=models.Dataset.get(models.Dataset.name == logs[third].dataset),
                                     lfn=logs[third].lfn, guid="kept", fsize=7, location="somewhere",
                                     creation_time=datetime.datetime(2020, 1, 1))
    for panda_id in (first, second, third):
        update(panda_id, "running")
        update(panda_id, "finished")
    now = datetime.datetime(2026, 12, 7, 17, 0, 0, 123456)
    assert settle.run(CONFIG, now=now)["settled"] == 3
    rows = {f.panda_id: f for f in models.DatasetFile.select().where(models.DatasetFile.panda_id.in_([first, second]))}
    assert (rows[first].lfn, rows[first].guid, rows[first].fsize, rows[first].checksum, rows[first].location,
            rows[first].status, rows[first].creation_time, rows[first].dataset.name) == (
        logs[first].lfn, logs[first].guid or "", 1234, "ad:0badf00d", "http://server:25080/files/user.alice", "ready",
        now, logs[first].dataset)
    assert (rows[second].status, rows[second].location, rows[second].fsize) == ("unknown", "", 0)
    kept = models.DatasetFile.get_by_id(held.file_id)
    assert (kept.guid, kept.fsize, kept.location, kept.panda_id) == ("kept", 7, "somewhere", None)
    assert registered([third]) == 0
    settle.register_outputs([first, second, third], now)  # again: nothing added, nothing changed, no error
    assert registered([first, second]) == 2
    assert models.DatasetFile.select().where(models.DatasetFile.lfn == logs[third].lfn).count() == 1
