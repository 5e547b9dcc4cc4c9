"""A small HTTP client for the v1 API, used by the ``minipanda`` job commands (and by tests and benchmarks)."""
import os

import requests

DEFAULT_URL = "http://127.0.0.1:25080"


class ClientError(RuntimeError):
    """The server refused a call or could not be reached; the message says which and why."""


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
        if reply.status_code != 200 or not body.get("success"):
            raise ClientError(f"{path}: HTTP {reply.status_code}: {body.get('message')}")
        return body.get("data")

    def submit_jobs(self, specs):
        return self.call("job/submit", {"jobs": specs})

    def list_jobs(self, **filters):
        return self.call("job/list", {k: v for k, v in filters.items() if v is not None}, method="GET")

    def describe_jobs(self, panda_ids):
        return self.call("job/get_description", {"job_ids": list(panda_ids)})

    def status_log(self, panda_id):
        return self.call("job/get_status_log", {"job_id": panda_id}, method="GET")

    def kill_jobs(self, panda_ids, code=None):
        payload = {"job_ids": list(panda_ids)}
        if code is not None:
            payload["code"] = code
        return self.call("job/kill", payload)
