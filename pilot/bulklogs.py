"""Several jobs' log tarballs in ONE request to the server's store (``POST /api/v1/pilot/upload_logs``,
minipanda.api.logs_bulk), for the wrap-up thread (pilot.wrapup): a short job's log is a few kB, and a request of
its own cost the pilot and the server more than the log itself. Standard library only.

The body is a JSON manifest (its size in ``X-Manifest-Length``), then each log's bytes in the manifest's order, sent
from memory (a log held there: pilot.tarball.Spool) or from its file by sendfile; the server judges every entry alone, and :func:`stage_out_logs` turns each entry's
answer into what a single ``PUT /files/<scope>/<lfn>`` of that log would have meant for its job.
"""
import io
import json
import logging
import time

from pilot import comm, errors, httpclient
from pilot.copytools import input_url
from pilot.errors import PilotError
from pilot.fileutil import safe_name

log = logging.getLogger(__name__)
ROUTE = "/api/v1/pilot/upload_logs"
ALONE = "alone"  # a log of a bulk upload to send again by itself (stage_out_logs)


def bulk_log_path(spec, template, client):
    """The (scope, lfn) of the server's own store where the http copytool puts the log ``spec`` (output_url
    ``/files/<scope>/<lfn>``, the scope being the site's layout), so that it may go with other jobs' logs in one
    request (minipanda.api.logs_bulk); None when it goes anywhere else."""
    if client is None or not template:
        return None
    try:
        target = input_url(template, spec)
    except TypeError:  # a template naming {scope} and a log without one
        return None
    path = target[len(client.url):] if target.startswith(client.url + "/") else target
    parts = path.split("/")
    if len(parts) != 4 or parts[:2] != ["", "files"] or parts[3] != spec.lfn or not safe_name(parts[2]):
        return None
    return parts[2], parts[3]


def stage_out_logs(items, client, timeout):
    """Upload several jobs' log tarballs in one request (:func:`upload_logs`); one outcome per item, in order.

    Args:
        items: (PandaID, log FileSpec, its bulk_log_path) triples, each spec's fsize and adler32 taken as it was
            written, its bytes in memory (``memory``) or at ``path``.
        client: the comm.ServerClient.
        timeout: seconds allowed (plus 1 s per 10 MB of all the logs).

    Returns:
        Per item None (stored: its surl is set), a PilotError (refused, as a single PUT would have been: 1172 for a
        checksum the server did not find, 1137 otherwise) or :data:`ALONE` (refused for now: send it by itself).
        A failure of the whole request raises comm.CommError or TimeoutError: the caller sends each log alone.
    """
    deadline = time.monotonic() + timeout + sum(spec.fsize for _, spec, _ in items) / 1e7
    results = upload_logs(client, [{"pandaID": panda_id, "scope": scope, "lfn": spec.lfn,
                                    "path": spec.path if spec.memory is None else spec.memory.data,
                                    "fsize": spec.fsize, "adler32": spec.adler32}
                                   for panda_id, spec, (scope, _) in items], deadline)
    outcomes = []
    for (_, spec, (scope, lfn)), result in zip(items, results):
        status, message = result.get("status"), str(result.get("message", ""))[:300]
        if status in (200, 201) and result.get("adler32") in (None, spec.adler32):
            spec.surl = f"{client.url}/files/{scope}/{lfn}"
            log.info("staged out %s with http (several logs in one request) to %s (%d bytes, adler32 %s)", spec.lfn,
                     spec.surl, spec.fsize, spec.adler32)
            outcomes.append(None)
        elif status in (200, 201):
            outcomes.append(PilotError(errors.PUTADMISMATCH, f"{spec.lfn}: the server stored adler32 "
                                                             f"{result.get('adler32')}"))
        elif not isinstance(status, int) or status >= 500 or status in (408, 429):
            log.warning("log %s refused for now in a bulk upload (%s: %s); sent alone", spec.lfn, status, message)
            outcomes.append(ALONE)
        elif status == 400 and "X-Checksum" in message:
            outcomes.append(PilotError(errors.PUTADMISMATCH, f"{spec.lfn}: the server refused its adler32: "
                                                             f"{message}"))
        else:
            outcomes.append(PilotError(errors.STAGEOUTFAILED, f"stage-out of {spec.lfn}: HTTP {status}: {message}"))
    return outcomes


