"""The retention duty: final jobs and tasks move to the archive with their files and history, in batches; old
archives expire; the file store loses old logs, outputs and sandboxes, each counted. Both backends."""
import datetime
import json
import os

import peewee
from conftest import make_job
from minipanda.core import archive, jobs, models, states
from minipanda.tasks import retention, settings as task_settings

NOW = datetime.datetime(2026, 3, 15, 12, 0, 0)
OLD = datetime.datetime(2026, 1, 10, 8, 0, 0)  # 64 days before NOW: in the January archive
FEB = datetime.datetime(2026, 2, 3, 8, 0, 0)  # 40 days before NOW: in the February archive


def newer_job():
    """A job submitted now: the newest rows of the job tables stay live, so the jobs before it can all move."""
    return jobs.submit_jobs([make_job()], "alice")[0][0]


def make_jobs(n, status="finished", ended=OLD, settled=True, task_id=None, queue="TEST_PQ"):
    """``n`` jobs that reached ``status`` at ``ended``, each with a log file and three history rows."""
    ids = [row[0] for row in jobs.submit_jobs([make_job(queue, jobName=f"j{i}") for i in range(n)], "alice")]
    models.Job.update(status=status, state_changed_time=ended, modification_time=ended, settled=settled,
                      task_id=task_id).where(models.Job.panda_id.in_(ids)).execute()
    states.log_transitions([(pid, "activated") for pid in ids], states.JobStatus.RUNNING, "pilot", ended)
    states.log_transitions([(pid, "running") for pid in ids], states.JobStatus(status), "pilot", ended)
    return ids


def is_sqlite(database):
    return not isinstance(database, peewee.PostgresqlDatabase)


def settings(**values):
    return task_settings.Settings({f"retention.{k}": v for k, v in values.items()})


def live_rows(ids):
    Job, JobFile, StatusLog = models.Job, models.JobFile, models.StatusLog
    return (Job.select().where(Job.panda_id.in_(ids)).count(), JobFile.select().where(JobFile.job.in_(ids)).count(),
            StatusLog.select().where(StatusLog.panda_id.in_(ids)).count())


def test_old_final_jobs_move_to_the_archive_with_files_and_history(database, tmp_path):
    old = make_jobs(5, "finished")
    failed = make_jobs(2, "failed", ended=FEB)
    recent = make_jobs(2, "finished", ended=NOW - datetime.timedelta(days=3))
    unsettled = make_jobs(1, "failed", settled=False)
    waiting = [r[0] for r in jobs.submit_jobs([make_job()], "alice")]
    models.Job.update(state_changed_time=OLD).where(models.Job.panda_id.in_(waiting)).execute()
    before = {pid: (models.Job.get_by_id(pid).job_name, jobs.status_log(pid)) for pid in old + failed}

    done = retention.run(settings(batch=3), str(tmp_path), NOW)

    assert done["jobs_archived"] == (7, 0)
    assert live_rows(old + failed) == (0, 0, 0)
    assert live_rows(recent + unsettled + waiting) == (4, 4, 3 + 3 + 3 + 1)
    for pid in old + failed:
        found = archive.find("job", pid)
        assert found is not None, pid
        job = found.first("job")
        assert (job.panda_id, job.job_name) == (pid, before[pid][0])
        assert [f.lfn for f in found.rows["job_file"]] == ["log.tgz"]
        assert [(r.old_status, r.new_status) for r in found.rows["status_log"]] == \
            [(h["from"], h["to"]) for h in before[pid][1]]
    if is_sqlite(database):
        assert archive.for_database().months() == ["2026-01", "2026-02"]
    stat = models.RetentionStat.get_by_id("jobs_archived")
    assert stat.count == 7
    assert retention.run(settings(), str(tmp_path), NOW)["jobs_archived"] == (0, 0)  # nothing twice


# ---- crash safety: kill -9 in the middle of a move ----------------------------------------------------------------

MOVER = r"""
import datetime, os, sys, time
from minipanda.core import archive, schema
from minipanda.tasks import retention, settings
url, marker, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
schema.open_database(url).connect(reuse_if_open=True)
real, calls = archive.delete_live, []

def delete_live(*args):
    calls.append(1)
    if len(calls) == stop_at:  # the archive has committed this batch; the live delete has not begun
        open(marker, "w").close()
        time.sleep(120)
    return real(*args)

archive.delete_live = delete_live
retention.run(settings.Settings({"retention.batch": 20, "retention.log_days": 0}), os.path.dirname(marker),
              datetime.datetime.fromisoformat(sys.argv[4]))
"""


