"""The monitor's page data made in-process (minipanda.monitor.queries, pagedata), where it is read in a faster way than the
obvious query: each figure equals what the obvious query over the rows gives. Both backends."""
import datetime

from conftest import make_job
from minipanda.core import jobs, models, queues, states
from minipanda.monitor import filters, pagedata, queries
from peewee import fn

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0)


def submit(queue, n, **overrides):
    specs = [make_job(queue, jobName=f"{queue}.{i}", **overrides) for i in range(n)]
    return [row[0] for row in jobs.submit_jobs(specs, "alice", queue_ensurer=queues.ensure_queues)]


def set_status(ids, status, **fields):
    """A state change as the product writes one: the state, its time and the modification time together."""
    when = fields.pop("modification_time", fields.pop("state_changed_time", NOW))
    models.Job.update(status=status, state_changed_time=when, modification_time=when, **fields).where(
        models.Job.panda_id.in_(ids)).execute()


def counted(f):
    """{queue: {state: n}} of the jobs matching ``f``, by a plain GROUP BY over the rows."""
    Job = models.Job
    query = filters.job_filter(Job.select(Job.computing_site, Job.status, fn.COUNT(Job.panda_id)), f, NOW)
    out = {}
    for queue, status, n in query.group_by(Job.computing_site, Job.status).tuples():
        out.setdefault(queue, {})[status] = n
    return out


def test_job_counts_and_totals_equal_a_count_of_the_rows_under_every_filter(database):
    first = submit("F1", 4)
    second = submit("F2", 3, prodUserName="bob")
    set_status(first[:2], "running")
    set_status(second[:1], "failed", modification_time=NOW - datetime.timedelta(days=5))
    task = models.Task.create(task_name="user.bob.t", user_name="bob", status="running", params="{}", spec="{}",
                              creation_time=NOW, modification_time=NOW, state_changed_time=NOW)
    models.Job.update(task_id=task.jedi_task_id).where(models.Job.panda_id.in_(second)).execute()
    for params in ({}, {"status": "running"}, {"status": "running|failed"}, {"queue": "F2"}, {"queue": "F*"},
                   {"jeditaskid": str(task.jedi_task_id)}, {"jeditaskid": "0"}, {"user": "bob"},
                   {"taskname": "user.bob.*"}, {"days": "2"}, {"queue": "F1", "status": "activated"},
                   {"jeditaskid": str(task.jedi_task_id), "status": "failed"}):
        f = filters.parse_filters(params)
        by_queue, _ = queries.jobs_by_queue(f, NOW)
        assert by_queue == counted(f), params
        listed = queries.job_list(f, NOW)
        assert listed["total"] == sum(n for states_ in counted(f).values() for n in states_.values()), params
        Job = models.Job
        newest = [j.panda_id for j in filters.job_filter(Job.select(Job.panda_id), f, NOW).order_by(
            Job.modification_time.desc(), Job.panda_id.desc()).limit(f.limit)]
        assert [j["PandaID"] for j in listed["jobs"]] == newest, params
    dashboard = pagedata.dashboard(filters.parse_filters({}), NOW)
    assert dashboard["jobs_total"] == 7 == sum(dashboard["job_totals"].values())
    assert dashboard["tasks"][0]["jobs"] == {"activated": 2, "failed": 1}


def test_recent_errors_are_the_latest_failures_first(database):
    ids = submit("E1", 3)
    failed_at = [NOW - datetime.timedelta(hours=h) for h in (3, 1, 2)]
    for pid, when in zip(ids, failed_at):
        set_status([pid], states.JobStatus.FAILED.value, state_changed_time=when, modification_time=when)
    # touched after it failed (a late pilot message): still listed by when it failed
    models.Job.update(modification_time=NOW).where(models.Job.panda_id == ids[0]).execute()
    assert [j["PandaID"] for j in queries.recent_errors(filters.parse_filters({}), NOW)] == [ids[1], ids[2], ids[0]]


def test_jobs_are_listed_most_recently_changed_first_whatever_path_changed_them(database, monkeypatch):
    """The job list reads the newest jobs of each state from the (status, state_changed_time) index (schema 12 has
    none on modification_time): that is the order of modification_time only because every path that changes a job
    stamps both with the same time. Through each of them (submission, single and bulk claims, single and bulk
    updates, a kill, a heartbeat without a transition), with a clock that often gives several changes the same
    second: the two times stay equal, and the list is ORDER BY modification_time DESC, panda_id DESC under every
    filter."""
    import random

    from minipanda.core import dispatch, updates

    clock = [NOW]

    def utcnow():
        if random.random() < 0.5:  # half the changes share their second with the one before
            clock[0] += datetime.timedelta(seconds=random.choice((1, 7, 3600)))
        return clock[0]

    random.seed(23)
    monkeypatch.setattr(states, "utcnow", utcnow)
    Job = models.Job
    for step in range(60):
        queue = random.choice(("O1", "O2", "O3"))
        action = random.choice(("submit", "claim", "claim1", "update", "bulk", "kill", "heartbeat"))
        if action == "submit":
            submit(queue, random.randint(1, 4))
        elif action in ("claim", "claim1"):
            dispatch.claim_jobs(dispatch.Offer(queue=queue, n_jobs=3 if action == "claim" else 1, node="wn"))
        else:
            sent = [j.panda_id for j in Job.select(Job.panda_id).where(Job.status.in_(["sent", "running"]))
                    .order_by(Job.panda_id)]
            if not sent:
                continue
            picked = random.sample(sent, min(len(sent), random.randint(1, 3)))
            if action == "update":
                updates.update_job({"jobId": picked[0], "state": "running"})
            elif action == "bulk":
                updates.update_jobs([{"jobId": pid, "state": random.choice(("running", "finished", "failed"))}
                                     for pid in picked])
            elif action == "kill":
                jobs.kill_jobs(picked, "alice", manages_all=True)
            else:  # a heartbeat of a running job: fields, no transition
                running = Job.get_by_id(picked[0])
                updates.update_jobs([{"jobId": running.panda_id, "state": running.status, "cpuConsumptionTime": 5}])
    rows = list(Job.select(Job.panda_id, Job.modification_time, Job.state_changed_time))
    assert len(rows) > 20 and len({r.modification_time for r in rows}) < len(rows)  # ties to break
    assert all(r.modification_time == r.state_changed_time for r in rows)
    now = clock[0]
    for params in ({}, {"limit": "7"}, {"status": "sent|running"}, {"status": "finished", "limit": "3"},
                   {"queue": "O2"}, {"queue": "O*", "limit": "5"}, {"days": "1"}, {"user": "alice", "limit": "9"}):
        f = filters.parse_filters(params)
        expected = [j.panda_id for j in filters.job_filter(Job.select(Job.panda_id), f, now).order_by(
            Job.modification_time.desc(), Job.panda_id.desc()).limit(f.limit)]
        assert [j["PandaID"] for j in queries.job_list(f, now)["jobs"]] == expected, params
