"""Every file from a worker is hostile input: the cases an outside probe found with a hostile "pilot" on a push queue
whose nodes have no network, each as a rule with a test.

- nothing is followed through a symlink, at any component of a path: an output under a symlinked directory is
  refused (the file outside stays where it is), a final report that is a symlink is never read;
- only the PandaIDs harvester bound to a worker are reported for it, and only their reports relayed, whatever the
  pilot lists;
- a handoff file over its size cap fails that worker's job with a clear diag; the other workers' reports go on;
- a file swapped between harvester's listing and its read (for a symlink, a FIFO, a file far over the cap) is
  refused as it is when read, never as it was listed;
- one bad entry never takes down a bulk update: a 413 or a refusal of the whole call splits the bulk, and only the
  bad entry is rejected, its reason in the log and in the worker's status log (`harvester explain --worker`).

Monitor.run_once(now) and Propagator.run_once(now) on a real harvester database and real access points on this
host's disk (the local transport), with a stand-in batch plugin that says every batch job runs, and a stand-in
server at the HTTP boundary.
"""
import datetime
import json
import os
import threading

import pytest

from harvester import db, models
from harvester.agents.monitor import Monitor
from harvester.agents.propagator import Propagator
from harvester.batch.base import OK, BatchStatus, QueryResult
from harvester.context import Context, Settings
from harvester.errors import ServerError
from harvester.transport import LocalTransport
from pilot.fileutil import adler32
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)
BIG = 2 * 1024 * 1024  # over the default cap of 1 MiB for a report


class Running:
    """The batch plugin's one status query: every batch job runs."""

    def status(self, batch_ids):
        return QueryResult(OK, {batch_id: BatchStatus("running") for batch_id in batch_ids})


class Server:
    """The server's side of the HTTP boundary: records what harvester sends; ``refuse(updates)`` may raise."""

    url = "http://127.0.0.1:9"

    def __init__(self, refuse=None):
        self.refuse, self.job_calls, self.workers, self.stored, self.jobs = refuse, [], [], {}, {}

    def upload(self, scope, lfn, local, checksum, panda_id):
        """The file store: keeps what it was sent (its own adler32 check as the real one does) and the job named."""
        assert checksum == adler32(local)
        with open(local, "rb") as handle:
            self.stored[f"{scope}/{lfn}"] = handle.read()
        self.jobs[f"{scope}/{lfn}"] = panda_id
        return {"url": f"/files/{scope}/{lfn}"}

    def update_jobs(self, updates):
        self.job_calls.append([u["jobId"] for u in updates])
        if self.refuse:
            self.refuse(updates)
        return [{"StatusCode": 0, "command": "NULL"} for _ in updates]

    def update_workers(self, workers):
        self.workers += workers
        return [True for _ in workers]

    def report_worker_statistics(self, queue, statistics):
        pass


class FakeContext(Context):
    def __init__(self, home, server):
        super().__init__(str(home), server, Settings(), "h1")
        self.wake = lambda name: None

    def plugin(self, queue):
        return Running()


@pytest.fixture
def site(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "decoy.txt").write_text("someone else's file\n")
    (outside / "secret.json").write_text(json.dumps({"jobId": 1, "state": "finished", "secret": "s3cr3t"}))
    yield tmp_path
    db.close_database()


def context(home, server=None, **queue):
    spec = {"mode": "push", "wnconnectivity": "none",
            "storage": {"output": {"type": "shared", "path": str(home / "out")}}, **queue}
    parsed = loads(json.dumps({"queues": {"Q": spec}}), "q.json").queues["Q"]
    ctx = FakeContext(home / "hh", server or Server())
    ctx.set_queues({"Q": parsed}, {})
    return ctx


