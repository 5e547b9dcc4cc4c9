"""HTTP to the minipanda (PanDA) server: getJob, updateJob, queuedata, downloads and uploads. Standard library only.

Bodies are JSON, replies are asked for as JSON (``Accept: application/json``), the bearer token is re-read from
``--token-file`` for every request (harvester may renew it); requests share one kept-open connection
(:mod:`pilot.httpclient`). A failure is a CommError that says whether trying
again later can help (``transient``): network errors, 5xx, 401/403 and "changed concurrently" are transient; any
other refusal is permanent and retrying it would only repeat the refusal.
"""
import io
import json
import logging
import os
import socket
import time
import urllib.parse

from pilot import __version__, fileutil, httpclient
from pilot.httpclient import HTTPError
from pilot.wire import SC_FAILED, SC_NO_JOBS, SC_OK, SC_ROLE, TOBEKILLED

log = logging.getLogger(__name__)


class CommError(Exception):
    """A request that did not get an accepted answer."""

    def __init__(self, message, transient=True, status=None, reply=None):
        super().__init__(message)
        self.transient, self.status, self.reply = transient, status, reply or {}

    @property
    def auth(self):
        return self.status in (401, 403)


def base_url(url, port=None):
    """The server's base URL from pilot3-style ``--url`` and ``-p``: the port is added when the URL has none."""
    url = url.rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlparse(url)
    if port and not parsed.port:
        url = f"{parsed.scheme}://{parsed.hostname}:{port}{parsed.path}"
    return url


