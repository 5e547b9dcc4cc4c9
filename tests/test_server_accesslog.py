"""minipanda/server/accesslog.py: one access line per request, put on a queue by the request thread and made into
its record by one listener thread, the record the same as ``access_log.info`` in the request thread would have made
(logger, level, message, time, thread, source)."""
import logging
import logging.handlers
import re
import threading
import time

from minipanda.server import accesslog


def test_the_access_log_goes_through_a_queue(caplog):
    """A request thread only enqueues its access record (QueueHandler); the listener writes it."""
    root = logging.getLogger()
    queued = accesslog.QueuedAccessLog()  # caplog's handler is on the root logger
    try:
        assert [type(h).__mro__[1] for h in accesslog.access_log.handlers] == [logging.handlers.QueueHandler]
        assert not accesslog.access_log.propagate
        with caplog.at_level(logging.INFO):
            accesslog.access_log.info("%s %s %s", "GET", "/x", 200)
    finally:
        queued.stop()  # writes what is queued
    assert "GET /x 200" in caplog.text
    assert accesslog.access_log.propagate and not accesslog.access_log.handlers
    assert root.handlers


def test_a_request_threads_access_line_is_written_as_the_logger_would_have_written_it(caplog):
    """The middleware queues only the raw line (time, thread, arguments); the listener makes the record: the
    same logger, level, message, time, thread and source as ``access_log.info`` in the request thread."""
    def app(environ, start_response):
        start_response("404 Not Found", [])
        return [b"none"]

    middleware = accesslog.AccessLog(app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x/y", "REMOTE_ADDR": "192.0.2.7"}
    factory, made_in = logging.getLogRecordFactory(), []

    def recording_factory(name, *args, **kwargs):
        if name == "minipanda.access":  # which thread builds the access record (not the request thread)
            made_in.append(threading.current_thread().name)
        return factory(name, *args, **kwargs)

    logging.setLogRecordFactory(recording_factory)
    queued = accesslog.QueuedAccessLog()
    times = []
    try:
        with caplog.at_level(logging.INFO):
            def request():
                times.append(time.time())
                middleware(environ, lambda status, headers, exc_info=None: None)
                times.append(time.time())

            thread = threading.Thread(target=request, name="request-thread-7")
            thread.start()
            thread.join(30)
    finally:
        queued.stop()  # writes what is queued
        logging.setLogRecordFactory(factory)
    assert len(made_in) == 1 and made_in != ["request-thread-7"], made_in
    [record] = [record for record in caplog.records if record.name == "minipanda.access"]
    assert record.levelname == "INFO" and record.msg == "%s %s %s %.1fms %s"
    assert re.fullmatch(r"GET /x/y 404 \d+\.\dms 192\.0\.2\.7", record.getMessage())
    assert (record.threadName, record.thread) == ("request-thread-7", thread.ident)
    assert times[0] <= record.created <= times[1]
    assert record.msecs == int((record.created - int(record.created)) * 1000)
    assert record.pathname == accesslog.__file__ and record.funcName == "__call__"
    assert accesslog._access_lines is None  # stopped: the middleware logs through the logger again
