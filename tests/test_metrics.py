"""``/metrics`` of a real ``minipanda serve``: parsed with prometheus_client's own text parser, its numbers equal
to the database's, read at scrape time, in the server's own registry."""
import datetime

import pytest
import requests
from peewee import fn
from prometheus_client.parser import text_string_to_metric_families

import monitorhelp
from monitorhelp import OTHER, QUEUE
from taskhelp import acquire


@pytest.fixture
def server(tmp_path, db_url):
    server = monitorhelp.start(tmp_path, db_url)
    yield server
    server.stop()


def scrape(server, token=None):
    reply = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token or server.admin_token}"},
                         timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    return families


def samples(families, name, suffix=""):
    """{labels as a sorted tuple of (key, value): value} of one family's samples named name+suffix."""
    return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples if s.name == name + suffix}


def test_numbers_match_the_database(server):
    from minipanda.core import models

    ids = monitorhelp.populate(server)
    families = scrape(server)
    Job, Task, Worker = models.Job, models.Task, models.Worker
    jobs = {(("queue", q), ("state", s)): float(n) for q, s, n in Job.select(
        Job.computing_site, Job.status, fn.COUNT(Job.panda_id)).group_by(Job.computing_site, Job.status).tuples()}
    assert samples(families, "minipanda_jobs") == jobs
    assert jobs[(("queue", QUEUE), ("state", "finished"))] == 1
    assert jobs[(("queue", OTHER), ("state", "activated"))] == 1
    tasks = {(("state", s),): float(n) for s, n in Task.select(Task.status, fn.COUNT(Task.jedi_task_id))
             .group_by(Task.status).tuples()}
    assert samples(families, "minipanda_tasks") == tasks == {(("state", "running"),): 1.0}
    workers = {(("queue", q), ("state", s)): float(n) for q, s, n in Worker.select(
        Worker.computing_site, Worker.status, fn.COUNT(Worker.id)).group_by(Worker.computing_site, Worker.status)
        .tuples()}
    assert samples(families, "minipanda_workers") == workers
    assert workers == {(("queue", QUEUE), ("state", "running")): 1.0, (("queue", QUEUE), ("state", "finished")): 1.0,
                       (("queue", OTHER), ("state", "submitted")): 1.0}
    assert samples(families, "minipanda_harvester_worker_statistics") == {
        (("harvester", "harv-1"), ("job_type", "managed"), ("queue", QUEUE), ("resource_type", "SCORE"),
         ("state", "running")): 1.0,
        (("harvester", "harv-1"), ("job_type", "managed"), ("queue", QUEUE), ("resource_type", "SCORE"),
         ("state", "submitted")): 0.0}
    assert samples(families, "minipanda_harvester_info") == {
        (("harvester", "harv-1"), ("host", "node<1>"), ("version", "1.0")): 1.0}

    # heartbeat ages: bounded by the database's times and the moments before and after the scrape
    before = datetime.datetime.utcnow()
    families = scrape(server)
    after = datetime.datetime.utcnow()
    oldest = Job.select(fn.MIN(Job.heartbeat_time)).where(Job.computing_site == QUEUE,
                                                          Job.status.in_(["sent", "starting", "running"])).scalar()
    oldest = oldest if isinstance(oldest, datetime.datetime) else datetime.datetime.fromisoformat(str(oldest))
    age = samples(families, "minipanda_job_heartbeat_age_seconds")[(("queue", QUEUE),)]
    assert (before - oldest).total_seconds() - 1 <= age <= (after - oldest).total_seconds() + 1
    assert samples(families, "minipanda_active_jobs_without_heartbeat") == {(("queue", QUEUE),): 0.0}
    beat = models.HarvesterInstance.get_by_id("harv-1").last_heartbeat
    harvester_age = samples(families, "minipanda_harvester_heartbeat_age_seconds")[(("harvester", "harv-1"),)]
    assert (before - beat).total_seconds() - 1 <= harvester_age <= (after - beat).total_seconds() + 1

    # the dispatch histogram counts every claim: populate's one claim with jobs, then one without and one more with
    counts = samples(families, "minipanda_dispatch_seconds", "_count")
    assert counts == {(("outcome", "jobs"),): 1.0, (("outcome", "none"),): 0.0}
    assert acquire(server, "EMPTY_PQ") == []
    assert acquire(server, QUEUE)
    families = scrape(server)
    assert samples(families, "minipanda_dispatch_seconds", "_count") == {(("outcome", "jobs"),): 2.0,
                                                                          (("outcome", "none"),): 1.0}
    buckets = samples(families, "minipanda_dispatch_seconds", "_bucket")
    assert buckets[(("le", "+Inf"), ("outcome", "jobs"))] == 2.0
    assert samples(families, "minipanda_dispatch_seconds", "_sum")[(("outcome", "jobs"),)] > 0
    assert ids["waiting"]