class ServerClient:
    """Requests to one server.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:25080``.
        token_file: file holding the bearer token (read again whenever it changed); None sends no token.
        timeout: seconds for one request.
    """

    def __init__(self, url, token_file=None, timeout=60.0):
        self.url, self.token_file, self.timeout = url.rstrip("/"), token_file, timeout
        self._token = (None, None)  # (the file's identity when read, its token)

    def _headers(self, json_body):
        headers = {"Accept": "application/json", "User-Agent": f"minipanda-pilot/{__version__}"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if self.token_file:
            try:
                token = self._read_token()
                if token:
                    headers["Authorization"] = f"Bearer {token}"
            except OSError as exc:
                log.warning("cannot read the token file %s: %s", self.token_file, exc)
        return headers

    def _read_token(self):
        """The token file's content, read again whenever the file changed (harvester renews it by a rename)."""
        st = os.stat(self.token_file)
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._token[0] != identity:
            with open(self.token_file, encoding="utf-8") as handle:
                self._token = (identity, handle.read().strip())
        return self._token[1]

    def _open(self, url, body=None, timeout=None):
        return httpclient.request("POST" if body is not None else "GET", url, body, self._headers(body is not None),
                                  timeout or self.timeout)

    def call(self, path, params, timeout=None):
        """POST ``params`` as JSON to ``path``; return the reply dict (raise CommError when not accepted)."""
        body = json.dumps(params, default=str).encode("utf-8")
        return self._reply(path, lambda: self._open(self.url + path, body, timeout))

    def _reply(self, path, send):
        """The JSON reply of the response ``send()`` returns, as a dict; CommError when it is not an accepted one."""
        try:
            with send() as response:
                raw = response.read()
        except HTTPError as exc:
            raw = exc.read()
            reply = _json_or_empty(raw)
            diag = reply.get("ErrorDiag") or reply.get("message") or raw[:200].decode("utf-8", "replace")
            transient = exc.code >= 500 or exc.code in (401, 403, 408, 429) or (
                exc.code == 409 and reply.get("StatusCode") == SC_FAILED)
            raise CommError(f"{path}: HTTP {exc.code}: {diag}", transient, exc.code, reply) from None
        except OSError as exc:
            raise CommError(f"{path}: {_reason(exc)}") from None
        reply = _json_or_empty(raw)
        if not reply and raw.strip():
            raise CommError(f"{path}: reply is not JSON: {raw[:120]!r}", transient=True, status=200)
        return reply

    def get_job(self, params):
        """getJob: the job definition dict, or None when the server has no job for this offer."""
        return _job_or_none(self.call("/server/panda/getJob", params))

    def begin_get_job(self, params):
        """getJob sent now, its answer read later (on a connection of its own): the server dispatches while the
        pilot goes on. Returns ``result(timeout=None)``, which returns what :meth:`get_job` would or raises
        CommError; ``result.cancel()`` drops the request unread."""
        return self._begin("/server/panda/getJob", params, _job_or_none)

    def get_jobs(self, params, n_jobs):
        """getJob for up to ``n_jobs`` jobs (``nJobs``): the list of job definition dicts (empty: none)."""
        return _jobs(self.call("/server/panda/getJob", dict(params, nJobs=int(n_jobs))))

    def begin_get_jobs(self, params, n_jobs):
        """:meth:`get_jobs` sent now, its answer read later (see :meth:`begin_get_job`)."""
        return self._begin("/server/panda/getJob", dict(params, nJobs=int(n_jobs)), _jobs)

    def update_jobs_bulk(self, entries, timeout=None):
        """updateJobsInBulk: one request for several jobs' updates; the list of per-entry replies, in order (each
        ``{"StatusCode": ..., "command": ..., "ErrorDiag"?}``: the server judges every entry alone). A failure of
        the whole request raises CommError."""
        reply = self.call("/server/panda/updateJobsInBulk", {"jobList": entries}, timeout)
        results = reply.get("results")
        if _status_code(reply) != SC_OK or not isinstance(results, list) or len(results) != len(entries):
            raise CommError(f"updateJobsInBulk: StatusCode {reply.get('StatusCode')}: {reply.get('ErrorDiag')}"
                            f" ({len(results) if isinstance(results, list) else 'no'} results for "
                            f"{len(entries)} entries)", transient=False, status=200, reply=reply)
        return [result if isinstance(result, dict) else {"StatusCode": -1} for result in results]

    def _begin(self, path, params, answer):
        body = json.dumps(params, default=str).encode("utf-8")
        pending = httpclient.begin("POST", self.url + path, body, self._headers(True), self.timeout)

        def result(timeout=None):
            return answer(self._reply(path, lambda: pending.result(timeout)))

        result.cancel = pending.cancel
        result.fileno = pending.fileno  # readable once the answer arrives (None: it is sent by result())
        return result

    def update_job(self, params, timeout=None):
        """updateJob; the reply dict (StatusCode 0, command). A refusal raises CommError."""
        return _accepted_update(self.call("/server/panda/updateJob", params, timeout))

    def begin_update_job(self, params):
        """updateJob sent now, its answer read later: returns ``result(timeout=None)``, which returns what
        :meth:`update_job` would or raises CommError."""
        return self._begin("/server/panda/updateJob", params, _accepted_update)

    def update_job_reliably(self, params, tries, backoff, sleep=time.sleep, give_up=lambda: False):
        """updateJob with up to ``tries`` attempts, waiting backoff, 2x backoff, ... (at most 60 s) between.

        Returns:
            (reply, None) once accepted, or (None, CommError) with the last error; a permanent error ends the
            tries at once, and so does ``give_up()`` returning True.
        """
        wait, error = backoff, None
        for attempt in range(max(1, tries)):
            try:
                return self.update_job(params), None
            except CommError as exc:
                error = exc
                log.warning("update of job %s (%s) failed, try %d of %d: %s", params.get("jobId"),
                            params.get("state"), attempt + 1, tries, exc)
                if not exc.transient or give_up() or attempt + 1 >= tries:
                    break
                sleep(wait)
                wait = min(wait * 2, 60.0)
        return None, error

    def worker_status(self, harvester_id, worker_id, status, site, node):
        """updateWorkerPilotStatus(started|finished), sent when harvester ids are in the environment."""
        try:
            self.call("/server/panda/updateWorkerPilotStatus", {
                "harvesterID": harvester_id, "workerID": worker_id, "status": status, "site": site,
                "node_id": node}, timeout=min(self.timeout, 10))
        except CommError as exc:
            log.warning("updateWorkerPilotStatus(%s) failed: %s", status, exc)

    def get_text(self, path):
        """GET ``path`` (relative to the server) and return the body as text."""
        try:
            with self._open(self.url + path) as response:
                return response.read().decode("utf-8")
        except HTTPError as exc:
            raise CommError(f"GET {path}: HTTP {exc.code}", exc.code >= 500, exc.code) from None
        except OSError as exc:
            raise CommError(f"GET {path}: {_reason(exc)}") from None

    def download(self, source, dest, deadline=None, digest=None, max_size=None):
        """Fetch ``source`` (a server path starting with '/' or a full URL) into ``dest``; return its size.

        Written to a temporary name (created anew, never through a link) and renamed, so ``dest`` is either complete
        or absent; ``digest`` (a :class:`pilot.fileutil.Digest`), when given, takes the checksum of the bytes as
        they are written. Raises FileNotFoundError for HTTP 404, TimeoutError past ``deadline`` (monotonic),
        OSError otherwise: a body shorter than its Content-Length or longer than ``max_size`` bytes too.
        """
        url = self.url + source if source.startswith("/") else source
        tmp = dest + ".part"
        size = 0
        try:
            timeout = self.timeout if deadline is None else max(1.0, min(self.timeout, deadline - time.monotonic()))
            with self._open(url, timeout=timeout) as response, fileutil.create_exclusive(tmp) as out:
                declared = response.getheader("Content-Length")
                for block in fileutil.blocks(response, fileutil.DOWNLOAD_CHUNK):
                    size += len(block)
                    if max_size is not None and size > max_size:
                        raise OSError(f"more than the {max_size} bytes expected; download stopped")
                    out.write(block)
                    if digest is not None:
                        digest.update(block)
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"download of {url} exceeded its time limit")
                if declared is not None and declared.strip().isdigit() and size != int(declared):
                    raise OSError(f"{size} bytes received of the {declared.strip()} the reply declared")
            os.replace(tmp, dest)
            return size
        except HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(f"{url}: HTTP 404") from None
            raise OSError(f"{url}: HTTP {exc.code}") from None
        except (TimeoutError, socket.timeout):
            raise TimeoutError(f"download of {url} timed out") from None
        except OSError as exc:
            raise OSError(f"{url}: {_reason(exc)}") from None
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def upload(self, source, target, adler32, deadline=None, panda_id=None):
        """PUT the file ``source`` (its path, or its bytes: a log tarball held in memory) to ``target`` (a server
        path starting with '/' or a full URL), streamed.

        Sends ``Content-Length`` and ``X-Checksum: ad:<adler32>`` so the server verifies what it received, and
        ``X-PandaID: <panda_id>``, the job whose output or log it is (a pilot token stores only those). Returns
        the reply's data dict ({scope, lfn, fsize, adler32, url}; an identical file already stored is a success).
        Raises CommError (``transient`` as for :meth:`call`), or TimeoutError past ``deadline`` (monotonic).
        """
        url = self.url + target if target.startswith("/") else target
        headers = self._headers(False)
        timeout = self.timeout if deadline is None else max(1.0, min(self.timeout, deadline - time.monotonic()))
        in_memory = isinstance(source, (bytes, bytearray))
        with io.BytesIO(source) if in_memory else open(source, "rb") as handle:
            length = len(source) if in_memory else os.fstat(handle.fileno()).st_size
            headers.update({"Content-Type": "application/octet-stream", "Content-Length": str(length),
                            "X-Checksum": f"ad:{adler32}"})
            if panda_id is not None:
                headers["X-PandaID"] = str(panda_id)
            body = _DeadlineReader(handle, deadline, length)
            try:
                with httpclient.request("PUT", url, body, headers, timeout) as response:
                    raw = response.read()
            except (HTTPError, OSError) as exc:
                if body.expired:
                    raise TimeoutError(f"upload to {url} exceeded its time limit") from None
                _raise_upload_error(url, exc)
        data = _json_or_empty(raw).get("data")
        return data if isinstance(data, dict) else {}


