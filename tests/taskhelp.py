"""Helpers for the task tests: a live server with short duty periods, queues, datasets, a scripted pilot."""
import json
import time

import pytest
import requests
from conftest import LiveServer

FAST = {"period.generator": 0.2, "period.settle": 0.2, "period.watchdog": 0.3, "period.priority": 3600,
        "brokerage.bootstrap_queued": 1000}


class TaskServer(LiveServer):
    """``minipanda serve`` with task settings (short periods unless the test says otherwise)."""

    def __init__(self, home, db_url, settings=None):
        self.settings = dict(FAST, **(settings or {}))
        super().__init__(home, db_url)

    def argv(self):
        extra = []
        for key, value in self.settings.items():
            extra += ["--setting", f"{key}={value}"]
        return super().argv() + extra

    def call(self, path, payload=None, token=None, method="POST"):
        """A v1 call; returns the reply body (asserting HTTP 200)."""
        url = f"{self.url}/api/v1/{path}"
        if method == "GET":
            reply = requests.get(url, params=payload, headers=self.headers(token), timeout=30)
        else:
            reply = requests.post(url, json=payload or {}, headers=self.headers(token), timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()


def open_db(server):
    """Bind this test process's models to the server's database (for setup and inspection)."""
    from minipanda.core import schema

    database = schema.open_database(server.db_url)
    database.connect(reuse_if_open=True)
    return database


@pytest.fixture
def task_server(tmp_path, db_url):
    server = TaskServer(tmp_path / "home", db_url)
    open_db(server)
    yield server
    server.stop()


def set_queue(name, status="online", **data):
    """Create or replace a queue with default queuedata plus ``data``."""
    from minipanda.core import models, queues, states

    queuedata = dict(queues.default_queuedata(name), status=status, **data)
    models.Queue.delete().where(models.Queue.name == name).execute()
    models.Queue.insert(name=name, site=name, status=status, queuedata=json.dumps(queuedata),
                        modification_time=states.utcnow()).execute()


def add_dataset(server, name, n_files, size=1000, events=None, token=None):
    files = [{"lfn": f"{name}.{i:04d}.dat", "fsize": size, "checksum": "ad:%08x" % (i + 1),
              "guid": f"guid-{name}-{i}", "location": "/data/" + name, **({"nEvents": events} if events else {})}
             for i in range(n_files)]
    body = server.call("dataset/add", {"name": name, "files": files}, token)
    assert body["success"], body
    return body["data"]


def submit(server, params, token=None):
    body = server.call("task/submit", {"task_parameters": params, "parent_tid": None}, token)
    assert body["success"], body["message"]
    return body["data"]


def wait_for(predicate, what, timeout=30):
    """Poll ``predicate`` until it returns a true value; fail naming ``what`` (never a timing assertion)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def task_status(server, task_id):
    return server.call("task/get_status", {"task_id": task_id}, method="GET")["data"]


def wait_status(server, task_id, *wanted, timeout=30):
    return wait_for(lambda: task_status(server, task_id) in wanted and task_status(server, task_id),
                    f"task {task_id} to be {'/'.join(wanted)} (it is {task_status(server, task_id)})", timeout)


def jobs_of(server, task_id):
    """Descriptions of the task's jobs, by PandaID order."""
    ids = server.call("task/get_job_ids", {"task_id": task_id}, method="GET")["data"]
    if not ids:
        return []
    return server.call("job/get_description", {"job_ids": ids})["data"]


def wait_jobs(server, task_id, n, status=None, timeout=30):
    def enough():
        jobs = jobs_of(server, task_id)
        chosen = [j for j in jobs if status is None or j["jobStatus"] == status]
        return chosen if len(chosen) >= n else None
    return wait_for(enough, f"{n} {status or ''} jobs of task {task_id}", timeout)


def acquire(server, queue, n=1, **offer):
    body = server.call("pilot/acquire_jobs", dict({"computing_element": queue, "site_name": queue, "n_jobs": n,
                                                   "prod_source_label": "user", "node": "wn1"}, **offer))
    return body["data"]


def update(server, panda_id, state, **fields):
    body = server.call("pilot/update_job", dict({"job_id": panda_id, "job_status": state}, **fields))
    return body["data"]


def run_job(server, job, state="finished", **fields):
    """Report a dispatched job running, then ``state`` (with outputs registered when finished)."""
    update(server, job["PandaID"], "running")
    if state == "finished":
        outs = [f for f in job["outFiles"].split(",") if f]
        fields.setdefault("xml", json.dumps({lfn: {"guid": f"g-{lfn}", "fsize": 10, "adler32": "0000abcd",
                                                   "surl": f"/out/{lfn}"} for lfn in outs}))
    return update(server, job["PandaID"], state, **fields)