def archived_counts(database, ids):
    """(jobs, files, history rows) of ``ids`` in the archive, duplicates counted."""
    if is_sqlite(database):
        import sqlite3

        totals = [0, 0, 0]
        for month in archive.for_database().months():
            conn = sqlite3.connect(archive.for_database().path(month))
            marks = ",".join(map(str, ids))
            for index, table in enumerate(("job", "job_file", "status_log")):
                totals[index] += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE panda_id IN ({marks})").fetchone()[0]
            conn.close()
        return tuple(totals)
    marks = ",".join(map(str, ids))
    return tuple(database.execute_sql(f"SELECT COUNT(*) FROM {table}_archive WHERE panda_id IN ({marks})").fetchone()[0]
                 for table in ("job", "job_file", "status_log"))


def run_mover(db_url, tmp_path, stop_at=None, kill_after=None):
    """The retention duty in a subprocess, killed with SIGKILL inside batch ``stop_at`` (between the archive's
    commit and the live delete) or after ``kill_after`` seconds, wherever it is."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "marker"
    if marker.exists():
        marker.unlink()
    proc = subprocess.Popen([sys.executable, "-c", MOVER, db_url, str(marker), str(stop_at or 0),
                             NOW.isoformat()])
    try:
        if stop_at:
            deadline = time.monotonic() + 60
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert marker.exists(), "the mover never reached the batch to be killed in"
        else:
            time.sleep(kill_after)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_kill_between_archive_commit_and_live_delete_loses_and_duplicates_nothing(database, db_url, tmp_path):
    ids = make_jobs(60, "finished")
    newer_job()
    database.close()
    run_mover(db_url, tmp_path, stop_at=2)
    database.connect(reuse_if_open=True)
    # batch 1 moved; batch 2 is in both places on SQLite (committed to the archive file, still live), only live on
    # PostgreSQL (copy and delete are one transaction there, rolled back); batch 3 untouched
    assert live_rows(ids[:20]) == (0, 0, 0)
    both = (20, 20, 60) if is_sqlite(database) else (0, 0, 0)
    assert live_rows(ids[20:40]) == (20, 20, 60) and archived_counts(database, ids[20:40]) == both
    assert live_rows(ids[40:]) == (20, 20, 60) and archived_counts(database, ids[40:]) == (0, 0, 0)
    # while both hold it, a lookup finds the live one: nothing is shown twice
    assert jobs.describe_jobs([ids[20]])[0]["PandaID"] == ids[20]
    retention.run(settings(batch=20, log_days=0), str(tmp_path), NOW)
    assert live_rows(ids) == (0, 0, 0)
    assert archived_counts(database, ids) == (60, 60, 180)


def test_kill_at_random_moments_loses_and_duplicates_nothing(database, db_url, tmp_path):
    import random

    ids = make_jobs(400, "failed")
    newer_job()
    database.close()
    for delay in (random.uniform(0.3, 1.5), random.uniform(0.3, 1.5), random.uniform(0.3, 1.5)):
        run_mover(db_url, tmp_path, kill_after=delay)
    database.connect(reuse_if_open=True)
    live, archived = live_rows(ids), archived_counts(database, ids)
    assert live[0] + archived[0] >= 400  # a job is somewhere; where both hold it the next run settles it
    retention.run(settings(batch=20, log_days=0), str(tmp_path), NOW)
    assert live_rows(ids) == (0, 0, 0)
    assert archived_counts(database, ids) == (400, 400, 1200)


# ---- tasks and archive expiry ----------------------------------------------------------------------------------

def make_task(status="done", ended=OLD, name="t", in_ds=None, job_pars="echo"):
    """A task that reached ``status`` at ``ended``, with one history row, one input and one brokerage decision."""
    Task = models.Task
    task = Task.create(task_name=name, user_name="alice", status=status, params="{}", in_ds=in_ds,
                    spec=json.dumps({"jobPars": job_pars}), creation_time=ended, modification_time=ended,
                    state_changed_time=ended)
    models.TaskLog.create(task_id=task.jedi_task_id, old_status="running", new_status=status, time=ended)
    models.TaskInput.create(task_id=task.jedi_task_id, chunk=0, status="finished")
    models.Brokerage.create(task_id=task.jedi_task_id, time=ended, requirements="{}", candidates="[]")
    return task.jedi_task_id


def test_tasks_move_once_no_job_of_theirs_is_live(database, tmp_path):
    alone = make_task("done")
    busy = make_task("failed", name="busy")
    make_jobs(1, "finished", ended=NOW - datetime.timedelta(days=2), task_id=busy)
    running = make_task("running", name="running")
    done = retention.run(settings(), str(tmp_path), NOW)
    assert done["tasks_archived"] == (1, 0)
    assert models.Task.get_or_none(models.Task.jedi_task_id == alone) is None
    for model in (models.TaskLog, models.TaskInput, models.Brokerage):
        assert model.select().where(model.task_id == alone).count() == 0
    found = archive.find("task", alone)
    assert found.first("task").task_name == "t"
    assert [len(found.rows[t]) for t in ("task_log", "task_input", "brokerage")] == [1, 1, 1]
    assert {t.jedi_task_id for t in models.Task.select()} == {busy, running}


def test_archives_older_than_the_setting_are_deleted(database, tmp_path):
    january, february = make_jobs(3, ended=OLD), make_jobs(2, ended=FEB)
    newer_job()
    retention.run(settings(), str(tmp_path), NOW)
    assert archived_counts(database, january + february)[0] == 5
    # SQLite deletes a whole month once it ended that long ago; PostgreSQL deletes rows by their own end
    days = 40 if is_sqlite(database) else 45
    done = retention.run(settings(archive_days=days), str(tmp_path), NOW)
    assert done["archived_jobs_expired"] == (3, 0)
    assert archived_counts(database, january) == (0, 0, 0)
    assert archived_counts(database, february) == (2, 2, 6)
    assert archive.find("job", january[0]) is None and archive.find("job", february[0]) is not None
    if is_sqlite(database):
        assert done["archive_files_expired"] == (1, 0) and archive.for_database().months() == ["2026-02"]
    assert retention.run(settings(archive_days=0), str(tmp_path), NOW).get("archived_jobs_expired") is None


# ---- the file store ----------------------------------------------------------------------------------------------

def put_file(home, scope, lfn, size=100):
    path = os.path.join(home, "files", scope, lfn)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"x" * size)
    return path


def with_log(ids, home, prefix):
    """Give each job its own log tarball in the store."""
    paths = []
    for pid in ids:
        models.JobFile.update(lfn=f"{prefix}{pid}.log.tgz", surl=f"http://server/files/test/{prefix}{pid}.log.tgz") \
            .where(models.JobFile.job == pid).execute()
        paths.append(put_file(home, "test", f"{prefix}{pid}.log.tgz", size=1000))
    return paths


def test_log_tarballs_go_after_their_days_and_are_counted(database, tmp_path):
    home = str(tmp_path)
    old_ids = make_jobs(3, ended=NOW - datetime.timedelta(days=20))
    new_ids = make_jobs(2, ended=NOW - datetime.timedelta(days=3))
    running = [r[0] for r in jobs.submit_jobs([make_job()], "alice")]
    old_paths, new_paths = with_log(old_ids, home, "old"), with_log(new_ids, home, "new")
    running_path = with_log(running, home, "run")
    done = retention.run(settings(log_days=14), home, NOW)
    assert done["log"] == (3, 3000)
    assert not any(os.path.exists(p) for p in old_paths)
    assert all(os.path.exists(p) for p in new_paths + running_path)
    statuses = {f.panda_id: f.status for f in models.JobFile.select()}
    assert {statuses[p] for p in old_ids} == {"deleted"} and "deleted" not in {statuses[p] for p in new_ids}
    assert retention.run(settings(log_days=14), home, NOW)["log"] == (0, 0)
    stat = models.RetentionStat.get_by_id("log")
    assert (stat.count, stat.bytes) == (3, 3000)


def output_file(task_id, lfn, home, fetched=None):
    Dataset = models.Dataset
    dataset, _ = Dataset.get_or_create(name=f"out.{task_id}", defaults=dict(type="output", user_name="alice",
                                                                       task_id=task_id, creation_time=OLD,
                                                                       modification_time=OLD))
    models.DatasetFile.create(dataset=dataset, lfn=lfn, guid="g", location="http://server:25080/files/user.alice",
                              creation_time=OLD, fetched_time=fetched, status="ready")
    return put_file(home, "user.alice", lfn, size=10)


def test_outputs_go_when_fetched_or_old_never_while_a_live_task_reads_them(database, tmp_path):
    home = str(tmp_path)
    old_task = make_task("done", ended=NOW - datetime.timedelta(days=40), name="old")
    recent = make_task("finished", ended=NOW - datetime.timedelta(days=3), name="recent")
    read = make_task("done", ended=NOW - datetime.timedelta(days=40), name="read")
    make_task("running", ended=NOW, name="reader", in_ds=f"out.{read}/")
    live = make_task("running", ended=NOW - datetime.timedelta(days=40), name="live")
    gone = [output_file(old_task, "o1.root", home),
            output_file(recent, "o2.root", home, fetched=NOW - datetime.timedelta(days=2))]
    kept = [output_file(recent, "o3.root", home), output_file(read, "o4.root", home),
            output_file(live, "o5.root", home, fetched=NOW - datetime.timedelta(days=5))]
    done = retention.run(settings(output_days=30, fetched_output_days=1, job_days=0), home, NOW)
    assert done["output"] == (2, 20)
    assert [os.path.exists(p) for p in gone + kept] == [False, False, True, True, True]
    assert {f.lfn: f.status for f in models.DatasetFile.select()} == {
        "o1.root": "deleted", "o2.root": "deleted", "o3.root": "ready", "o4.root": "ready", "o5.root": "ready"}


def test_sandboxes_stay_while_a_live_task_uses_them(database, tmp_path):
    home = str(tmp_path)
    index = tmp_path / "sandboxes" / "alice"
    index.mkdir(parents=True)
    boxes = {}
    for name, age_days in (("used.tar.gz", 60), ("unused.tar.gz", 60), ("fresh.tar.gz", 2)):
        boxes[name] = put_file(home, "user.alice", name)
        entry = index / (name + ".json")
        entry.write_text(json.dumps({"name": name, "user": "alice"}))
        when = NOW.replace(tzinfo=datetime.timezone.utc).timestamp() - age_days * 86400
        os.utime(entry, (when, when))
    make_task("running", ended=NOW, name="user", job_pars="runGen -a used.tar.gz -j ''")
    done = retention.run(settings(), home, NOW)
    assert done["sandbox"] == (1, 100)
    assert {n: os.path.exists(p) for n, p in boxes.items()} == {
        "used.tar.gz": True, "unused.tar.gz": False, "fresh.tar.gz": True}
    assert sorted(os.listdir(index)) == ["fresh.tar.gz.json", "used.tar.gz.json"]


def test_a_download_by_a_person_marks_an_output_fetched_and_metrics_count_deletions(sqlite_server):
    import requests
    from minipanda.core import schema

    server = sqlite_server
    db = schema.open_database(server.db_url)
    db.connect(reuse_if_open=True)
    task = make_task("done", ended=NOW - datetime.timedelta(days=3))
    output_file(task, "mine.root", server.home)
    url = server.url + "/files/user.alice/mine.root"
    pilot, alice = server.token("pilot", "p1"), server.token("user", "alice")
    assert requests.get(url, headers=server.headers(pilot), timeout=30).status_code == 200
    assert models.DatasetFile.get(models.DatasetFile.lfn == "mine.root").fetched_time is None  # a pilot's read
    assert requests.get(url, headers=server.headers(alice), timeout=30).content == b"x" * 10
    fetched = models.DatasetFile.get(models.DatasetFile.lfn == "mine.root").fetched_time
    assert fetched is not None
    retention.run(settings(fetched_output_days=1), server.home, fetched + datetime.timedelta(days=2))
    assert requests.get(url, headers=server.headers(alice), timeout=30).status_code == 404
    metrics = requests.get(server.url + "/metrics", headers=server.headers(), timeout=30).text
    assert 'minipanda_retention_total{kind="output"} 1.0' in metrics
    assert 'minipanda_retention_bytes_total{kind="output"} 10.0' in metrics
    assert "minipanda_retention_last_run_timestamp_seconds" in metrics
    db.close()


def test_without_tokens_a_download_bearing_a_pilot_token_is_a_pilots_and_marks_nothing(tmp_path, db_url):
    import requests
    from conftest import LiveServer
    from minipanda.core import schema

    server = LiveServer(tmp_path / "home", db_url, auth="none")
    try:
        db = schema.open_database(server.db_url)
        db.connect(reuse_if_open=True)
        output_file(make_task("done", ended=NOW - datetime.timedelta(days=3)), "mine.root", server.home)
        url = server.url + "/files/user.alice/mine.root"

        def fetched():
            return models.DatasetFile.get(models.DatasetFile.lfn == "mine.root").fetched_time

        pilot = server.token("pilot", "p1")
        assert requests.get(url, headers=server.headers(pilot), timeout=30).content == b"x" * 10
        assert fetched() is None  # the testbed's pilots: the anonymous admin by the mode, a pilot by its token
        forged = {"Authorization": "Bearer " + pilot[:-4] + "AAAA"}
        assert requests.get(url, headers=forged, timeout=30).status_code == 200  # no tokens: still answered
        assert fetched() is not None  # a token that does not verify is no pilot's: a person's download
        models.DatasetFile.update(fetched_time=None).execute()
        assert requests.get(url, timeout=30).status_code == 200
        assert fetched() is not None  # no token at all: a person, as before
        db.close()
    finally:
        server.stop()


def test_job_show_why_and_the_monitor_find_an_archived_job_and_say_so(live_server):
    import subprocess
    import sys

    import requests
    from minipanda.core import schema

    server = live_server
    db = schema.open_database(server.db_url)
    db.connect(reuse_if_open=True)
    (pid,) = make_jobs(1, "failed")
    newer_job()
    models.Job.update(pilot_error_code=1201, pilot_error_diag="killed by the batch system").where(
        models.Job.panda_id == pid).execute()
    retention.run(settings(), server.home, NOW)
    assert models.Job.get_or_none(models.Job.panda_id == pid) is None
    db.close()
    cli = [sys.executable, "-m", "minipanda"]
    where = ["--url", server.url, "--home", server.home]
    shown = subprocess.run(cli + ["job", "show", str(pid)] + where, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"job {pid} is archived (" in shown.stdout and "read-only" in shown.stdout
    assert "killed by the batch system" in shown.stdout and "running" in shown.stdout  # its fields and history
    why = subprocess.run(cli + ["why", str(pid)] + where, capture_output=True, text=True, timeout=60)
    assert why.returncode == 0, why.stderr
    assert f"job {pid} " in why.stdout and "is archived (" in why.stdout
    assert "pilot error 1201: killed by the batch system" in why.stdout
    page = requests.get(f"{server.url}/monitor/jobs/{pid}?json", headers=server.headers(), timeout=30).json()
    assert page["archived"] and page["job"]["jobStatus"] == "failed"
    assert [h["to"] for h in page["history"]] == ["activated", "running", "failed"]
    html = requests.get(f"{server.url}/monitor/jobs/{pid}", headers=server.headers(json_reply=False),
                        timeout=30).text
    assert 'id="archived"' in html and "read-only" in html
    live = requests.post(f"{server.url}/api/v1/job/get_description", json={"job_ids": [pid]},
                         headers=server.headers(), timeout=30).json()
    assert live["data"] == [None]  # PanDA's get_description reads the live tables only
    kill = requests.post(f"{server.url}/api/v1/job/kill", json={"job_ids": [pid]}, headers=server.headers(),
                         timeout=30).json()
    assert kill["data"] == [False]  # read-only
    assert requests.get(f"{server.url}/monitor/jobs/{pid + 1000}?json", headers=server.headers(),
                        timeout=30).status_code == 404


def test_the_newest_rows_stay_live_so_no_id_is_used_twice(database, tmp_path):
    """SQLite gives a new row the largest id plus one: were the newest job moved away, its PandaID (and its
    history rows' ids) would be given again."""
    ids = make_jobs(4, "finished")
    done = retention.run(settings(), str(tmp_path), NOW)
    assert done["jobs_archived"] == (3, 0)
    assert live_rows([ids[-1]]) == (1, 1, 3)  # the newest job, file and history row stay
    fresh = newer_job()
    assert fresh > max(ids)
    assert archive.find("job", fresh) is None
    tasks = [make_task("done", name=f"t{i}") for i in range(3)]
    assert retention.run(settings(), str(tmp_path), NOW)["tasks_archived"] == (2, 0)
    assert models.Task.get_or_none(models.Task.jedi_task_id == tasks[-1]) is not None


def test_retention_settings_are_checked_like_every_setting():
    from minipanda.cli import commands

    assert commands._check_setting("retention.job_days", 7) is None  # a key of serve's --config file's setting:
    assert "must not be negative" in commands._check_setting("retention.archive_days", -1)
    assert task_settings.parse_overrides(["retention.log_days=0.5"]) == {"retention.log_days": 0.5}