def test_counts_are_read_at_scrape_time(server):
    from minipanda.core import models

    families = scrape(server)
    assert samples(families, "minipanda_jobs") == {} and samples(families, "minipanda_tasks") == {}
    monitorhelp.set_queue(QUEUE)
    body = server.call("job/submit", {"jobs": [{"jobName": f"j{i}", "computingSite": QUEUE, "transformation": "t",
                                                "prodSourceLabel": "managed"} for i in range(3)]})
    assert body["success"]
    families = scrape(server)
    assert samples(families, "minipanda_jobs") == {(("queue", QUEUE), ("state", "activated")): 3.0}
    assert models.Job.select().count() == 3
    assert "process_cpu_seconds_total" in {s.name for f in families.values() for s in f.samples}


def test_openmetrics_when_asked(server):
    reply = requests.get(server.url + "/metrics", timeout=30, headers={
        "Authorization": f"Bearer {server.admin_token}", "Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
    assert reply.text.rstrip().endswith("# EOF") and "minipanda_dispatch_seconds_bucket" in reply.text


def test_metrics_need_a_token_of_any_role(server):  # --auth none: tests/test_monitor_pages.py
    assert requests.get(server.url + "/metrics", timeout=30).status_code == 401
    assert requests.get(server.url + "/metrics", headers={"Authorization": "Bearer x"}, timeout=30).status_code == 401
    assert "minipanda_jobs" in scrape(server, server.token("user", "prometheus"))


def test_each_app_has_its_own_registry_and_the_global_one_stays_clean(tmp_path):
    from prometheus_client import REGISTRY

    from minipanda.api.app import ServerContext, make_app

    apps = [make_app(ServerContext(home=str(tmp_path), secret=b"x" * 32)) for _ in range(2)]
    registries = [app.config["minipanda.metrics"] for app in apps]
    assert registries[0] is not registries[1]
    assert not [m.name for m in REGISTRY.collect() if m.name.startswith("minipanda")]


def test_harvester_agent_figures_from_its_heartbeat(server):
    """harvester's heartbeat carries each agent's cycles, errors and last duration; /metrics exports them, and a
    malformed figure is refused naming it (nothing stored)."""
    url, headers = server.url + "/api/v1/harvester/heartbeat", {"Authorization": f"Bearer {server.admin_token}"}
    agents = {"monitor": {"runs": 12, "errors": 1, "last_duration": 0.25, "last_error": "boom",
                          "last_error_time": "2026-11-30T11:00:00"},
              "submitter": {"runs": 3, "errors": 0, "last_duration": 1.5, "last_error": None,
                            "last_error_time": None}}
    reply = requests.post(url, json={"harvester_id": "harv-9", "version": "0.1.0", "host": "h", "agents": agents},
                          headers=headers, timeout=30)
    assert reply.status_code == 200 and reply.json()["success"], reply.text
    bad = requests.post(url, json={"harvester_id": "harv-9", "agents": {"monitor": {"runs": -1}}}, headers=headers,
                        timeout=30)
    assert bad.status_code == 400 and "agents.monitor.runs" in bad.json()["message"], bad.text
    families = scrape(server)
    key = lambda agent: (("agent", agent), ("harvester", "harv-9"))  # noqa: E731
    assert samples(families, "minipanda_harvester_agent_cycles", "_total") == {key("monitor"): 12.0,
                                                                                key("submitter"): 3.0}
    assert samples(families, "minipanda_harvester_agent_errors", "_total") == {key("monitor"): 1.0,
                                                                                key("submitter"): 0.0}
    assert samples(families, "minipanda_harvester_agent_last_cycle_seconds") == {key("monitor"): 0.25,
                                                                                 key("submitter"): 1.5}
