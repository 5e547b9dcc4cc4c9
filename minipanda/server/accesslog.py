"""The server's access log: one line per request (method, path, status, duration, client), written after the
answer by :class:`AccessLog` (WSGI middleware); :class:`QueuedAccessLog` moves the writing off the request threads
onto one listener thread."""
import logging
import logging.handlers
import queue
import threading
import time

from minipanda.api import wire

access_log = logging.getLogger("minipanda.access")


class _RecordQueueHandler(logging.handlers.QueueHandler):
    """Puts the record on the queue as it is: the listener's handlers format it, off the request thread (the
    access line's arguments are strings and numbers, safe to format later)."""

    def prepare(self, record):
        return record


ACCESS_FORMAT = "%s %s %s %.1fms %s"  # method, path, status, duration, client
_access_lines = None  # the queue of QueuedAccessLog's listener while it runs: AccessLog puts raw lines on it


def _access_line(args):
    """Put one access line on the listener's queue as (time, thread id, thread name, args): what the request
    thread must know itself. Building the LogRecord (the caller's frame, the process, the time's fields: ~20 us
    of the request thread per line) is left to the listener. Returns False (nothing queued) where the logger
    would not pass the line to the listener as it is: no listener, INFO disabled, or filters on the logger."""
    lines = _access_lines
    if lines is None or access_log.filters or not access_log.isEnabledFor(logging.INFO):
        return False
    current = threading.current_thread()
    lines.put((time.time(), current.ident, current.name, args))
    return True


class _AccessListener(logging.handlers.QueueListener):
    """Writes queued records as they are, and turns the request threads' raw access lines into the LogRecord
    ``access_log.info(ACCESS_FORMAT, *args)`` would have made there: same logger, level, message, time and
    thread, the middleware as its source."""

    def prepare(self, item):
        if not isinstance(item, tuple):
            return item
        created, thread, thread_name, args = item
        code = AccessLog.__call__.__code__
        record = access_log.makeRecord(access_log.name, logging.INFO, code.co_filename, code.co_firstlineno,
                                       ACCESS_FORMAT, args, None, code.co_name)
        record.relativeCreated -= (record.created - created) * 1000
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        record.thread, record.threadName = thread, thread_name
        return record


class QueuedAccessLog:
    """The access log through a queue: a request thread only enqueues its line (or record: stdlib QueueHandler);
    one listener thread makes the record and writes it with the root logger's handlers. ``stop()`` writes what is
    queued and undoes it."""

    def __init__(self):
        global _access_lines
        self.listener = self.handler = None
        handlers = logging.getLogger().handlers
        if not handlers or access_log.handlers:
            return  # nothing to write to (logging not configured), or someone set this logger up on purpose
        records = queue.SimpleQueue()
        self.handler = _RecordQueueHandler(records)
        self.listener = _AccessListener(records, *handlers, respect_handler_level=True)
        self.listener.start()
        access_log.addHandler(self.handler)
        access_log.propagate = False
        _access_lines = records

    def stop(self):
        global _access_lines
        if self.listener is not None:
            _access_lines = None
            access_log.removeHandler(self.handler)
            access_log.propagate = True
            self.listener.stop()
            self.listener = None


class AccessLog:
    """WSGI middleware: method, path, status and duration of every request, after it is answered."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        seen = {}

        def recording_start_response(status, headers, exc_info=None):
            seen["status"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, recording_start_response)
        finally:
            # a first run without its body (minipanda.server.bridge) that read it: the run with the body logs
            if not getattr(environ.get("wsgi.input"), "wanted", False):
                args = (environ.get("REQUEST_METHOD"), wire.loggable(environ.get("PATH_INFO", "")),
                        seen.get("status", "-"),
                        (time.perf_counter() - started) * 1000, environ.get("REMOTE_ADDR", "-"))
                if not _access_line(args):
                    access_log.info(ACCESS_FORMAT, *args)
