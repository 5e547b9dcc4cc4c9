"""``minipanda serve --workers N`` (PostgreSQL only): N forked worker processes serving one listening socket, the
parent passing signals on and stopping them all when one exits on its own."""
import logging
import os
import signal

from minipanda.errors import ConfigError
from queueconfig.signals import SignalInbox

log = logging.getLogger("minipanda.server")


def is_postgres(db_url):
    return db_url.startswith(("postgresql://", "postgres://"))


def check_workers(workers, db_url):
    """Raise ConfigError unless ``workers`` processes can share ``db_url``."""
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {workers}")
    if workers > 1 and not is_postgres(db_url):
        raise ConfigError(f"--workers {workers} needs a PostgreSQL database (--db postgresql://...): one SQLite "
                          "file takes one server process; use --threads for more concurrency on SQLite")


def reaped():
    """(pid, status) of every child that has exited, without waiting; None when no child is left at all."""
    found = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found or None
        if pid == 0:
            return found
        found.append((pid, status))


def run_workers(server, workers, run, lock, notifier):
    """Fork ``workers`` processes that each call ``run()`` (serving the inherited, already listening socket); wait
    for them, passing SIGTERM/SIGINT/SIGHUP on. When one exits on its own, the others are stopped too, and this
    raises SystemExit(1) so a supervisor (systemd) restarts the whole server."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve until told to stop, and never return into the parent's code
            code = 0
            try:
                run()
            except BaseException:
                log.exception("worker process %d failed", os.getpid())
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    server.sock.close()  # the workers hold the listening socket; this process only waits for them
    lock.close()
    log.info("minipanda started %d worker processes on %s:%s: pids %s", workers, server.host, server.effective_port,
             " ".join(map(str, children)))
    # The socket listens since bind(): connections wait in its backlog until a worker takes them.
    notifier.send("READY=1", f"STATUS={workers} worker processes on {server.host}:{server.effective_port}")
    # The handlers only record (queueconfig/signals.py says why); SIGCHLD only wakes this loop, which reaps the
    # workers, passes stops and hang-ups on, and tells systemd.
    signals = SignalInbox(extra=(signal.SIGCHLD,))
    signals.install()
    live, stopping, failed = set(children), False, False

    def pass_on(signum):
        for pid in live:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    while live:
        exited = reaped()
        if exited is None:
            break
        for pid, status in exited:
            if pid not in live:
                continue
            live.discard(pid)
            if not stopping:
                log.error("worker process %d exited on its own (status %d); stopping the others", pid, status)
                failed = True
                signals.record_stop(signal.SIGTERM)  # from here on as if told to stop
        if signals.stop_signum is not None and not stopping:
            stopping = True
            signals.ignore_further()  # stopping now: a repeated stop is the same stop
            notifier.send("STOPPING=1")
            pass_on(signal.SIGTERM)
        elif signals.take_hangup() and not stopping:
            pass_on(signal.SIGHUP)
        if live:
            signals.wait(1.0)
    log.info("minipanda stopped (all worker processes)")
    if failed:
        raise SystemExit(1)
