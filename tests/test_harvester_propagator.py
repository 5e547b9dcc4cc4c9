"""The propagator: job reports before worker ends, whatever thread queued them; the outbox in order, kept through
a transient server error; a worker reported only as it was when sent. Propagator.run_once(now) on a real harvester
database with a recorder of the server's calls (the HTTP boundary)."""
import datetime
import json

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

    from queueconfig.loader import loads

    (tmp_path / "1" / "outbox").mkdir(parents=True)
    source = tmp_path / "1" / "outbox" / "final-1-0.json.h.claimed"  # where the pilot spooled it, claimed
    source.write_text("{}")
    worker = models.Worker.create(queue="Q", status="running", submit_phase="done",
                                  access_point=str(tmp_path / "1"))
    models.Outbox.create(kind=kind, key="job:1:heartbeat", payload='{"jobId": 1, "state": "running"}',
                         worker_id=worker.worker_id, created=db.utcnow(),
                         source_path=str(source) if relayed else None)
    context = Context("/tmp", Server(), Settings(), "h")
    context.set_queues({"Q": loads('{"queues": {"Q": {}}}', "q.json").queues["Q"]}, {})
    Propagator(context).run_once(db.utcnow())
    assert (models.Worker.get_by_id(worker.worker_id).kill_reason is not None) == killed
    assert not models.Outbox.select().exists()  # delivered
    assert source.exists() != relayed  # a relayed report's file is removed with it


class Recorder:
    """The server's three calls the propagator makes; ``on_workers(workers)`` runs during update_workers, and
    ``failures`` ServerErrors are raised by update_jobs first."""

    url = "http://127.0.0.1:9"

    def __init__(self, on_workers=None, failures=()):
        self.jobs, self.statuses = [], []
        self.on_workers, self.failures = on_workers, list(failures)

    def update_jobs(self, updates):
        if self.failures:
            raise self.failures.pop(0)
        self.jobs.append([u["jobId"] for u in updates])
        return [{"StatusCode": 0, "command": "NULL"} for _ in updates]

    def update_workers(self, workers):
        self.statuses.append([w["status"] for w in workers])
        if self.on_workers:
            self.on_workers(workers)
        return [True for _ in workers]

    def report_worker_statistics(self, queue, statistics):
        pass


def propagator(server):
    from harvester.agents.propagator import Propagator
    from harvester.context import Context, Settings

    return Propagator(Context("/tmp", server, Settings(), "h"))


NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)


def report(panda_id, attempt=0, state="finished"):
    return models.Outbox.create(kind="job_final", key=f"job:{panda_id}:{attempt}:final", created=NOW,
                                payload=json.dumps({"jobId": panda_id, "attemptNr": attempt, "state": state}))


def test_the_outbox_is_sent_in_id_order(database):
    """Reports go out in the order they were queued (a job's heartbeat before its final report)."""
    for panda_id in (30, 10, 20):
        report(panda_id)
    server = Recorder()
    propagator(server).run_once(NOW)
    assert server.jobs == [[30, 10, 20]]


def test_a_worker_is_marked_reported_only_if_it_did_not_change_during_the_call(database):
    """A change made while the server was being told of the old state is sent too, not lost as 'reported'."""
    from harvester.states import WorkerStatus, change_worker_status

    worker = models.Worker.create(queue="Q", status="running", submit_phase="done", modification_time=NOW)
    later = NOW + datetime.timedelta(seconds=5)

    def meanwhile(workers):  # the monitor (another thread) sees the worker end during the first call
        server.on_workers = None
        change_worker_status(models.Worker.get_by_id(worker.worker_id), WorkerStatus.FINISHED, "ended", later)

    server = Recorder(on_workers=meanwhile)
    propagator(server).run_once(NOW)
    assert server.statuses == [["running"], ["finished"]]
    assert models.Worker.get_by_id(worker.worker_id).reported is True


def test_a_transient_server_error_leaves_the_outbox_unrejected_for_the_next_cycle(database):
    """Unreachable, timeout, 5xx: the reports stay queued, in order, not refused; the next cycle sends them."""
    from harvester.errors import ServerError

    ids = [report(panda_id).id for panda_id in (1, 2)]
    server = Recorder(failures=[ServerError("pilot/update_jobs_bulk: HTTP 503: busy", transient=True)])
    with pytest.raises(ServerError):
        propagator(server).run_once(NOW)
    rows = list(models.Outbox.select().order_by(models.Outbox.id))
    assert [(r.id, r.rejected, r.tries) for r in rows] == [(ids[0], False, 1), (ids[1], False, 1)]
    propagator(server).run_once(NOW + datetime.timedelta(seconds=10))
    assert server.jobs == [[1, 2]] and not models.Outbox.select().exists()
