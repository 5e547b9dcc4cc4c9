"""A small HTTP client for the v1 API, used by the ``minipanda`` job commands (and by tests and benchmarks)."""
import json
import os

import requests
from minipanda.errors import ClientError

DEFAULT_URL = "http://127.0.0.1:25080"


class Client:
    """Calls ``/api/v1/...`` and unwraps the ``{success, message, data}`` envelope."""

    def __init__(self, url=DEFAULT_URL, token=None, timeout=60):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_settings(cls, url=None, token_file=None, home=None):
        """URL from the argument or $MINIPANDA_URL; token from a file, $MINIPANDA_TOKEN, or <home>/admin.token."""
        token = None
        if token_file:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        elif os.environ.get("MINIPANDA_TOKEN"):
            token = os.environ["MINIPANDA_TOKEN"].strip()
        elif home and os.access(os.path.join(home, "admin.token"), os.R_OK):
            with open(os.path.join(home, "admin.token"), encoding="utf-8") as handle:
                token = handle.read().strip()
        return cls(url or os.environ.get("MINIPANDA_URL") or DEFAULT_URL, token)

    def call(self, path, payload=None, method="POST"):
        """One v1 call; returns ``data`` or raises ClientError with the server's message."""
        body = self.envelope(path, payload, method)
        if not body.get("success"):
            raise ClientError(f"{path}: HTTP 200: {body.get('message')}")
        return body.get("data")

    def submit_jobs(self, specs):
        return self.call("job/submit", {"jobs": specs})

    def list_jobs(self, **filters):
        return self.call("job/list", {k: v for k, v in filters.items() if v is not None}, method="GET")

    def describe_jobs(self, panda_ids):
        """Live and archived jobs (an archived one has ``archived``: where it is kept)."""
        return self.call("job/get_description_incl_archive", {"job_ids": list(panda_ids)})

    def status_log(self, panda_id):
        return self.call("job/get_status_log", {"job_id": panda_id}, method="GET")

    def kill_jobs(self, panda_ids, code=None):
        payload = {"job_ids": list(panda_ids)}
        if code is not None:
            payload["code"] = code
        return self.call("job/kill", payload)

    # ---- tasks, datasets, retry rules (the task half of the API) ------------------------------------------------

    def envelope(self, path, payload=None, method="POST"):
        """One v1 call; returns the whole reply ``{success, message, data}`` (task calls answer refusals with
        success false and PanDA's code in data, not with an HTTP error)."""
        url = f"{self.url}/api/v1/{path}"
        try:
            if method == "GET":
                reply = self.session.get(url, params=payload, timeout=self.timeout)
            else:
                reply = self.session.post(url, json=payload or {}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        try:
            body = reply.json()
        except ValueError:
            raise ClientError(f"{path}: HTTP {reply.status_code} with a non-JSON reply") from None
        if reply.status_code != 200:
            raise ClientError(f"{path}: HTTP {reply.status_code}: {body.get('message')}")
        return body

    def submit_task(self, params):
        """Returns the new jediTaskID; raises ClientError with the server's reasons."""
        return self.call("task/submit", {"task_parameters": params})

    def task_command(self, action, task_id, soft=False, new_params=None):
        """kill, finish, retry, pause or resume; returns (PanDA code, message)."""
        payload = {"task_id": task_id}
        if soft:
            payload["soft"] = True
        if new_params:
            payload["new_parameters"] = new_params
        body = self.envelope(f"task/{action}", payload)
        return body.get("data"), body.get("message", "")

    def find_tasks(self, since=None, filters=None, limit=1000):
        payload = {"n_tasks": limit}
        if since:
            payload["since"] = since
        if filters:
            payload["filters"] = json.dumps(filters)
        return self.call("task/get_tasks_detailed_info_since", payload, method="GET")

    def task_details(self, task_id):
        return self.call("task/get_details", {"task_id": task_id, "include_parameters": True}, method="GET")

    def task_log(self, task_id):
        return self.call("task/get_status_log", {"task_id": task_id}, method="GET")

    def add_dataset_files(self, name, files):
        return self.call("dataset/add", {"name": name, "files": files})

    def list_datasets(self, user=None, pattern=None):
        return self.call("dataset/list", {k: v for k, v in (("user", user), ("pattern", pattern)) if v},
                         method="GET")

    def show_dataset(self, name):
        return self.call("dataset/show", {"name": name}, method="GET")

    def why(self, panda_id):
        return self.call("job/why", {"job_id": panda_id}, method="GET")

    def retry_rules(self):
        return self.call("retry_rule/list", method="GET")

    def add_retry_rule(self, **rule):
        return self.call("retry_rule/add", {k: v for k, v in rule.items() if v is not None})

    def remove_retry_rule(self, rule_id):
        return self.call("retry_rule/remove", {"id": rule_id})

    # ---- workers and harvesters (admin) -------------------------------------------------------------------------

    def list_workers(self, **filters):
        return self.call("harvester/list_workers", {k: v for k, v in filters.items() if v is not None})

    def list_harvesters(self):
        return self.call("harvester/list_instances")

    def harvester_command(self, command, params, harvester_id=None):
        """Queue a command for harvester ``harvester_id`` (None: whichever harvester asks first); returns its id."""
        payload = {"command": command, "params": params}
        if harvester_id:
            payload["harvester_id"] = harvester_id
        return self.call("harvester/add_command", payload)["command_id"]
