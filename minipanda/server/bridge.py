"""The RSGI side of ``minipanda serve``'s server (minipanda.server.http): granian hands each request to
:class:`RsgiBridge` on one asyncio loop, which reads its body there and runs the WSGI app on one of ``threads``
Python threads (minipanda.server.requestthreads).

A request's body is read on the loop, not on a request thread: a client that sends its headers and then stalls
holds a coroutine and a socket, never one of the ``threads`` that run the app. A body that brings nothing new for
``body_timeout`` seconds is answered 408 and its connection closed (one of BODY_WHOLE bytes up to BODY_IN_MEMORY,
read whole, must arrive within that plus a second per BODY_RATE bytes); one over ``body_limit`` bytes 413. A reply
that is a whole file (minipanda.server.filereply) is handed to granian whole: read into memory up to 1 MB, else by
its path. Only a complete body goes to the WSGI app (bottle); one declared over BODY_IN_MEMORY is received only once
the app, run first without it, has judged the request and read it (minipanda.server.unreceived), so a refused upload
is never received: after the answer its body is read and thrown away within bounds (a lingering close,
RsgiBridge.linger), for the client to finish sending it and read the answer instead of having its connection reset.
"""
import asyncio
import io
import json
import logging
import sys
import tempfile

from minipanda.api.wire import loggable
from minipanda.server import filereply, requestthreads, unreceived

log = logging.getLogger("minipanda.server")
BODY_TIMEOUT = 30.0  # seconds a request body may go without bringing a byte (minipanda serve --body-timeout)
BODY_IN_MEMORY = 1 << 20  # a body beyond this many bytes waits in a temporary file, not in memory
BODY_WHOLE = 64 << 10  # a body from this size up to BODY_IN_MEMORY is read whole, at BODY_RATE bytes/s at least
BODY_RATE = 32 << 10
BODY_SLACK = 1 << 20  # on top of the app's own limit: the app refuses in its reply's family (and allows a
                      # multipart upload's own lines on top)
# After an answer sent while the request's body is still unread (a refused upload), the body is read and thrown
# away (a lingering close, as nginx's lingering_close and Apache's do) for at most LINGER_SECONDS, until nothing
# arrives for LINGER_IDLE seconds, and at most LINGER_BYTES (nor the body limit): see RsgiBridge.linger
LINGER_SECONDS = 10.0
LINGER_IDLE = 2.0
LINGER_BYTES = 64 << 20
_END = object()

class _StallWatch:
    """Cancels ``task`` once ``timeout`` seconds pass without ``progress()`` (or ``limit`` seconds from now, when
    given): ONE timer per request body, re-armed only when it fires early, instead of a task and a timer per chunk
    as ``asyncio.wait_for`` makes."""

    def __init__(self, loop, task, timeout, limit=None):
        self.loop, self.task, self.timeout = loop, task, timeout
        self.last, self.fired = loop.time(), False
        self.until = self.last + limit if limit is not None else float("inf")
        self.handle = loop.call_at(min(self.last + timeout, self.until), self._check)

    def progress(self):
        self.last = self.loop.time()

    def _check(self):
        due = min(self.last + self.timeout, self.until)
        if self.loop.time() < due:
            self.handle = self.loop.call_at(due, self._check)
            return
        self.fired = True
        self.task.cancel()

    def cancel(self):
        self.handle.cancel()


class BodyRefused(Exception):
    """A request body that never reaches the app: (HTTP status, message, whether the rest of it is unread: "whole"
    when none of it was read, "rest" when its reading was begun, None when there is nothing left to read)."""

    def __init__(self, status, message, unread="rest"):
        super().__init__(message)
        self.status, self.unread = status, unread


def _refusal(status, message):
    return status, [("content-type", "application/json"), ("connection", "close")], json.dumps(
        {"success": False, "message": message}).encode()