def _reason(exc):
    """What went wrong, for a message: a URLError's reason, else the error itself (an ssl.SSLError has a ``reason``
    too, often None: "PUT ...: None" said nothing)."""
    return getattr(exc, "reason", None) or exc


def _raise_upload_error(url, exc):
    if isinstance(exc, HTTPError):
        reply = _json_or_empty(exc.read())
        transient = exc.code >= 500 or exc.code in (401, 403, 408, 429)
        raise CommError(f"PUT {url}: HTTP {exc.code}: {reply.get('message', '')}", transient, exc.code,
                        reply) from None
    raise CommError(f"PUT {url}: {_reason(exc)}") from None


class _DeadlineReader:
    """A file object for a request body of ``length`` bytes (its Content-Length: never a byte more, even if the file
    grew) that stops the transfer past ``deadline``; :meth:`send_to` sends it by the kernel's sendfile where the
    socket allows."""

    BLOCK = 4 << 20  # bytes per sendfile call: the deadline is checked between two

    def __init__(self, handle, deadline, length):
        self.handle, self.deadline, self.length, self.expired = handle, deadline, length, False
        self.position = 0

    def _check(self):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.expired = True
            raise TimeoutError("time limit reached")

    def read(self, size=-1):
        self._check()
        left = self.length - self.position
        data = self.handle.read(left if size is None or size < 0 else min(size, left))
        self.position += len(data)
        return data

    def seek(self, offset):
        """Back to the start, for a request sent again on a new connection."""
        self.position = offset
        return self.handle.seek(offset)

    def send_to(self, sock):
        """Send the body on ``sock`` (the request's headers are sent): by sendfile (no copy through the pilot's
        memory) on a plain socket, in 256 KB blocks through TLS (``ssl`` has no sendfile of its own), at once from
        an ``io.BytesIO``. OSError when
        the file ends before ``length`` bytes (it shrank since it was measured)."""
        offset = 0
        if isinstance(self.handle, io.BytesIO):  # bytes held in memory: no file to send from
            self._check()
            data = memoryview(self.handle.getvalue())[:self.length]  # getvalue: no copy of an unchanged buffer
            sock.sendall(data)
            offset = len(data)
        elif getattr(sock, "_sslobj", None) is not None:
            self.handle.seek(0)
            for block in fileutil.blocks(self.handle):
                if offset >= self.length:
                    break
                self._check()
                block = block[:self.length - offset]
                sock.sendall(block)
                offset += len(block)
        else:
            while offset < self.length:
                self._check()
                sent = sock.sendfile(self.handle, offset, min(self.BLOCK, self.length - offset))
                if not sent:
                    break
                offset += sent
        if offset < self.length:
            raise OSError(f"the file ended after {offset} of the {self.length} bytes declared (it changed while "
                          "it was sent)")


