"""The HTTP server of ``minipanda serve``: granian's RSGI worker, run inside this process, in front of the WSGI app.

granian's network I/O (accept, HTTP parsing, keep-alive, TLS) runs on its Rust threads outside the GIL. Requests
go to minipanda.server.bridge's RsgiBridge on one asyncio loop (this module's thread ``minipanda-http``), which
reads their bodies there (within ``body_timeout`` and ``body_limit``) and runs the WSGI app (bottle) on one of
``threads`` Python threads.

Its command-line server and its ``Granian`` class run the app in child processes and take over the process's
signals, which fits neither the testbed (the server on a thread of a bigger process) nor the one-writer SQLite
server; so this module starts granian's RSGI worker itself, the way granian's own thread workers do, on a socket
this module binds. That worker class is granian's internal API: setup.py pins granian to the minor version this
was written against (``tests/test_server_http.py`` covers start, answer, TLS, stalled bodies and stop).

    server = HttpServer.bind("127.0.0.1", 25080)     # OSError when the port is taken (no SO_REUSEPORT)
    server.start(app, threads=8)                      # returns at once; requests are answered from now on
    server.stop()                                     # refuses new connections, closes idle ones, waits for
                                                      # requests in progress (at most ``drain`` seconds)
"""
import asyncio
import logging
import os
import socket
import threading
import time

from minipanda.server import bridge

log = logging.getLogger("minipanda.server")

BACKLOG = 1024
CONNECTIONS = 1 << 20  # at most; open_files_limit() lowers it to what the process may open


def open_files_limit():
    """This process's soft RLIMIT_NOFILE (every connection is an open file)."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return CONNECTIONS if soft == resource.RLIM_INFINITY else max(BACKLOG, soft)


class InFlight:
    """WSGI middleware counting requests in progress, so stop() can wait for them."""

    def __init__(self, app):
        self.app, self.count, self.lock = app, 0, threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def __call__(self, environ, start_response):
        with self.lock:
            self.count += 1
            self.idle.clear()
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        if isinstance(result, list):  # bottle's usual reply: sent by granian after this returns
            self._done()
            return result
        return _Closing(result, self._done)  # a streamed reply (a stored file) is in progress until closed

    def _done(self):
        with self.lock:
            self.count -= 1
            if not self.count:
                self.idle.set()


class _Closing:
    """An app's reply iterable that calls ``done`` once, when the server closes it."""

    def __init__(self, inner, done):
        self.inner, self.done = inner, done

    def __iter__(self):
        return iter(self.inner)

    def close(self):
        try:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
        finally:
            done, self.done = self.done, None
            if done is not None:
                done()

def new_event_loop():
    """The loop that reads bodies and hands replies back: uvloop's (a dependency where it builds: a fifth less server
    CPU per request, bench/README.md), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class HttpServer:
    """A bound listening socket, then granian's RSGI worker serving it until stop()."""

    def __init__(self, sock, tls_cert=None, tls_key=None):
        self.sock = sock
        self.host, self.effective_port = sock.getsockname()[:2]
        self.tls = (tls_cert, tls_key) if tls_cert else None
        self.scheme = "https" if self.tls else "http"
        self._signal = self._loop = self._worker = self._inflight = self._bridge = self._loop_thread = None
        self.stop_requested, self.stopped = threading.Event(), threading.Event()
        self.body_timeout, self.body_limit = bridge.BODY_TIMEOUT, None  # see bridge's docstring

    def request_stop(self):
        """Ask the thread running ``serve()`` to stop the server, from any thread; never from a signal handler (it
        sets an Event, whose lock the interrupted thread may hold: queueconfig/signals.py)."""
        self.stop_requested.set()

    @classmethod
    def bind(cls, host, port, tls_cert=None, tls_key=None):
        """Bind and listen now (before the database is opened); OSError when the address is taken."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: one server per port
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by each accepted connection
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        return cls(sock, tls_cert, tls_key)

    def start(self, app, threads=8):
        """Serve ``app`` on ``threads`` Python threads; returns at once (granian runs on threads of its own, the
        bodies are read on this server's loop thread, within ``self.body_timeout`` and ``self.body_limit``)."""
        from granian._futures import _future_watcher_wrapper, _new_cbscheduler
        from granian._granian import MetricsAggregator, RSGIWorker, SocketHolder, WorkerSignal
        from granian.http import HTTP1Settings

        self._inflight = InFlight(app)
        self._bridge = bridge.RsgiBridge(self._inflight, threads, self.body_timeout, self.body_limit)
        connections = min(CONNECTIONS, open_files_limit())
        # granian gets its own descriptor of the socket; ours lets stop() close the listener at once
        holder = SocketHolder(os.dup(self.sock.fileno()), False, BACKLOG)
        if self.tls:
            tls = (True, os.path.abspath(self.tls[0]), os.path.abspath(self.tls[1]), None, "tls1.2", None, [],
                   False)
        else:
            tls = (False, None, None, None, "tls1.2", None, [], False)
        self._signal = WorkerSignal()
        self._loop = new_event_loop()
        self._worker = RSGIWorker(
            1, (None, holder), None,
            1,            # Rust I/O threads: one is plenty for a 2-core host, and they never hold the GIL
            512,          # Rust blocking threads (file I/O)
            1,            # granian's own Python threads: the app runs on the bridge's request threads instead
            30,           # seconds an idle Python thread is kept
            connections,  # connections served at once (granian's "backpressure"): an idle keep-alive one holds
                          # a slot too, so this is the open-files limit, not the 1,024 of granian's default
            "1",          # HTTP/1.1 (pilots and harvester speak nothing else)
            HTTP1Settings(), None, False, None, *tls, (None, MetricsAggregator(1)))
        scheduler = _new_cbscheduler(self._loop, _future_watcher_wrapper(self._bridge), impl_asyncio=True)
        self._worker.serve_mtr(scheduler, self._loop, self._signal)
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="minipanda-http", daemon=True)
        self._loop_thread.start()

    def stop(self, drain=10.0):
        """Stop accepting, close idle keep-alive connections, wait up to ``drain`` s for requests in progress."""
        if self.stopped.is_set():
            return
        self.stop_requested.set()
        if self._signal is not None:
            self._signal.set()
        try:  # granian closes its descriptor in its own time; shutdown() stops the listening now
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._signal is not None:
            deadline = time.monotonic() + drain
            while not self._inflight.idle.wait(0.1) and time.monotonic() < deadline:
                pass
            if not self._inflight.idle.is_set():
                log.warning("%d requests still in progress after %.0f s; stopping anyway", self._inflight.count,
                            drain)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(drain)
            self._bridge.pool.shutdown()
            if not self._loop.is_running():
                self._loop.close()
        self.stopped.set()