def worker_with_job(ctx, panda_id):
    """A running worker with an access point and one job harvester bound to it (as the submitter leaves them)."""
    row = models.Worker.create(queue="Q", status="running", submit_phase="done", map_type="OneToOne",
                               modification_time=NOW, status_changed=NOW, start_time=NOW)
    access_point = ctx.access_point(ctx.queues["Q"], row.worker_id)
    os.makedirs(access_point)
    models.Worker.update(access_point=access_point, batch_id=f"b{row.worker_id}").where(
        models.Worker.worker_id == row.worker_id).execute()
    models.HeldJob.create(panda_id=panda_id, queue="Q", attempt_nr=1, status="fed", worker_id=row.worker_id,
                          fetched_time=NOW, definition=json.dumps({"PandaID": panda_id, "attemptNr": 1}))
    models.JobWorker.create(panda_id=panda_id, worker_id=row.worker_id, time=NOW)
    with open(os.path.join(access_point, "worker_pandaids.json"), "w") as handle:
        json.dump([panda_id], handle)
    return models.Worker.get_by_id(row.worker_id), access_point


def pilot_ends(access_point, panda_id, state="finished", outputs=(), **extra):
    """What a file-mode pilot leaves when its job ended: the job's final attributes and its outputs' list."""
    attributes = {"jobId": panda_id, "state": state, "jobStatus": state, "attemptNr": 1, "pilotErrorCode": 0,
                  "transExitCode": 0, **extra}
    with open(os.path.join(access_point, f"worker_attributes-{panda_id}.json"), "w") as handle:
        json.dump(attributes, handle)
    with open(os.path.join(access_point, "event_status.dump.json"), "w") as handle:
        json.dump({str(panda_id): list(outputs)}, handle)


def an_output(source, **extra):
    """An event_status entry for the file ``source`` (``path`` as the pilot claims it may differ)."""
    return {"type": "output", "path": str(source), "guid": "g-1", "fsize": os.path.getsize(source),
            "chksum": adler32(str(source)), **extra}


def finals():
    """{PandaID: final report} queued for the server."""
    return {json.loads(row.payload)["jobId"]: json.loads(row.payload)
            for row in models.Outbox.select().where(models.Outbox.kind == "job_final")}


def test_an_output_under_a_symlinked_directory_is_refused_and_nothing_moves(site):
    ctx = context(site)
    worker, ap = worker_with_job(ctx, 1)
    os.symlink(site / "outside", os.path.join(ap, "evilscope"))
    pilot_ends(ap, 1, outputs=[an_output(site / "outside" / "decoy.txt", path=os.path.join(ap, "evilscope",
                                                                                            "decoy.txt"))])
    Monitor(ctx).run_once(NOW)
    assert (site / "outside" / "decoy.txt").read_text() == "someone else's file\n"  # not moved
    assert not (site / "out").exists() or not any((site / "out").rglob("*"))
    report = finals()[1]
    assert report["state"] == "failed" and report["pilotErrorCode"] == 1137, report
    assert "symlink" in report["pilotErrorDiag"] and "evilscope" in report["pilotErrorDiag"], report
    assert "xml" not in report


def test_an_honest_output_beside_it_still_moves(site):
    ctx = context(site)
    worker, ap = worker_with_job(ctx, 1)
    os.makedirs(os.path.join(ap, "user"))
    with open(os.path.join(ap, "user", "out.dat"), "w") as handle:
        handle.write("result\n")
    pilot_ends(ap, 1, outputs=[an_output(os.path.join(ap, "user", "out.dat"))])
    Monitor(ctx).run_once(NOW)
    report = finals()[1]
    assert report["state"] == "finished", report
    files = json.loads(report["xml"])
    assert files["out.dat"]["surl"] == str(site / "out" / "user" / "out.dat")
    assert (site / "out" / "user" / "out.dat").read_text() == "result\n"


