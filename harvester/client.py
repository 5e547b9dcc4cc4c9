"""The HTTP client of minipanda's ``/api/v1`` as harvester uses it (requests, retries, backoff).

Every call is a POST with a JSON body; the reply is PanDA's envelope ``{"success", "message", "data"}``. Failures
raise :class:`harvester.errors.ServerError` whose ``transient`` flag tells the caller whether to keep the work and
try again later (unreachable, timeout, 5xx) or to record a refusal (4xx, ``success: false``). Only connection
failures are retried inside a call: a request that may have reached the server (a read timeout) is never sent a
second time from here, because acquire_jobs would then hand out jobs nobody receives.
"""
import logging
import os
import socket
import zlib

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from harvester import __version__
from harvester.errors import ServerError

log = logging.getLogger(__name__)


class ServerClient:
    """One harvester's connection to the server.

    Args:
        url: the server's base URL (``http://127.0.0.1:25080``).
        token_file: a file holding a bearer token of role harvester (re-read when it changes), or None.
        harvester_id: this harvester's name on the server.
        timeout: seconds for one request (connect and read).
    """

    def __init__(self, url, token_file, harvester_id, timeout=30.0):
        self.url = url.rstrip("/")
        self.token_file, self.harvester_id, self.timeout = token_file, harvester_id, timeout
        self._token, self._token_stamp = None, None
        self.session = requests.Session()
        retry = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.3, allowed_methods=None,
                      raise_on_status=False)
        self.session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=8))
        self.session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=8))

    # ---- plumbing ----------------------------------------------------------------------------------------------
    def token(self):
        if not self.token_file:
            return None
        try:
            stat = os.stat(self.token_file)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._token_stamp:
                with open(self.token_file, encoding="utf-8") as handle:
                    self._token, self._token_stamp = handle.read().strip(), stamp
        except OSError as exc:
            raise ServerError(f"cannot read the token file {self.token_file}: {exc.strerror}", transient=False)
        return self._token

    def call(self, path, payload):
        """POST ``payload`` to ``/api/v1/<path>``; return the envelope's ``data``."""
        headers = {"Accept": "application/json"}
        token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{self.url}/api/v1/{path}"
        try:
            reply = self.session.post(url, json=payload, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServerError(f"{path}: server unreachable at {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            body = reply.json()
        except ValueError:
            body = None
        message = body.get("message") if isinstance(body, dict) else reply.text[:300]
        if reply.status_code >= 500 or reply.status_code in (408, 429, 503):
            raise ServerError(f"{path}: HTTP {reply.status_code}: {message}", status=reply.status_code)
        if reply.status_code >= 400:
            raise ServerError(f"{path}: refused (HTTP {reply.status_code}): {message}", transient=False,
                              status=reply.status_code)
        if not isinstance(body, dict) or "success" not in body:
            raise ServerError(f"{path}: the reply is not a PanDA envelope: {reply.text[:300]!r}")
        if not body["success"]:
            raise ServerError(f"{path}: refused: {message}", transient=False, status=reply.status_code)
        return body.get("data")

    def close(self):
        self.session.close()

    # ---- harvester endpoints -----------------------------------------------------------------------------------
    def heartbeat(self, start_time, agents=None, queues=None, home=None):
        """Alive, with each agent's cycle figures (runs, errors, last duration and error), each queue's pause and
        backoff, and the home's disk, for the server's metrics."""
        payload = {"harvester_id": self.harvester_id, "version": __version__, "start_time": start_time,
                   "host": socket.gethostname()}
        for key, value in (("agents", agents), ("queues", queues), ("home", home)):
            if value is not None:
                payload[key] = value
        return self.call("harvester/heartbeat", payload)

    def update_workers(self, workers):
        return self.call("harvester/update_workers", {"harvester_id": self.harvester_id, "workers": workers})

    def report_worker_statistics(self, queue, statistics):
        return self.call("harvester/report_worker_statistics",
                         {"harvester_id": self.harvester_id, "panda_queue": queue, "statistics": statistics})

    def acquire_commands(self, n_commands=20):
        return self.call("harvester/acquire_commands",
                         {"harvester_id": self.harvester_id, "n_commands": n_commands}) or []

    def acknowledge_commands(self, command_ids):
        return self.call("harvester/acknowledge_commands",
                         {"harvester_id": self.harvester_id, "command_ids": list(command_ids)})

    def queue_demand(self, queues):
        return self.call("harvester/get_queue_demand",
                         {"harvester_id": self.harvester_id, "queues": list(queues)}) or {}

    def mint_pilot_token(self, worker_id, queue, lifetime, panda_ids=()):
        """A pilot token for one worker, bound by the server to it, its queue, and the jobs ``panda_ids`` it holds
        (push mode): no other worker's pilot may update them."""
        payload = {"harvester_id": self.harvester_id, "worker_id": worker_id, "queue": queue,
                   "lifetime": int(lifetime)}
        if panda_ids:
            payload["panda_ids"] = list(panda_ids)
        return self.call("harvester/mint_pilot_token", payload)

    def revoke_pilot_tokens(self, jtis):
        return self.call("harvester/revoke_pilot_token", {"harvester_id": self.harvester_id, "jtis": list(jtis)})

    # ---- the pilot endpoints harvester uses on behalf of pilots -------------------------------------------------
    def acquire_jobs(self, queue, n_jobs, label, cores=None, memory=None, walltime=None, node=None):
        payload = {"site_name": queue, "computing_element": queue, "prod_source_label": label, "n_jobs": n_jobs,
                   "harvester_id": self.harvester_id, "node": node or socket.gethostname()}
        for key, value in (("core_count", cores), ("memory", memory), ("remaining_time", walltime)):
            if value:
                payload[key] = value
        jobs = self.call("pilot/acquire_jobs", payload)
        return jobs if isinstance(jobs, list) else []

    def sent_jobs(self, queue, after=0):
        """One page (PandaID order, from the first above ``after``) of the jobs of ``queue`` the server handed to
        this harvester that are still ``sent``: their definitions."""
        jobs = self.call("harvester/get_sent_jobs", {"harvester_id": self.harvester_id, "queue": queue,
                                                     "after": after})
        return jobs if isinstance(jobs, list) else []

    def update_jobs(self, updates):
        """updateJob parameter dicts in one call; one reply (``StatusCode``, ``command``) per update, in order."""
        replies = self.call("pilot/update_jobs_bulk", {"job_list": list(updates)})
        if not isinstance(replies, list) or len(replies) != len(updates):
            raise ServerError(f"pilot/update_jobs_bulk: expected {len(updates)} replies, got {replies!r:.200}")
        return replies

    def fetch(self, url):
        """GET a path (``/trf/user/x``) or a URL under this server (a transformation for a node without network)."""
        if url.startswith("/"):
            url = self.url + url
        if not url.startswith(self.url + "/"):
            raise ServerError(f"refusing to fetch {url}: not under the server {self.url}", transient=False)
        try:
            reply = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServerError(f"GET {url}: {exc}") from None
        if reply.status_code != 200:
            raise ServerError(f"GET {url}: HTTP {reply.status_code}", transient=reply.status_code >= 500)
        return reply.content

    # ---- the file store, for queues whose storage is the server (nodes without network) -------------------------
    def download(self, url, local):
        """GET a file under this server (``/files/<scope>/<lfn>``, with the token) into ``local``, streamed;
        ``{"size", "adler32"}`` of what arrived."""
        if url.startswith("/"):
            url = self.url + url
        if not url.startswith(self.url + "/"):
            raise ServerError(f"refusing to download {url}: not under the server {self.url}", transient=False)
        headers = {"Authorization": f"Bearer {self.token()}"} if self.token() else {}
        value, size = 1, 0
        try:
            with self.session.get(url, headers=headers, timeout=self.timeout, stream=True) as reply:
                if reply.status_code != 200:
                    raise ServerError(f"GET {url}: HTTP {reply.status_code}", transient=reply.status_code >= 500)
                with open(local, "wb") as handle:
                    for block in reply.iter_content(1 << 20):
                        value, size = zlib.adler32(block, value), size + len(block)
                        handle.write(block)
        except requests.RequestException as exc:
            raise ServerError(f"GET {url}: {exc}") from None
        return {"size": size, "adler32": f"{value & 0xffffffff:08x}"}

    def upload(self, scope, lfn, local, adler32, panda_id):
        """PUT ``local`` to the file store as ``<scope>/<lfn>``, an output or the log of job ``panda_id`` (the server
        stores only files of jobs dispatched to this harvester, and checks the adler32 again); the store's
        ``{scope, lfn, fsize, adler32, url}``."""
        url = f"{self.url}/files/{scope}/{lfn}"
        headers = {"X-Checksum": f"ad:{adler32}", "Accept": "application/json",
                   "Content-Length": str(os.path.getsize(local)), "X-PandaID": str(panda_id)}
        if self.token():
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            with open(local, "rb") as handle:
                reply = self.session.put(url, data=handle, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServerError(f"PUT {url}: server unreachable: {exc}") from None
        try:
            body = reply.json()
        except ValueError:
            body = {}
        message = body.get("message") if isinstance(body, dict) else ""
        if reply.status_code >= 500 or reply.status_code in (408, 429):
            raise ServerError(f"PUT {url}: HTTP {reply.status_code}: {message}", status=reply.status_code)
        if reply.status_code not in (200, 201) or not body.get("success"):
            raise ServerError(f"PUT {url}: refused (HTTP {reply.status_code}): {message}", transient=False,
                              status=reply.status_code)
        return body.get("data") or {}
