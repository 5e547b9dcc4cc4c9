"""Harvester's state machines: each one table and one writer; final states never change; every worker change
logged with a reason; a status, its times, its submit phase and related columns written together or not at all."""
import ast
import pathlib

import pytest

from harvester import db, models
from harvester.errors import TransitionError
from harvester.states import (FINAL, HELD_JOB_TRANSITIONS, SUBMIT_TRANSITIONS, TRANSITIONS, HeldJobStatus,
                              SubmitPhase, WorkerError, WorkerStatus, change_held_jobs, change_submit_phase,
                              change_worker_status, create_worker, utcnow)

HARVESTER = pathlib.Path(__file__).resolve().parent.parent / "harvester"


@pytest.fixture
def database(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield
    db.close_database()


def test_tables_cover_every_state_and_final_states_are_final():
    assert set(TRANSITIONS) == set(WorkerStatus)
    assert set(SUBMIT_TRANSITIONS) == set(SubmitPhase)
    assert set(HELD_JOB_TRANSITIONS) == set(HeldJobStatus)
    for state in FINAL:
        assert TRANSITIONS[state] == set()
    assert SUBMIT_TRANSITIONS[SubmitPhase.DONE] == set() and HELD_JOB_TRANSITIONS[HeldJobStatus.DONE] == set()
    for old, targets in TRANSITIONS.items():  # a missing batch job found again still queued is the one way back
        assert WorkerStatus.SUBMITTED not in targets or old == WorkerStatus.MISSING, old
        assert old in FINAL or WorkerStatus.MISSING in targets or old == WorkerStatus.MISSING, old


def test_change_writes_times_log_and_unreported(database):
    worker = models.Worker.create(queue="Q", status="submitted", reported=True)
    assert change_worker_status(worker, WorkerStatus.RUNNING, "batch system: RUNNING")
    assert change_worker_status(worker, WorkerStatus.FAILED, "batch system: exit 3", diag="pilot exit code 3",
                                error_code=WorkerError.BATCH_JOB_FAILED)
    row = models.Worker.get_by_id(worker.worker_id)
    assert (row.status, row.diag, row.reported, row.error_code) == ("failed", "pilot exit code 3", False, 1)
    assert row.start_time is not None and row.end_time is not None and row.status_changed == row.end_time
    log = [(r.old_status, r.new_status, r.reason) for r in models.WorkerStatusLog.select().order_by(
        models.WorkerStatusLog.id)]
    assert log == [("submitted", "running", "batch system: RUNNING"), ("running", "failed", "batch system: exit 3")]


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_states_never_change(database, final):
    worker = models.Worker.create(queue="Q", status=final.value)
    for target in WorkerStatus:
        if target != final:
            with pytest.raises(TransitionError):
                change_worker_status(worker, target, "try")
    assert models.Worker.get_by_id(worker.worker_id).status == final.value


def test_a_stale_row_loses_the_conditional_update(database):
    worker = models.Worker.create(queue="Q", status="submitted")
    stale = models.Worker.get_by_id(worker.worker_id)
    assert change_worker_status(worker, WorkerStatus.RUNNING, "first")
    # expected submitted: lost
    assert not change_worker_status(stale, WorkerStatus.CANCELLED, "second, from an old read")
    assert models.Worker.get_by_id(worker.worker_id).status == "running"
    assert models.WorkerStatusLog.select().count() == 1


def test_a_status_and_its_submit_phase_change_in_one_update_or_not_at_all(database):
    """Given up while submitting: missed and phase done together. When the phase moved meanwhile (another agent
    recorded the batch id), neither changes and nothing is logged."""
    now = utcnow()
    worker = create_worker(now, "created", queue="Q")
    assert change_submit_phase(worker, SubmitPhase.SUBMITTING, "handed over", now)
    stale = models.Worker.get_by_id(worker.worker_id)
    assert change_submit_phase(worker, SubmitPhase.DONE, "accepted as batch job 7", now, {"batch_id": "7"})
    assert not change_worker_status(stale, WorkerStatus.MISSED, "given up", now, phase=SubmitPhase.DONE)
    row = models.Worker.get_by_id(worker.worker_id)
    assert (row.status, row.submit_phase, row.batch_id) == ("submitted", "done", "7")
    other = create_worker(now, "created", queue="Q")
    assert change_worker_status(other, WorkerStatus.MISSED, "given up", now, phase=SubmitPhase.DONE)
    row = models.Worker.get_by_id(other.worker_id)
    assert (row.status, row.submit_phase, row.end_time) == ("missed", "done", now)
    kinds = [(r.worker_id, r.old_status, r.new_status, r.kind) for r in models.WorkerStatusLog.select().order_by(
        models.WorkerStatusLog.id)]
    assert kinds == [(1, None, "submitted", "transition"), (1, "submitted", "submitted", "note"),
                     (1, "submitted", "submitted", "note"), (2, None, "submitted", "transition"),
                     (2, "submitted", "missed", "transition")]


def test_submit_phases_follow_their_table(database):
    now = utcnow()
    worker = create_worker(now, "created", queue="Q")
    assert change_submit_phase(worker, SubmitPhase.DONE, "killed before submission", now)
    for phase in SubmitPhase:
        with pytest.raises(TransitionError):
            change_submit_phase(worker, phase, "try", now)


def test_held_jobs_follow_their_table(database):
    now = utcnow()
    for panda_id, status in ((1, "fetched"), (2, "fed"), (3, "running"), (4, "done")):
        models.HeldJob.create(panda_id=panda_id, queue="Q", definition="{}", status=status, worker_id=9,
                              fetched_time=now)
    # a worker given up before it ran: its jobs that never ran go back, unbound
    assert change_held_jobs(models.HeldJob.worker_id == 9, HeldJobStatus.FETCHED, {"worker_id": None}) == 2
    held = {job.panda_id: (job.status, job.worker_id) for job in models.HeldJob.select()}
    assert held == {1: ("fetched", None), 2: ("fetched", None), 3: ("running", 9), 4: ("done", 9)}
    assert change_held_jobs(models.HeldJob.panda_id > 0, HeldJobStatus.DONE) == 3  # done stays done
    assert change_held_jobs(models.HeldJob.panda_id > 0, HeldJobStatus.FED) == 0


def writes(path):
    """(line, what) of every write of a state column or of the status log in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        target = node.func.value
        model = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
        if model not in ("Worker", "HeldJob", "WorkerStatusLog") or node.func.attr not in (
                "update", "create", "insert", "insert_many", "replace", "get_or_create"):
            continue
        keys = {k.arg for k in node.keywords} | {key.value for arg in node.args if isinstance(arg, ast.Dict)
                                                  for key in arg.keys if isinstance(key, ast.Constant)}
        if model == "WorkerStatusLog" or keys & {"status", "submit_phase"}:
            found.append((node.lineno, f"{model}.{node.func.attr}"))
    return found


def test_each_state_machine_has_one_writer():
    """Worker status, submit phase, held-job status and the status log are written in harvester/states.py only."""
    elsewhere = {str(path.relative_to(HARVESTER)): writes(path) for path in sorted(HARVESTER.rglob("*.py"))
                 if path.name != "states.py" or path.parent != HARVESTER}
    assert {path: found for path, found in elsewhere.items() if found} == {}
    assert writes(HARVESTER / "states.py")  # the check does find writes where they are