def test_outputs_to_the_server_are_fetched_verified_and_a_mismatch_is_refused(site):
    server = Server()
    ctx = context(site, server, storage={"output": {"type": "server"}})
    good, good_ap = worker_with_job(ctx, 1)
    bad, bad_ap = worker_with_job(ctx, 2)
    for ap in (good_ap, bad_ap):
        os.makedirs(os.path.join(ap, "user.test"))
        with open(os.path.join(ap, "user.test", "out.dat"), "w") as handle:
            handle.write("result\n")
    pilot_ends(good_ap, 1, outputs=[an_output(os.path.join(good_ap, "user.test", "out.dat"))])
    pilot_ends(bad_ap, 2, outputs=[an_output(os.path.join(bad_ap, "user.test", "out.dat"), chksum="ad:00000001")])
    Monitor(ctx).run_once(NOW)
    reports = finals()
    assert reports[1]["state"] == "finished", reports[1]
    assert json.loads(reports[1]["xml"])["out.dat"]["surl"] == "/files/user.test/out.dat"
    assert server.stored == {"user.test/out.dat": b"result\n"}  # the honest one only
    assert server.jobs == {"user.test/out.dat": 1}  # named to the server, which stores only that job's files
    assert reports[2]["state"] == "failed" and reports[2]["pilotErrorCode"] == 1137, reports[2]
    assert "adler32" in reports[2]["pilotErrorDiag"] and "00000001" in reports[2]["pilotErrorDiag"], reports[2]
    assert not os.listdir(ctx.scratch_dir)  # nothing left half-way


@pytest.mark.parametrize("target", ["outside/secret.json", "hh/harvester.db"])
def test_a_final_report_that_is_a_symlink_is_never_read(site, target):
    ctx = context(site)
    worker, ap = worker_with_job(ctx, 1)
    os.symlink(site / target, os.path.join(ap, "worker_attributes-1.json"))
    Monitor(ctx).run_once(NOW)
    sent = [row.payload for row in models.Outbox.select()]
    assert not any("s3cr3t" in payload or "SQLite" in payload for payload in sent)
    report = finals()[1]
    assert report["state"] == "failed" and report["pilotErrorCode"] == 1008, report
    assert "worker_attributes-1.json" in report["pilotErrorDiag"] and "symlink" in report["pilotErrorDiag"]


def test_a_pilot_cannot_claim_or_report_a_job_it_was_not_given(site):
    server = Server()
    ctx = context(site, server)
    worker, ap = worker_with_job(ctx, 1)
    other, other_ap = worker_with_job(ctx, 2)  # job 2 runs in another worker
    with open(os.path.join(ap, "worker_pandaids.json"), "w") as handle:
        json.dump([1, 2, 77], handle)  # 77: a job this harvester never held
    pilot_ends(ap, 2, state="failed", pilotErrorCode=1305)
    pilot_ends(ap, 77, state="failed", pilotErrorCode=1305)
    pilot_ends(ap, 1)
    Monitor(ctx).run_once(NOW)
    assert list(finals()) == [1]  # its own job only: neither job 2 nor job 77 is this worker's to report
    assert models.HeldJob.get_by_id(2).status == "fed"
    models.Worker.update(status="failed", end_time=NOW, reported=False).where(
        models.Worker.worker_id == worker.worker_id).execute()
    Propagator(ctx).run_once(NOW)
    [sent] = [w for w in server.workers if w["workerID"] == worker.worker_id]
    assert sent["pandaid_list"] == [1]  # not 2, not 77: the server would fail them (1008) with this worker
    assert {tuple(r) for r in models.JobWorker.select(models.JobWorker.panda_id, models.JobWorker.worker_id)
            .tuples()} == {(1, worker.worker_id), (2, other.worker_id)}


def test_a_report_over_its_size_cap_fails_only_that_workers_job(site):
    server = Server()
    ctx = context(site, server)
    big, big_ap = worker_with_job(ctx, 1)
    honest, honest_ap = worker_with_job(ctx, 2)
    pilot_ends(big_ap, 1, padding="x" * BIG)
    pilot_ends(honest_ap, 2)
    Monitor(ctx).run_once(NOW)
    reports = finals()
    assert reports[2]["state"] == "finished"
    assert reports[1]["state"] == "failed" and reports[1]["pilotErrorCode"] == 1008, reports[1]
    diag = reports[1]["pilotErrorDiag"]
    assert "worker_attributes-1.json" in diag and "1048576" in diag and "padding" not in diag, diag
    assert max(len(row.payload) for row in models.Outbox.select()) < 10000
    Propagator(ctx).run_once(NOW)
    assert models.Outbox.select().count() == 0  # both delivered