def upload_logs(client, entries, deadline=None):
    """Several jobs' log tarballs in ONE request (``POST /api/v1/pilot/upload_logs``), streamed.

    ``entries``: dicts ``{pandaID, scope, lfn, path, fsize, adler32}`` (fsize and adler32 as the file was
    written; ``path`` its file, or its bytes). The body is a JSON manifest (its size in ``X-Manifest-Length``) then
    each file's ``fsize`` bytes in order (sendfile on a plain socket, bytes at once). Returns the server's per-entry results, in order (each ``{status,
    message, adler32?, url?}``: the server judges every entry alone). A failure of the whole request raises
    CommError (``status`` 404 or 405: a server without the route), or TimeoutError past ``deadline``.
    """
    url = client.url + ROUTE
    listed = [{key: entry[key] for key in ("pandaID", "scope", "lfn", "fsize", "adler32")} for entry in entries]
    manifest = json.dumps({"files": listed}, separators=(",", ":")).encode("utf-8")
    headers = client._headers(False)
    headers.update({"Content-Type": "application/octet-stream", "X-Manifest-Length": str(len(manifest)),
                    "Content-Length": str(len(manifest) + sum(entry["fsize"] for entry in entries))})
    timeout = client.timeout if deadline is None else max(1.0, min(client.timeout, deadline - time.monotonic()))
    body = _Concatenated(manifest, [(entry["path"], entry["fsize"]) for entry in entries], deadline)
    try:
        with httpclient.request("POST", url, body, headers, timeout) as response:
            raw = response.read()
    except (httpclient.HTTPError, OSError) as exc:
        if body.expired:
            raise TimeoutError(f"upload of {len(entries)} logs exceeded its time limit") from None
        comm._raise_upload_error(url, exc)
    finally:
        body.close()
    data = comm._json_or_empty(raw).get("data")
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != len(entries):
        raise comm.CommError(f"POST {url}: {len(results) if isinstance(results, list) else 'no'} results for "
                             f"{len(entries)} logs: {raw[:200]!r}", transient=True, status=200)
    return [result if isinstance(result, dict) else {"status": 500, "message": "no result"}
            for result in results]


class _Concatenated:
    """A request body of ``head`` (bytes) then each (path or bytes, length) file's first ``length`` bytes, each by
    :class:`pilot.comm._DeadlineReader` (sendfile where the socket allows, never a byte more than declared);
    ``read`` serves the same bytes to a proxy's urllib."""

    def __init__(self, head, files, deadline):
        self.head, self.files, self.deadline = head, files, deadline
        self.readers, self.expired = [], False
        self.seek(0)

    def _open(self):
        self.close()
        for source, length in self.files:
            handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
            self.readers.append(comm._DeadlineReader(handle, self.deadline, length))

    def seek(self, offset):
        """Back to the start (``offset`` 0), for a request sent again on a new connection."""
        self._open()
        self.position = 0
        return 0

    def read(self, size=-1):
        if self.position < len(self.head):
            chunk = self.head[self.position:] if size is None or size < 0 else \
                self.head[self.position:self.position + size]
            self.position += len(chunk)
            return chunk
        for reader in self.readers:
            data = self._guard(reader, lambda: reader.read(size))
            if data:
                return data
        return b""

    def send_to(self, sock):
        sock.sendall(self.head)
        for reader in self.readers:
            self._guard(reader, lambda: reader.send_to(sock))

    def _guard(self, reader, action):
        try:
            return action()
        except TimeoutError:
            self.expired = True
            raise

    def close(self):
        for reader in self.readers:
            reader.handle.close()
        self.readers = []
