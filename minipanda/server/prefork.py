"""``minipanda serve --workers N`` (PostgreSQL only): N forked worker processes serving one listening socket, the
parent passing signals on and stopping them all when one exits on its own."""
import logging
import os
import signal
import threading

from minipanda.errors import ConfigError

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
    live, state = set(children), {"stopping": False}

    def pass_on(signum, frame=None):
        if signum != signal.SIGHUP:
            if not state["stopping"]:
                notifier.send("STOPPING=1")
            state["stopping"] = True
        for pid in live:
            try:
                os.kill(pid, signal.SIGTERM if signum != signal.SIGHUP else signal.SIGHUP)
            except ProcessLookupError:
                pass

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, pass_on)
    failed = False
    while live:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid not in live:
            continue
        live.discard(pid)
        if not state["stopping"]:
            log.error("worker process %d exited on its own (status %d); stopping the others", pid, status)
            failed = True
            pass_on(signal.SIGTERM)
    log.info("minipanda stopped (all worker processes)")
    if failed:
        raise SystemExit(1)