def test_the_cap_is_a_queue_setting(site):
    ctx = context(site, pilot={"handoff_max_bytes": 4 * BIG})
    worker, ap = worker_with_job(ctx, 1)
    pilot_ends(ap, 1, padding="x" * BIG)
    Monitor(ctx).run_once(NOW)
    assert finals()[1]["state"] == "finished"


class SwapAfterListing(LocalTransport):
    """The pilot changes a file between harvester's listing of the access points and its read of what changed."""

    def __init__(self, swap):
        super().__init__()
        self.swap, self.swapped = swap, False

    def files(self, ops):
        if not self.swapped and any(op["op"] == "read" for op in ops):
            self.swapped = True
            self.swap()
        return super().files(ops)


def swapped_report(site, swap):
    """A worker whose final report is listed as a small regular file, then ``swap(path)``ed before it is read; the
    report harvester queued for its job."""
    ctx = context(site)
    worker, ap = worker_with_job(ctx, 1)
    pilot_ends(ap, 1)
    path = os.path.join(ap, "worker_attributes-1.json")
    transport = SwapAfterListing(lambda: swap(path))
    ctx.transport = lambda queue: transport
    monitor = threading.Thread(target=Monitor(ctx).run_once, args=(NOW,), daemon=True)
    monitor.start()
    monitor.join(60)
    if monitor.is_alive():  # blocked on the swapped-in FIFO: unblock it (a writer), then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        monitor.join(10)
        pytest.fail("the monitor blocked reading a FIFO a pilot put in place of its report")
    assert transport.swapped
    return finals()[1]


def to_symlink(site):
    def swap(path):
        os.unlink(path)
        os.symlink(site / "outside" / "secret.json", path)
    return swap


def to_fifo(path):
    os.unlink(path)
    os.mkfifo(path)


def to_huge(path):
    with open(path, "w") as handle:
        json.dump({"jobId": 1, "state": "finished", "padding": "x" * BIG}, handle)


@pytest.mark.parametrize("swap, said", [(to_symlink, "symlink"), (to_fifo, "not a regular file"),
                                        (to_huge, "over the limit of 1048576 bytes")],
                         ids=["symlink", "fifo", "huge"])
def test_a_report_swapped_after_the_listing_is_refused_as_read(site, swap, said):
    report = swapped_report(site, swap(site) if swap is to_symlink else swap)
    assert report["state"] == "failed" and report["pilotErrorCode"] == 1008, report
    assert said in report["pilotErrorDiag"] and "worker_attributes-1.json" in report["pilotErrorDiag"], report
    assert "s3cr3t" not in json.dumps(report) and "padding" not in json.dumps(report)


def test_a_fifo_listed_as_a_report_is_refused_without_a_read(site):
    ctx = context(site)
    worker, ap = worker_with_job(ctx, 1)
    os.mkfifo(os.path.join(ap, "worker_attributes-1.json"))
    Monitor(ctx).run_once(NOW)
    report = finals()[1]
    assert report["state"] == "failed" and report["pilotErrorCode"] == 1008, report
    assert "not a regular file" in report["pilotErrorDiag"], report


