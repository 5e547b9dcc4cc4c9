"""docs/monitoring/: the shipped Prometheus alert rules pass ``promtool check rules`` and fire on the series they
are for (``promtool test rules``), and every metric the rules and the Grafana dashboard name is one a real server
exports on ``/metrics``."""
import datetime
import json
import pathlib
import re
import subprocess

import pytest
import requests
import yaml

import monitorhelp
from conftest import debian_tool, make_job

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "monitoring"
ALERTS, DASHBOARD = DOCS / "alerts.yml", DOCS / "grafana-dashboard.json"
RULE_TESTS = pathlib.Path(__file__).resolve().parent / "data" / "monitoring" / "alerts_test.yml"
METRIC = re.compile(r"\b((?:minipanda|process)_[a-z0-9_]+)\b")


def promtool():
    return debian_tool("promtool", "prometheus")


def test_the_alert_rules_pass_promtool_check_rules():
    checked = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_every_alert_fires_on_its_series_and_only_then(tmp_path):
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = [str(ALERTS)]
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    run = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    tested = {case["alertname"] for case in tests["tests"][0]["alert_rule_test"]}
    rules = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert tested == rules  # every rule has its case


def alert_metrics():
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    return {name for rule in rules for name in METRIC.findall(rule["expr"])}


def dashboard_exprs():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [variable["query"]["query"] for variable in dashboard["templating"]["list"]]
    return dashboard, exprs


def test_the_dashboard_is_a_grafana_dashboard_to_import():
    dashboard, exprs = dashboard_exprs()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["title"] == "minipanda"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
    assert len(exprs) > 15


@pytest.fixture
def server(tmp_path, db_url):
    server = monitorhelp.start(tmp_path, db_url)
    yield server
    server.stop()


def exported_names(server):
    """Every sample name on the server's /metrics once it has something of each kind to count."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}

    def call(path, payload):
        reply = requests.post(f"{server.url}/api/v1/{path}", json=payload, headers=headers, timeout=30)
        assert reply.status_code == 200 and reply.json()["success"], reply.text

    call("job/submit", {"jobs": [make_job(queue="QA")]})
    ended = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    call("harvester/update_workers", {"harvester_id": "h1", "workers": [
        {"workerID": 1, "computingSite": "QA", "status": "failed", "endTime": ended},
        {"workerID": 2, "computingSite": "QA", "status": "running"}]})
    call("harvester/heartbeat", {"harvester_id": "h1", "version": "0.1.0", "host": "edge",
                                 "agents": {"monitor": {"runs": 1, "errors": 0, "last_duration": 0.1}},
                                 "queues": {"QA": {"paused": False, "backoff_s": 10, "failures": 3, "error": "x"}},
                                 "home": {"size_bytes": 100, "avail_bytes": 10}})
    call("harvester/report_worker_statistics", {"harvester_id": "h1", "panda_queue": "QA",
                                                "statistics": {"managed": {"SCORE": {"running": 1}}}})
    text = requests.get(server.url + "/metrics", headers=headers, timeout=30).text
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    # a gauge with nothing to count yet (no task) is still declared: "# TYPE minipanda_tasks gauge"
    gauges = set(re.findall(r"^# TYPE (\S+) gauge$", text, re.M))
    return samples | gauges


def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(server):
    exported = exported_names(server)
    _, exprs = dashboard_exprs()
    named = alert_metrics() | {name for expr in exprs for name in METRIC.findall(expr)}
    assert named - exported == set(), sorted(exported)
    assert {"minipanda_harvester_queue_paused", "minipanda_workers_ended_last_hour",
            "minipanda_home_filesystem_avail_bytes", "minipanda_dispatch_seconds_bucket"} <= named
