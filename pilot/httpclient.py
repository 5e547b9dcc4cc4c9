"""One HTTP request for the pilot, with TLS (``ssl``) loaded only for an https URL. Standard library only.

``urllib.request`` imports ``ssl`` and ``hashlib`` even for http:// (OpenSSL's libssl and libcrypto: about 5 MB of
resident memory, a fifth of a pilot's), so requests go through ``http.client`` directly. The first request imports
``http.client`` with ``ssl`` held back when nothing in the process has loaded either yet (as on a Python built
without ssl: it then has no HTTPSConnection); an https URL imports ``ssl`` at that moment and wraps the connection
itself, with certificates verified against the system's CAs (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` honoured).
When the environment names a proxy for the URL's scheme (``http_proxy``, ``HTTPS_PROXY``, ...), the request goes
through ``urllib.request``, which reads those variables and ``no_proxy``, as before.

Replies' heads are read by :mod:`pilot.httpreply` (not the email package), and a small body goes out with its
request's head in one send. A connection is kept open for the next request to the same server (HTTP/1.1 keep-alive: a pilot talks to one
server several times per job, and a new TCP connection each time cost it more CPU than the request), once its
reply has been read to the end; one the server has closed in the meantime is noticed when the next request on it
gets no answer at all, and that request is sent again once on a new connection (the server never saw it). A GET
follows up to 5 redirects. A status of 300 or more that is not followed raises HTTPError (``code``, ``read()``);
anything else that keeps an answer from arriving raises OSError (a timeout is socket.timeout, an OSError too). An
answer sent before the server took the whole body (a refused upload) is read even when the body's send failed (a
reset; over TLS an SSLError), and is never taken as a success (:func:`_early_answer`).

:func:`begin` sends a request and leaves its answer to be read later (:class:`Pending`), so the server works on it
while the pilot does something else over another connection: up to ``KEEP`` connections per server are kept.
"""
import os
import socket
import sys
import threading
import urllib.parse

from pilot import httpreply

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
_lock = threading.Lock()
_loaded = {}
_idle = {}  # (scheme, host, port) -> open connections whose last reply was read to its end, newest last
KEEP = 3  # kept per server: the request answered in the background (begin), the wrap-up thread's, the rest


class HTTPError(Exception):
    """The server answered with an error status; ``read()`` gives the reply's body."""

    def __init__(self, url, code, body):
        super().__init__(f"{url}: HTTP {code}")
        self.url, self.code, self.body = url, code, body

    def read(self):
        return self.body


def http_client():
    """``http.client``, imported without ``ssl`` unless the process already has either of them."""
    with _lock:
        if "client" not in _loaded:
            if "http.client" in sys.modules or "ssl" in sys.modules:
                import http.client
            else:
                sys.modules["ssl"] = None  # makes http.client's `import ssl` fail: no HTTPSConnection, no OpenSSL
                try:
                    import http.client
                finally:
                    if sys.modules.get("ssl", 0) is None:
                        del sys.modules["ssl"]
            _loaded["client"] = http.client
        return _loaded["client"]


def tls_connection_class():
    """An HTTPSConnection class: http.client's when it has one, else ours on the ssl module imported now."""
    client = http_client()
    if hasattr(client, "HTTPSConnection"):
        return client.HTTPSConnection
    with _lock:
        if "tls" not in _loaded:
            import ssl

            class TLSConnection(client.HTTPConnection):
                """http.client's HTTPConnection with the socket wrapped in TLS after connecting (and tunnelling)."""

                default_port = client.HTTPS_PORT

                def __init__(self, host, port=None, context=None, **kwargs):
                    super().__init__(host, port, **kwargs)
                    self._context = context or ssl.create_default_context()

                def connect(self):
                    super().connect()
                    self.sock = self._context.wrap_socket(self.sock, server_hostname=self._tunnel_host or self.host)

            _loaded["tls"] = TLSConnection
        return _loaded["tls"]