def _accepted_update(reply):
    if _status_code(reply) != SC_OK:
        raise CommError(f"updateJob: StatusCode {reply.get('StatusCode')}: {reply.get('ErrorDiag')}",
                        transient=False, status=200, reply=reply)
    return reply


def _job_or_none(reply):
    code = _status_code(reply)
    if code == SC_OK and reply.get("PandaID") not in (None, "", "NULL"):
        return reply
    if code in (SC_OK, SC_NO_JOBS):
        return None
    raise CommError(f"getJob: StatusCode {code}: {reply.get('errorDialog') or reply.get('ErrorDiag')}",
                    transient=True, status=200, reply=reply)


def _jobs(reply):
    code = _status_code(reply)
    if code == SC_OK and isinstance(reply.get("jobs"), list):
        return [job for job in reply["jobs"] if isinstance(job, dict)]
    if code in (SC_OK, SC_NO_JOBS):
        return []
    raise CommError(f"getJob: StatusCode {code}: {reply.get('errorDialog') or reply.get('ErrorDiag')}",
                    transient=True, status=200, reply=reply)


def entry_outcome(result):
    """What one entry of an updateJobsInBulk answer means: 'ok', 'retry' (a refusal a single updateJob gets as a
    transient error: the job changed concurrently, the token's binding) or 'refused' (for good)."""
    code = _status_code(result)
    if code == SC_OK:
        return "ok"
    if code in (SC_FAILED, SC_ROLE) and result.get("command") != TOBEKILLED:
        return "retry"
    return "refused"


def _json_or_empty(raw):
    try:
        data = json.loads(raw.decode("utf-8")) if raw else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _status_code(reply):
    try:
        return int(reply.get("StatusCode", SC_OK))
    except (TypeError, ValueError):
        return -1