class RsgiBridge:
    """granian's RSGI callback: read the request body here, on the loop, then run the WSGI ``app`` on a request
    thread with that body as ``wsgi.input``, and send its reply (a list at once, any other iterable chunk by
    chunk, each chunk taken on a request thread)."""

    def __init__(self, app, threads, body_timeout=BODY_TIMEOUT, body_limit=None):
        self.app, self.body_timeout, self.body_limit = app, body_timeout, body_limit
        self.linger_seconds, self.linger_idle, self.linger_bytes = LINGER_SECONDS, LINGER_IDLE, LINGER_BYTES
        self.pool = requestthreads.RequestThreads(threads)

    async def __call__(self, scope, proto):
        headers = scope.headers
        loop = asyncio.get_running_loop()
        try:
            if unreceived.deferred(headers, BODY_IN_MEMORY):  # the app first judges the headers alone
                self.check_limit(headers.get("content-length"))
                declared = headers.get("content-length")
                first = self.environ(scope, headers, unreceived.Unreceived(),
                                     int(declared) if declared and declared.strip().isdigit() else "")
                if await self.answer(scope, proto, loop, first) is not unreceived.WANTED:
                    await self.linger(scope, proto)  # answered: the body is thrown away, never received
                    return
            body, size = await self.read_body(headers, proto)
        except BodyRefused as exc:
            log.info("refused %s %s from %s: %s", scope.method, loggable(scope.path), scope.client, exc)
            proto.response_bytes(*_refusal(exc.status, str(exc)))
            if exc.unread is not None:
                await self.linger(scope, proto, begun=exc.unread == "rest")
            return
        await self.answer(scope, proto, loop, self.environ(scope, headers, body, size))

    async def answer(self, scope, proto, loop, environ):
        """Run the app on a request thread and send its reply; unreceived.WANTED (nothing sent) when it read an
        unreceived.Unreceived body."""
        try:
            outcome = await self.pool.call(loop, self.run_app, environ)
        except Exception:  # noqa: BLE001 - the app's own error handling failed; the client still gets an answer
            log.exception("internal error on %s %s", scope.method, loggable(scope.path))
            proto.response_bytes(*_refusal(500, "internal server error; the server log has details"))
            return None
        if outcome is unreceived.WANTED:
            return unreceived.WANTED
        status, reply_headers, whole, rest = outcome
        if rest is None:
            proto.response_bytes(status, reply_headers, whole)
            return
        if isinstance(rest, str):  # a whole file on disk (filereply): granian reads and sends it
            proto.response_file(status, reply_headers, rest)
            return
        try:
            transport = proto.response_stream(status, reply_headers)
            if whole:
                await transport.send_bytes(whole)
            while True:
                chunk = await loop.run_in_executor(self.pool, next, rest, _END)
                if chunk is _END:
                    break
                if chunk:
                    await transport.send_bytes(chunk)
        except Exception as exc:  # noqa: BLE001 - a client gone mid-reply; nothing left to answer
            log.info("reply to %s %s cut short: %s", scope.method, loggable(scope.path), exc)
        finally:
            close = getattr(rest, "close", None)
            if close is not None:
                await loop.run_in_executor(self.pool, close)

    async def linger(self, scope, proto, begun=False):
        """After an answer sent while the request's body is unread: read the body and throw it away, for at most
        ``linger_seconds``, until nothing arrives for ``linger_idle`` seconds, and at most ``linger_bytes`` (nor more
        than ``body_limit``: no more than any request may make it receive); then granian closes the connection, or
        keeps it for the next request when the whole body was read.

        Closed at once, a connection with unread bytes is reset (a TCP RST), not closed: a client still sending its
        body gets its send failed by the reset, and over TLS that failure (SSLEOFError) is all it sees, never the
        answer waiting for it. Read away, the body's send completes and the client reads the answer. Never stored,
        never on a request thread, and bounded: a client that goes on sending, slowly or fast, is cut off."""
        loop = asyncio.get_running_loop()
        watch = _StallWatch(loop, asyncio.current_task(), self.linger_idle, self.linger_seconds)
        discarded, started = 0, loop.time()
        most = self.linger_bytes if self.body_limit is None else min(self.linger_bytes, self.body_limit)
        try:
            try:
                # granian's protocol object is its body's iterator, made so by one __aiter__() only: a body whose
                # reading was begun (by ``async for``) goes on with __anext__()
                chunks = proto if begun else proto.__aiter__()
                while discarded < most:
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    watch.progress()
                    discarded += len(chunk)
            finally:
                watch.cancel()
            if watch.fired:
                await _absorb_cancel()
        except asyncio.CancelledError:
            if not watch.fired:
                raise  # the server is stopping
            _uncancel(asyncio.current_task())
        except Exception:  # noqa: BLE001 - the client closed or broke the connection: nothing left to read
            pass
        log.info("threw away %d bytes of the unread body of %s %s from %s in %.1f s", discarded, scope.method,
                 loggable(scope.path), scope.client, loop.time() - started)

    async def read_body(self, headers, proto):
        """(readable body, its size): refused with 413 over ``body_limit``, with 408 when ``body_timeout`` seconds
        pass without a byte."""
        declared = headers.get("content-length")
        chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        if not chunked and declared in (None, "", "0"):
            return None, 0
        limit = self.body_limit
        self.check_limit(declared)
        small = declared and declared.strip().isdigit() and int(declared) <= BODY_IN_MEMORY
        # a file's body (up to 1 MB) is taken whole from granian in ONE await, not chunk by chunk through the loop,
        # within body_timeout plus a second per BODY_RATE bytes
        whole = small and int(declared) >= BODY_WHOLE
        body, size = io.BytesIO() if small else tempfile.SpooledTemporaryFile(BODY_IN_MEMORY), 0
        loop = asyncio.get_running_loop()
        watch = _StallWatch(loop, asyncio.current_task(),
                            self.body_timeout + (int(declared) / BODY_RATE if whole else 0))
        try:
            try:
                if whole:
                    data = await proto()
                    size, body = len(data), io.BytesIO(data)
                else:
                    async for chunk in proto:
                        watch.progress()
                        size += len(chunk)
                        if limit is not None and size > limit:
                            raise BodyRefused(413, f"request body larger than the server's limit of {limit} bytes",
                                              unread="rest")
                        body.write(chunk)
            finally:
                watch.cancel()
            if watch.fired:  # the timer fired as the last chunk came: take the cancellation it asked for here
                await _absorb_cancel()
        except asyncio.CancelledError:
            if not watch.fired:
                body.close()
                raise  # the server is stopping
            _uncancel(asyncio.current_task())
            body.close()
            raise BodyRefused(408, f"request body: nothing received for {self.body_timeout:g} s after {size} "
                                   "bytes; send the whole body at once (minipanda serve --body-timeout)") from None
        except BodyRefused:
            body.close()
            raise
        except Exception as exc:  # noqa: BLE001 - the connection broke mid-body: whatever came is not the body
            body.close()
            raise BodyRefused(400, f"request body: the connection ended after {size} bytes, before the body "
                                   f"did ({type(exc).__name__})") from None
        except BaseException:
            body.close()
            raise
        if declared and declared.strip().isdigit() and size != int(declared):
            body.close()  # a client that stopped sending: a truncated body must never pass for a whole one
            raise BodyRefused(400, f"request body: {size} bytes received of the {declared} its Content-Length "
                                   "declares; the connection ended before the body did")
        body.seek(0)
        return body, size

    def check_limit(self, declared):
        """413 for a declared Content-Length over ``body_limit``, before any of the body is read."""
        if declared and declared.strip().isdigit() and self.body_limit is not None and \
                int(declared) > self.body_limit:
            raise BodyRefused(413, f"request body of {declared} bytes is larger than the server's limit of "
                                   f"{self.body_limit} bytes", unread="whole")

    @staticmethod
    def environ(scope, headers, body, size):
        """The WSGI environ of an RSGI scope; the body is complete, so CONTENT_LENGTH is its size."""
        server_host, _, server_port = scope.server.rpartition(":")
        environ = {
            "REQUEST_METHOD": scope.method, "SCRIPT_NAME": "",
            # as a WSGI server hands it over: the unquoted path's bytes as latin-1 (PEP 3333)
            "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
            "QUERY_STRING": scope.query_string, "SERVER_NAME": server_host.strip("[]"), "SERVER_PORT": server_port,
            "REMOTE_ADDR": scope.client.rpartition(":")[0].strip("[]"),
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}", "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme, "wsgi.input": body if body is not None else _EMPTY,
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False, "CONTENT_LENGTH": str(size) if body is not None else "",
            "wsgi.file_wrapper": filereply.FileReply,
        }
        for key, value in headers.items():
            key = key.lower()
            if key in ("content-length", "transfer-encoding"):
                continue
            name = "CONTENT_TYPE" if key == "content-type" else "HTTP_" + key.upper().replace("-", "_")
            if name in environ:
                environ[name] += (";" if key == "cookie" else ",") + value
            else:
                environ[name] = value
        if "HTTP_HOST" not in environ and scope.authority:
            environ["HTTP_HOST"] = scope.authority
        return environ

    def run_app(self, environ):
        """On a request thread: (status, headers, bytes sent first, the iterable of the rest, or None, or the path of
        a file granian sends)."""
        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"], started["headers"] = status, headers
            return _no_write

        try:
            try:
                result = self.app(environ, start_response)
            except unreceived.BodyWanted:  # the app admitted the request: run again once the body is received
                return unreceived.WANTED
            if isinstance(result, list):
                whole, rest = b"".join(result), None
            elif (content := filereply.whole_content(result)) is not None:
                result.close()  # a small file, read whole; the app's in-progress count (InFlight) ends
                whole, rest = content, None
            elif (path := filereply.sendable_path(result)) is not None:
                result.close()  # the file is sent from its path; the app's in-progress count (InFlight) ends
                whole, rest = b"", path
            else:
                rest = _Rest(iter(result), result)
                try:
                    whole = next(rest, b"")  # a generator may call start_response only now
                except BaseException:
                    rest.close()  # the app's in-progress count (InFlight) ends with close()
                    raise
        finally:
            body = environ["wsgi.input"]
            if body is not _EMPTY:
                body.close()
        status = int(started["status"].split(" ", 1)[0])
        return status, [(str(k), str(v)) for k, v in started["headers"]], whole, rest


async def _absorb_cancel():
    """Let a cancellation already requested of this task happen now, and undo it: the body was complete."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        _uncancel(asyncio.current_task())


def _uncancel(task):
    """Python 3.11+ counts a task's cancellations; one that was turned into a 408 is no longer pending."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


class _Empty:
    """wsgi.input of a request without a body."""

    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""

    def close(self):
        pass


_EMPTY = _Empty()


def _no_write(data):
    raise RuntimeError("the WSGI write() callable is not supported; return the body instead")


class _Rest:
    """The rest of a streamed reply: its iterator, and the WSGI result to close when done."""

    def __init__(self, iterator, result):
        self.iterator, self.result = iterator, result

    def __next__(self):
        return next(self.iterator)

    def close(self):
        close = getattr(self.result, "close", None)
        if close is not None:
            close()
