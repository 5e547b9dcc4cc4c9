"""The propagator: job reports before worker ends, whatever thread queued them."""
import pytest

from harvester import db, models


@pytest.fixture
def database(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield
    db.close_database()


def test_a_worker_is_not_reported_while_its_job_reports_wait(database):
    """The propagator sends a worker's end only after its pilot's reports: the server fails the jobs of a worker
    reported final, so a final report queued by the monitor (another thread) during the propagator's cycle must
    hold the worker back until it went out."""
    from harvester.agents.propagator import Propagator
    from harvester.context import Context, Settings

    class Server:
        url = "http://127.0.0.1:9"

        def __init__(self):
            self.calls = []

        def update_jobs(self, updates):
            self.calls.append(("jobs", [u["jobId"] for u in updates]))
            return [{"StatusCode": 0, "command": "NULL"} for _ in updates]

        def update_workers(self, workers):
            self.calls.append(("workers", [w["workerID"] for w in workers]))
            return [True for _ in workers]

        def report_worker_statistics(self, queue, statistics):
            pass

    server = Server()
    propagator = Propagator(Context("/tmp", server, Settings(), "h"))
    worker = models.Worker.create(queue="Q", status="finished", submit_phase="done", reported=False)
    report = models.Outbox.create(kind="job_final", key="job:1:0:final", payload='{"jobId": 1, "state": "finished"}',
                                  worker_id=worker.worker_id, created=db.utcnow())
    propagator.send_workers(db.utcnow())  # as if the reports were queued after this cycle's job reports went out
    assert server.calls == []
    propagator.run_once(db.utcnow())
    assert server.calls == [("jobs", [1]), ("workers", [worker.worker_id])]
    assert not models.Outbox.select().where(models.Outbox.id == report.id).exists()


@pytest.mark.parametrize("kind,relayed,killed", [("job_heartbeat", False, True), ("job_heartbeat", True, False),
                                                 ("job_final", False, False)])
def test_tobekilled_kills_the_worker_only_for_a_pilot_without_network(database, tmp_path, kind, relayed, killed):
    """A file-mode pilot hears the server only through harvester: `tobekilled` to its heartbeat kills its worker.
    A pull-mode pilot's own report relayed late (it may have reached the server itself since, and run another job)
    or a final update never kills the worker: the pilot hears the command itself."""
    from harvester.agents.propagator import Propagator
    from harvester.context import Context, Settings

    class Server:
        url = "http://127.0.0.1:9"

        def update_jobs(self, updates):
            return [{"StatusCode": 0, "command": "tobekilled"} for _ in updates]

        def update_workers(self, workers):
            return [True for _ in workers]

        def report_worker_statistics(self, queue, statistics):
            pass

    source = tmp_path / "final-1-0.json.h.claimed"
    source.write_text("{}")
    worker = models.Worker.create(queue="Q", status="running", submit_phase="done")
    models.Outbox.create(kind=kind, key="job:1:heartbeat", payload='{"jobId": 1, "state": "running"}',
                         worker_id=worker.worker_id, created=db.utcnow(),
                         source_path=str(source) if relayed else None)
    Propagator(Context("/tmp", Server(), Settings(), "h")).run_once(db.utcnow())
    assert (models.Worker.get_by_id(worker.worker_id).kill_reason is not None) == killed
    assert not models.Outbox.select().exists()  # delivered
    assert source.exists() != relayed  # a relayed report's file is removed with it