def request(method, url, body=None, headers=None, timeout=60.0):
    """Send one request and return the response once its status is a success.

    Args:
        method: GET, POST, PUT, ...
        url: an http:// or https:// URL.
        body: bytes, a file object (read in blocks; give Content-Length in ``headers``) or None.
        headers: request headers.
        timeout: seconds for connecting and for each read.

    Returns:
        A reply with ``status``, ``read(n)`` and ``getheader()``; use it in a ``with`` (its connection is kept for
        the next request when the reply was read to its end, closed otherwise).
    """
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise OSError(f"{url}: not an http or https URL")
        if _proxy_named(scheme):
            return _through_urllib(method, url, body, headers, timeout)
        response = _send(method, scheme, parts, body, headers, timeout)
        location = response.getheader("Location")
        if response.status in REDIRECTS and method == "GET" and location:
            response.close()
            url = urllib.parse.urljoin(url, location)
            continue
        if response.status >= 300:
            with response:
                raise HTTPError(url, response.status, response.read())
        return response
    raise OSError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _send(method, scheme, parts, body, headers, timeout):
    client = http_client()
    key, path, connection, reused = _connection(scheme, parts, timeout)
    if reused:
        try:
            return _Reply(_exchange(connection, method, path, body, headers), connection, key)
        except (client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            connection.close()  # closed by the server while idle: it never saw this request
            if body is not None and not isinstance(body, bytes):
                if not hasattr(body, "seek"):
                    raise
                body.seek(0)
        except BaseException:
            connection.close()
            raise
        key, path, connection, reused = _connection(scheme, parts, timeout, fresh=True)
    try:
        return _Reply(_exchange(connection, method, path, body, headers), connection, key)
    except client.HTTPException as exc:
        connection.close()
        raise OSError(f"{parts.geturl()}: {exc!r}") from None
    except BaseException:
        connection.close()
        raise


def _connection(scheme, parts, timeout, fresh=False):
    """(key, path, connection, reused): an idle kept connection to the server when there is one, else a new one."""
    client = http_client()
    try:
        port = parts.port
    except ValueError as exc:
        raise OSError(f"{parts.geturl()}: {exc}") from None
    key = (scheme, parts.hostname, port)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = None
    if not fresh:
        with _lock:
            kept = _idle.get(key)
            connection = kept.pop() if kept else None
    if connection is not None:
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return key, path, connection, True
    return key, path, lean_connection_class(scheme)(parts.hostname, port, timeout=timeout), False


def lean_connection_class(scheme):
    """The connection class for ``scheme``: http.client's (or the TLS one) with :mod:`pilot.httpreply`'s head."""
    if scheme not in _loaded:
        client = http_client()
        base = tls_connection_class() if scheme == "https" else client.HTTPConnection
        with _lock:
            _loaded.setdefault(scheme, httpreply.lean_classes(client, base)[0])
    return _loaded[scheme]


def begin(method, url, body=None, headers=None, timeout=60.0):
    """Send a request now and return a :class:`Pending` whose ``result()`` reads the answer later.

    ``body`` is bytes or None. A request that cannot be sent now (a proxy is named, the connection fails) is sent
    by ``result()`` instead, as :func:`request` sends it.
    """
    return Pending(method, url, body, headers, timeout)


class Pending:
    """A request sent on a connection of its own whose reply has not been read yet (see :func:`begin`)."""

    def __init__(self, method, url, body, headers, timeout):
        self.args = (method, url, body, headers, timeout)
        self.connection = None
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname or _proxy_named(scheme) or \
                not isinstance(body, (bytes, type(None))):
            return
        client = http_client()
        try:
            self.key, path, connection, self.reused = _connection(scheme, parts, timeout)
        except OSError:
            return
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
        except (OSError, client.HTTPException):
            connection.close()  # not sent whole: the server cannot have acted on it; result() sends it again
            return
        self.connection = connection

    def result(self, timeout=None):
        """The reply, as :func:`request` returns it (use it in a ``with``); ``timeout`` caps the wait from now."""
        method, url, body, headers, request_timeout = self.args
        connection, self.connection = self.connection, None
        if connection is None:
            return request(method, url, body, headers, timeout or request_timeout)
        client = http_client()
        try:
            if timeout is not None and connection.sock is not None:
                connection.sock.settimeout(timeout)
            response = connection.getresponse()
        except (client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            connection.close()
            if not self.reused:
                raise OSError(f"{url}: {exc!r}") from None
            # a kept connection the server had closed while idle: it never saw the request
            return request(method, url, body, headers, timeout or request_timeout)
        except client.HTTPException as exc:
            connection.close()
            raise OSError(f"{url}: {exc!r}") from None
        except BaseException:
            connection.close()
            raise
        reply = _Reply(response, connection, self.key)
        if reply.status >= 300:
            with reply:
                raise HTTPError(url, reply.status, reply.read())
        return reply

    def fileno(self):
        """The connection's socket, readable once the answer begins to arrive; None when the request goes out only
        in :meth:`result` (it could not be sent ahead)."""
        sock = self.connection.sock if self.connection is not None else None
        return sock.fileno() if sock is not None else None

    def cancel(self):
        """Drop the request's connection without reading its answer."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _exchange(connection, method, path, body, headers):
    send_to = getattr(body, "send_to", None)  # a file body that sends itself (sendfile): headers first, then it
    try:
        connection.request(method, path, body=None if send_to else body, headers=dict(headers or {}))
        if send_to:
            send_to(connection.sock)
    except (TimeoutError, socket.timeout):  # one class from Python 3.10 on
        raise  # a server that stopped reading without answering (or the upload's own deadline)
    except OSError as exc:
        return _early_answer(connection, exc)
    return connection.getresponse()


def _early_answer(connection, exc):
    """The answer a server sent before taking the whole body (a refused upload), after the body's send failed with
    ``exc``; ``exc`` itself when there is none.

    The server may answer, stop reading and close, and the send then fails for any transport reason: a broken pipe
    or a reset on a plain socket, an SSLError or SSLEOFError through TLS, while the answer waits on the wire. Here the
    connection is only read, never written again (a TLS write that failed part-way must not be retried with other
    bytes: OpenSSL refuses it, BAD_LENGTH), and closed after the answer: the rest of the body was never sent. Only
    an error status is taken: a body not sent whole is never taken as stored."""
    client = http_client()
    if connection.sock is None:  # never connected: nothing to read
        raise exc
    try:
        response = connection.getresponse()
    except (OSError, client.HTTPException):
        raise exc from None
    response.will_close = True  # the body was cut short: this connection carries no other request
    if response.status < 300:
        response.close()
        raise exc
    return response


class _Reply:
    """An ``http.client.HTTPResponse`` that hands its connection back for the next request when it is closed."""

    def __init__(self, response, connection, key):
        self.response, self.connection, self.key = response, connection, key
        self.status = response.status

    def read(self, amt=None):
        return self.response.read(amt)

    def readinto(self, buffer):
        return self.response.readinto(buffer)

    def getheader(self, name, default=None):
        return self.response.getheader(name, default)

    def close(self):
        if self.connection is None:
            return
        # http.client drops the response's file once the body is read to its end: only then may the
        # connection carry another request
        complete = self.response.isclosed() and not self.response.will_close
        self.response.close()
        if complete:
            with _lock:
                kept = _idle.setdefault(self.key, [])
                kept.append(self.connection)
                surplus = kept.pop(0) if len(kept) > KEEP else None
            if surplus is not None:
                surplus.close()
        else:
            self.connection.close()
        self.connection = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _proxy_named(scheme):
    return any(os.environ.get(name) for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"))


def _through_urllib(method, url, body, headers, timeout):
    """The request through urllib.request (proxies from the environment); errors as :func:`request` raises."""
    import urllib.error
    import urllib.request

    handlers = []
    if not hasattr(urllib.request, "HTTPSHandler"):  # http.client was loaded without ssl
        class TLSHandler(urllib.request.AbstractHTTPHandler):
            def https_open(self, req):
                return self.do_open(tls_connection_class(), req)

            https_request = urllib.request.AbstractHTTPHandler.do_request_

        handlers.append(TLSHandler())
    opener = urllib.request.build_opener(*handlers)
    try:
        return opener.open(urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method),
                           timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise HTTPError(url, exc.code, exc.read()) from None
