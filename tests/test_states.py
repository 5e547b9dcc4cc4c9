"""The transition table and the one function that changes job states."""
import pytest
from conftest import make_job
from minipanda.core import jobs, models, states, updates
from minipanda.core.states import FINAL_JOB_STATES, JOB_TRANSITIONS, JobStatus
from minipanda.errors import InvalidTransition


def submit(n=1, **overrides):
    return [row[0] for row in jobs.submit_jobs([make_job(**overrides) for _ in range(n)], "alice")]


def test_final_states_have_no_exits():
    for final in FINAL_JOB_STATES:
        assert JOB_TRANSITIONS[final] == set()
    for target in JobStatus:
        for final in FINAL_JOB_STATES:
            with pytest.raises(InvalidTransition):
                states.check_job_transition(final, target)


def test_no_regression_from_transferring_to_running():
    with pytest.raises(InvalidTransition, match="transferring -> running"):
        states.check_job_transition("transferring", "running")


def test_every_state_is_in_the_table():
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    assert set(states.TASK_TRANSITIONS) == set(states.TaskStatus)


def test_change_stamps_time_and_logs_reason(database):
    (pid,) = submit()
    with database.atomic():
        changed = states.change_job_status([pid], "sent", "test dispatch")
    assert changed == [(pid, "activated")]
    job = models.Job.get_by_id(pid)
    assert job.status == "sent" and job.start_time is not None and job.state_changed_time >= job.creation_time
    log = list(models.StatusLog.select().where(models.StatusLog.panda_id == pid).order_by(models.StatusLog.id))
    assert [(r.old_status, r.new_status) for r in log] == [(None, "activated"), ("activated", "sent")]
    assert log[-1].reason == "test dispatch"


def test_disallowed_change_writes_nothing(database):
    (pid,) = submit()
    with database.atomic():
        assert states.change_job_status([pid], "running", "skip sent") == []
    assert models.Job.get_by_id(pid).status == "activated"
    assert models.StatusLog.select().where(models.StatusLog.panda_id == pid).count() == 1


def test_final_state_never_changes(database):
    (pid,) = submit()
    with database.atomic():
        states.change_job_status([pid], "cancelled", "user kill")
    for target in ("activated", "sent", "running", "finished", "failed", "closed"):
        with database.atomic():
            assert states.change_job_status([pid], target, "try") == []
    job = models.Job.get_by_id(pid)
    assert job.status == "cancelled" and job.end_time is not None


def test_from_states_restricts_sources(database):
    (pid,) = submit()
    with database.atomic():
        assert states.change_job_status([pid], "failed", "only from sent", from_states=["sent"]) == []
        assert states.change_job_status([pid], "failed", "any", from_states=["activated"]) == [(pid, "activated")]


def test_every_status_log_transition_of_a_full_task_run_is_in_the_table(database):
    """A task with a retried failure, run to its end in-process: every transition row is allowed by the table,
    and the retry module's verdict on the failed job is a note, not a failed -> failed transition."""
    from minipanda.core import dispatch
    from minipanda.core.auth import Identity
    from minipanda.tasks import generator, retry, service, settle
    from minipanda.tasks.settings import Settings
    from taskhelp import set_queue

    set_queue("Q1")
    retry.ensure_defaults()
    config = Settings()
    task_id = service.submit_task({"taskName": "whole.run", "exec": "x", "nJobs": 3, "nScouts": 0,
                                   "maxAttempt": 3}, Identity("alice", "user"))
    failed_once = False
    for _ in range(20):
        generator.run(config)
        for job in dispatch.claim_jobs(dispatch.Offer(queue="Q1", prod_source_label="user", n_jobs=10)):
            updates.update_job({"jobId": job["PandaID"], "state": "running"})
            if not failed_once:
                failed_once = True
                updates.update_job({"jobId": job["PandaID"], "state": "failed", "pilotErrorCode": 1099,
                                    "pilotErrorDiag": "stage-in failed"})
            else:
                updates.update_job({"jobId": job["PandaID"], "state": "finished"})
        settle.run(config)
        if models.Task.get_by_id(task_id).status in ("done", "finished", "failed"):
            break
    assert models.Task.get_by_id(task_id).status == "done"
    rows = list(models.StatusLog.select())
    transitions = [r for r in rows if r.kind == "transition"]
    assert transitions and all(r.old_status is None or JobStatus(r.new_status) in JOB_TRANSITIONS[JobStatus(
        r.old_status)] for r in transitions), [(r.old_status, r.new_status) for r in transitions]
    notes = [r for r in rows if r.kind == "note"]
    assert [(r.old_status, r.new_status) for r in notes] == [("failed", "failed")]
    assert models.Job.select().where(models.Job.task_id == task_id).count() == 4
