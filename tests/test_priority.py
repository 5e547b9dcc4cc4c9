"""Priorities: PanDA's per-user formula at generation, task priority override, and the periodic recompute."""
from minipanda.tasks import priority
from taskhelp import task_server  # noqa: F401 (a fixture)
from taskhelp import TaskServer, acquire, jobs_of, open_db, run_job, set_queue, submit, wait_for, wait_jobs


def test_formula():
    assert priority.for_new_jobs(None, 0, 100, False, 1000)[::19] == [1000, 997, 993, 989, 985, 981]
    assert priority.for_new_jobs(None, 0, 100, False, 1000)[-1] == 981  # a fresh user's 100 jobs: 1000 .. 981
    assert priority.for_new_jobs(None, 12, 3, False, 1000) == [998, 998, 998]
    assert priority.for_new_jobs(None, 0, 2, True, 1000) == [2000, 2000]
    assert priority.for_new_jobs(450, 99, 3, True, 1000) == [450, 450, 450]


def test_per_user_priorities_and_override(task_server):
    set_queue("Q1")
    alice, bob = task_server.token("user", "alice"), task_server.token("user", "bob")
    first = submit(task_server, {"taskName": "a1", "exec": "true", "nJobs": 12, "nScouts": 0}, alice)
    assert [j["currentPriority"] for j in wait_jobs(task_server, first, 12)] == [1000] * 5 + [999] * 5 + [998] * 2
    second = submit(task_server, {"taskName": "a2", "exec": "true", "nJobs": 3, "nScouts": 0}, alice)
    assert [j["currentPriority"] for j in wait_jobs(task_server, second, 3)] == [998, 998, 998]  # T = 12
    fresh = submit(task_server, {"taskName": "b1", "exec": "true", "nJobs": 2, "nScouts": 0}, bob)
    assert [j["currentPriority"] for j in wait_jobs(task_server, fresh, 2)] == [1000, 1000]
    fixed = submit(task_server, {"taskName": "b2", "exec": "true", "nJobs": 2, "nScouts": 0, "taskPriority": 4000},
                   bob)
    assert [j["currentPriority"] for j in wait_jobs(task_server, fixed, 2)] == [4000, 4000]
    assert acquire(task_server, "Q1")[0]["PandaID"] == wait_jobs(task_server, fixed, 2)[0]["PandaID"]


def test_recompute_raises_waiting_jobs(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url, {"period.priority": 0.3})
    try:
        open_db(server)
        set_queue("Q1")
        tid = submit(server, {"taskName": "r", "exec": "true", "nJobs": 12, "nScouts": 0})
        jobs = wait_jobs(server, tid, 12)
        assert [j["currentPriority"] for j in jobs][-2:] == [998, 998]
        for job in acquire(server, "Q1", n=5):
            run_job(server, job)
        # 7 waiting jobs, none running: positions 0..6 -> 1000 x 5, 999 x 2
        wait_for(lambda: sorted(j["currentPriority"] for j in jobs_of(server, tid) if j["jobStatus"] == "activated")
                 == [999, 999, 1000, 1000, 1000, 1000, 1000], "the recompute to raise the waiting jobs")
    finally:
        server.stop()
