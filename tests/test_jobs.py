"""Job services in-process on each backend: batched submission (pilot updates: test_updates.py)."""
from conftest import make_job
from minipanda.core import bulk, jobs, models


def test_submission_writes_jobs_and_files_in_a_few_statements(database, monkeypatch):
    calls = []
    real = bulk.insert_columns
    monkeypatch.setattr(bulk, "insert_columns", lambda table, n, varying, shared: calls.append((table, n)) or
                        real(table, n, varying, shared))
    specs = [make_job(jobName="" if i % 2 else f"named.{i}", Files=[
        {"type": "input", "lfn": f"in.{i}", "scope": "s", "dataset": "d"},
        {"type": "log", "lfn": f"log.{i}.tgz", "scope": "s"}]) for i in range(50)]
    results = jobs.submit_jobs(specs, "alice")
    assert calls == [("job", 50), ("job_file", 100)]  # not a statement per job
    ids = [r[0] for r in results]
    assert ids == list(range(ids[0], ids[0] + 50))
    assert [r[2] for r in results[:2]] == ["named.0", f"job.{ids[1]}"]
    stored = {j.panda_id: j for j in models.Job.select()}
    assert stored[ids[1]].job_name == f"job.{ids[1]}" and stored[ids[0]].status == "activated"
    assert stored[ids[0]].assigned_priority == stored[ids[0]].current_priority and stored[ids[0]].prod_user_name == "alice"
    files = list(models.JobFile.select().where(models.JobFile.job == ids[3]).order_by(models.JobFile.type))
    assert [(f.type, f.lfn, f.status) for f in files] == [("input", "in.3", "ready"), ("log", "log.3.tgz", "defined")]
    assert files[1].guid  # made for a log that had none
    assert models.StatusLog.select().where(models.StatusLog.new_status == "activated").count() == 50
