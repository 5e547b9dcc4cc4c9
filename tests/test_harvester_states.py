"""Worker states: the one table, the one writer, final states never change, every change logged with a reason."""
import pytest

from harvester import db, models
from harvester.errors import TransitionError
from harvester.states import FINAL, TRANSITIONS, WorkerStatus, change_worker_status


@pytest.fixture
def database(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield
    db.close_database()


def test_table_covers_every_state_and_final_states_are_final():
    assert set(TRANSITIONS) == set(WorkerStatus)
    for state in FINAL:
        assert TRANSITIONS[state] == set()
    for old, targets in TRANSITIONS.items():
        assert WorkerStatus.SUBMITTED not in targets, f"{old} may not go back to submitted"


def test_change_writes_times_log_and_unreported(database):
    worker = models.Worker.create(queue="Q", status="submitted", reported=True)
    assert change_worker_status(worker, WorkerStatus.RUNNING, "batch system: RUNNING")
    assert change_worker_status(worker, WorkerStatus.FAILED, "batch system: exit 3", diag="pilot exit code 3")
    row = models.Worker.get_by_id(worker.worker_id)
    assert (row.status, row.diag, row.reported) == ("failed", "pilot exit code 3", False)
    assert row.start_time is not None and row.end_time is not None
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

