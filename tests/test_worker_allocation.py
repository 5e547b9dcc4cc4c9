"""What an allocation delivered, on the server: harvester's worker reports carry the figures (additive fields,
checked one by one), /metrics sums them per queue as counters, the monitor's worker page shows them; on SQLite and
PostgreSQL."""
import re

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import monitorhelp
from conftest import backends, fresh_url

QUEUE, OTHER = "ALLOC_PQ", "ALLOC_OTHER"
FIGURES = {"nNodes": 2, "elapsedTime": 100.0, "chargeSource": "sacct ElapsedRaw", "payloadWallTime": 300.0,
           "payloadCpuTime": 550.5, "pilotWaitTime": 60.0, "pilotDrainTime": 40.0, "nJobsRun": 8}


@pytest.fixture(scope="module", params=backends())
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alloc")
    server = monitorhelp.start(tmp, fresh_url(request.param, tmp))
    try:
        report(server, [worker(1, "running"), worker(2, "finished", **FIGURES),
                        worker(3, "failed", nNodes=1, elapsedTime=50.0, chargeSource="squeue TimeUsed",
                               payloadWallTime=10.0, payloadCpuTime=5.0, pilotWaitTime=30.0, pilotDrainTime=10.0,
                               nJobsRun=1),
                        worker(4, "finished", queue=OTHER, nNodes=1, elapsedTime=20.0,
                               chargeSource="harvester start/end")])
        yield server
    finally:
        server.stop()


def worker(worker_id, status, queue=QUEUE, **figures):
    return {"workerID": worker_id, "status": status, "computingSite": queue, "batchID": f"b{worker_id}", "nCore": 4,
            **figures}


def report(server, workers):
    return server.call("harvester/update_workers", {"harvester_id": "harv-a", "workers": workers})["data"]


def get(server, path, **params):
    reply = requests.get(server.url + path, params=params, timeout=30,
                         headers={"Authorization": f"Bearer {server.admin_token}"})
    assert reply.status_code == 200, reply.text
    return reply


def counters(server, name):
    families = {f.name: f for f in text_string_to_metric_families(get(server, "/metrics").text)}
    return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples if s.name == name + "_total"}


def test_metrics_sum_each_queue_s_charged_node_seconds_payload_and_idle_time(server):
    assert counters(server, "minipanda_allocation_charged_node_seconds") == {
        (("queue", QUEUE),): 2 * 100.0 + 50.0, (("queue", OTHER),): 20.0}
    assert counters(server, "minipanda_allocation_payload_wall_seconds") == {(("queue", QUEUE),): 310.0,
                                                                            (("queue", OTHER),): 0.0}
    assert counters(server, "minipanda_allocation_payload_cpu_seconds")[(("queue", QUEUE),)] == 555.5
    assert counters(server, "minipanda_allocation_pilot_idle_seconds") == {
        (("kind", "wait"), ("queue", QUEUE)): 90.0, (("kind", "drain"), ("queue", QUEUE)): 50.0,
        (("kind", "wait"), ("queue", OTHER)): 0.0, (("kind", "drain"), ("queue", OTHER)): 0.0}


def test_the_worker_page_shows_charged_against_delivered(server):
    page = get(server, "/monitor/workers/harv-a/2", json="1").json()
    assert page["delivered"] == {
        "nodes": 2, "elapsedSeconds": 100.0, "chargeSource": "sacct ElapsedRaw", "chargedNodeHours": 0.0556,
        "payloadWallSeconds": 300.0, "payloadCpuSeconds": 550.5, "pilotWaitSeconds": 60.0, "pilotDrainSeconds": 40.0,
        "jobsRun": 8, "usefulPercent": 75.0}
    html = re.sub(r"<[^>]+>", " ", get(server, "/monitor/workers/harv-a/2").text)
    text = " ".join(html.split())
    assert "charged 2 nodes x 100 s = 0.056 node-hours (sacct ElapsedRaw)" in text, text
    assert "payloads 300 s wall, 550 s CPU, 8 jobs" in text and "useful 75.0% of the pilot-slot time" in text
    running = get(server, "/monitor/workers/harv-a/1", json="1").json()
    assert running["delivered"] is None
    assert "harvester reports it once the worker has ended" in get(server, "/monitor/workers/harv-a/1").text
    charged_only = get(server, "/monitor/workers/harv-a/4").text
    assert "no pilot usage record" in charged_only


def test_a_later_report_without_the_figures_keeps_them(server):
    assert report(server, [worker(2, "finished", diagMessage="again")]) == [True]
    assert get(server, "/monitor/workers/harv-a/2", json="1").json()["delivered"]["payloadWallSeconds"] == 300.0


@pytest.mark.parametrize("field, value", [("elapsedTime", -1), ("payloadWallTime", "NaN"), ("pilotWaitTime", True),
                                          ("payloadCpuTime", 1e13), ("nJobsRun", 2.5), ("nNodes", -2),
                                          ("chargeSource", {"x": 1})])
def test_a_garbage_figure_refuses_that_worker_only(server, field, value):
    assert report(server, [worker(10, "finished", **{field: value}), worker(11, "finished")]) == [False, True]