class Counting(LocalTransport):
    """The local transport, counting each batch's operations."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def files(self, ops):
        self.batches.append(sorted({op["op"] for op in ops}))
        return super().files(ops)


def test_one_listing_per_queue_per_cycle_and_only_changed_reports_read(site):
    ctx = context(site)
    transport = Counting()
    ctx.transport = lambda queue: transport
    aps = [worker_with_job(ctx, panda_id)[1] for panda_id in (1, 2, 3)]
    for panda_id, ap in enumerate(aps, 1):
        with open(os.path.join(ap, "worker_attributes.json"), "w") as handle:
            json.dump({"jobId": panda_id, "state": "running"}, handle)
    monitor = Monitor(ctx)
    monitor.run_once(NOW)
    assert transport.batches == [["scan"], ["read"]]  # three workers: one listing, one read of what they wrote
    transport.batches.clear()
    monitor.run_once(NOW)
    assert transport.batches == [["scan"]]  # nothing changed: the listing alone
    pilot_ends(aps[1], 2)
    transport.batches.clear()
    monitor.run_once(NOW)
    assert transport.batches[:2] == [["scan"], ["read"]] and list(finals()) == [2]


def too_large(limit):
    def refuse(updates):
        if len(json.dumps(updates)) > limit:
            raise ServerError("pilot/update_jobs_bulk: refused (HTTP 413): body too large", transient=False,
                              status=413)
    return refuse


def test_a_413_splits_the_bulk_and_only_the_bad_entry_is_rejected(site, caplog):
    server = Server(refuse=too_large(50000))
    ctx = context(site, server)
    workers = [worker_with_job(ctx, panda_id)[0] for panda_id in (1, 2, 3, 4, 5)]
    for panda_id, worker in zip((1, 2, 3, 4, 5), workers):
        params = {"jobId": panda_id, "state": "finished", "attemptNr": 1}
        if panda_id == 3:
            params["pilotLog"] = "y" * 60000  # too large for the server on its own
        models.Outbox.create(kind="job_final", key=f"job:{panda_id}:1:final", payload=json.dumps(params),
                             worker_id=worker.worker_id, created=NOW)
    Propagator(ctx).run_once(NOW)
    left = list(models.Outbox.select())
    assert [(json.loads(row.payload)["jobId"], row.rejected) for row in left] == [(3, True)]
    assert "413" in left[0].last_error
    assert any("413" in r.getMessage() and "job:3:1:final" in r.getMessage() for r in caplog.records)
    delivered = {pid for call in server.job_calls if len(json.dumps(call)) for pid in call}
    assert {1, 2, 4, 5} <= delivered
    notes = [row.reason for row in models.WorkerStatusLog.select().where(
        models.WorkerStatusLog.worker_id == workers[2].worker_id)]
    assert any("413" in reason and "rejected" in reason for reason in notes), notes
    others = models.WorkerStatusLog.select().where(models.WorkerStatusLog.worker_id == workers[0].worker_id)
    assert not any("rejected" in row.reason for row in others)


def test_a_refused_call_splits_too_and_a_transient_error_keeps_everything(site):
    def refuse_job_4(updates):
        if any(u["jobId"] == 4 for u in updates):
            raise ServerError("pilot/update_jobs_bulk: refused (HTTP 400): jobId 4: bad field", transient=False,
                              status=400)
    server = Server(refuse=refuse_job_4)
    ctx = context(site, server)
    for panda_id in (1, 2, 3, 4):
        models.Outbox.create(kind="job_final", key=f"job:{panda_id}:1:final", created=NOW,
                             payload=json.dumps({"jobId": panda_id, "state": "finished", "attemptNr": 1}))
    Propagator(ctx).run_once(NOW)
    assert [(json.loads(r.payload)["jobId"], r.rejected) for r in models.Outbox.select()] == [(4, True)]

    def down(updates):
        raise ServerError("pilot/update_jobs_bulk: server unreachable")
    server.refuse = down
    models.Outbox.create(kind="job_final", key="job:9:1:final", created=NOW,
                         payload=json.dumps({"jobId": 9, "state": "finished", "attemptNr": 1}))
    with pytest.raises(ServerError):
        Propagator(ctx).run_once(NOW)
    assert models.Outbox.select().where(models.Outbox.rejected == False).count() == 1  # noqa: E712 kept
