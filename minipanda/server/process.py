"""``minipanda serve``: the WSGI app on granian (``server/http.py``), one access-log line per request
(``server/accesslog.py``), worker processes on PostgreSQL (``server/prefork.py``), clean stop."""
import fcntl
import gc
import logging
import os
import resource
import threading

from minipanda.api.app import ServerContext, is_loopback, make_app
from minipanda.core import auth, db, queues, schema
from minipanda.errors import ConfigError, ServerLocked
from minipanda.server import bridge, http
from minipanda.server.accesslog import AccessLog, QueuedAccessLog
from minipanda.server.daemon import DutyRunner, LeaderLock
from minipanda.server.home import DEFAULT_HOST, DEFAULT_PORT
from minipanda.server.prefork import check_workers, is_postgres, run_workers
from queueconfig.service import Notifier
from queueconfig.signals import SignalInbox

log = logging.getLogger("minipanda.server")


def lock_database(db_url):
    """Hold an exclusive lock for this server's SQLite database (``<file>.lock``), or raise ServerLocked naming
    the server that has it. PostgreSQL takes several servers; its URL takes no lock. Close the file to release."""
    if not db_url.startswith("sqlite:///") or db_url.endswith(":memory:"):
        return open(os.devnull)
    path = db_url[len("sqlite:///"):] + ".lock"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ServerLocked(f"database {db_url[len('sqlite:///'):]} is in use by a running minipanda server "
                           f"({holder}); stop it first, or give this one its own --home or --db") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def build(home, db_url=None, auth_mode="token", host=DEFAULT_HOST, max_body_mb=64, server_names=()):
    """Open the database and return (wsgi app, context). Refuses auth 'none' off loopback."""
    check_options(auth_mode, host, max_body_mb)
    schema.open_database(db_url or db.default_url(home))
    context = ServerContext(home=home, secret=auth.load_secret(home), auth_mode=auth_mode,
                            max_body=int(max_body_mb * 1024 * 1024),
                            server_names=tuple(name.lower() for name in (host, *server_names)))
    return AccessLog(make_app(context)), context


def check_options(auth_mode, host, max_body_mb):
    """Raise ConfigError naming the first option that cannot work."""
    if auth_mode not in ("token", "none"):
        raise ConfigError(f"auth: expected 'token' or 'none', got {auth_mode!r}")
    if auth_mode == "none" and not is_loopback(host):
        raise ConfigError(f"auth 'none' is allowed only on a loopback bind, not on host {host!r}")
    if max_body_mb <= 0:
        raise ConfigError(f"max-body-mb: must be positive, got {max_body_mb}")


def ensure_admin_token(home, secret):
    """Write <home>/admin.token (0600) on first start, so the local CLI works without further setup."""
    path = os.path.join(home, "admin.token")
    if os.path.exists(path):
        return
    db.database.connect(reuse_if_open=True)
    token, jti = auth.create_token(secret, "admin", "admin", days=365)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    log.info("wrote an admin token (id %s) to %s; revoke with 'minipanda token revoke %s'", jti, path, jti)


def load_queue_config(path):
    """Load and validate the queue configuration file, or raise ConfigError listing every problem in it."""
    import queueconfig

    try:
        return queueconfig.load(path)
    except queueconfig.ConfigError as exc:
        raise ConfigError(f"queue configuration {path} is invalid ({len(exc.errors)} errors):\n  "
                          + "\n  ".join(exc.errors)) from None
    except OSError as exc:
        raise ConfigError(f"queue configuration {path}: {exc.strerror}") from None


def apply_queue_config(config, old=None):
    """Mirror a (new) queue configuration into the queue table and say what changed."""
    import queueconfig

    for warning in config.warnings:
        log.warning("queue configuration %s: %s", config.source, warning)
    added, updated, removed = queues.apply_config(config, queueconfig.queuedata)
    log.info("queue configuration %s version %s in force: %d queues (%d added, %d updated, %d set offline)%s",
             config.source, config.version_id, len(config.queues), len(added), len(updated), len(removed),
             f", replacing version {old.version_id}" if old is not None else "")


def watch_queue_config(runner, config, period):
    """Reload the queue file when it changes (checked every ``period`` s, or at once on SIGHUP)."""
    import queueconfig

    reloader = queueconfig.ConfigReloader(config.source, on_change=apply_queue_config, initial=config, logger=log)
    runner.add("queue-config", period, lambda now: reloader.check())
    return reloader


def check_tls(tls_cert, tls_key):
    """Both TLS files or neither, and both readable; raise ConfigError otherwise."""
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    for option, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{option} {path}: not a readable file")


def raise_open_files_limit():
    """Lift this process's soft RLIMIT_NOFILE to its hard limit: every open connection is a file descriptor."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 1 << 20:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit: %s", exc)


def serve(home, host=DEFAULT_HOST, port=DEFAULT_PORT, db_url=None, auth_mode="token", threads=8, max_body_mb=64,
          queues_file=None, reload_period=10.0, ready=None, settings=None, tls_cert=None, tls_key=None, workers=1,
          leader_retry=10.0, body_timeout=bridge.BODY_TIMEOUT, server_names=()):
    """Run until SIGTERM/SIGINT (or ``ready``'s server's ``request_stop()``); returns when the server has stopped.

    ``ready(server)``, when given, is called once requests are answered: ``server.effective_port`` is the port,
    ``server.request_stop()`` stops it from any thread (how the testbed, which runs this on a thread, stops it).

    ``workers`` > 1 (PostgreSQL only): this process binds the socket, prepares the database, then forks that many
    worker processes serving the inherited socket, and waits for them (SIGTERM/SIGINT are passed on). On
    PostgreSQL the duties run only in the process holding their advisory lock (``daemon.LeaderLock``), whether
    the other servers are this one's workers or ``serve`` processes on other hosts.
    """
    check_options(auth_mode, host, max_body_mb)
    if body_timeout <= 0:
        raise ConfigError(f"--body-timeout: must be positive, got {body_timeout}")
    check_tls(tls_cert, tls_key)
    notifier = Notifier.from_environment(log)  # systemd (Type=notify): READY=1 once serving, STOPPING=1 on stop
    db_url = db_url or db.default_url(home)
    check_workers(workers, db_url)
    queue_config = load_queue_config(queues_file) if queues_file else None
    # Nothing touches the database before this server holds the database's lock and its port: a second server
    # started by mistake must leave the running one's queues and tokens as they are.
    lock = lock_database(db_url)
    try:
        server = http.HttpServer.bind(host, port, tls_cert, tls_key)
    except OSError as exc:
        lock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; is another server running there?") \
            from None
    raise_open_files_limit()
    try:
        app, context = build(home, db_url, auth_mode, host, max_body_mb, server_names)
    except BaseException:
        server.stop()
        lock.close()
        raise
    server.body_timeout, server.body_limit = body_timeout, context.max_body + bridge.BODY_SLACK
    leader = LeaderLock(db_url, retry=leader_retry) if is_postgres(db_url) else None
    runner = DutyRunner(gate=leader.held if leader is not None else None)
    context.wake = runner.wake
    reloader = None
    if queue_config is not None:
        db.database.connect(reuse_if_open=True)
        apply_queue_config(queue_config)
        reloader = watch_queue_config(runner, queue_config, reload_period)
    os.makedirs(os.path.join(home, "trf"), exist_ok=True)
    if auth_mode == "token":
        ensure_admin_token(home, context.secret)
    if workers > 1:
        db.database.close()  # each worker opens its own connections; none is shared across fork()
        run_workers(server, workers, lambda: _run(server, app, runner, reloader, leader, lock, ready, settings,
                                                  host, home, auth_mode, threads, Notifier()), lock, notifier)
        return
    _run(server, app, runner, reloader, leader, lock, ready, settings, host, home, auth_mode, threads, notifier)


def _run(server, app, runner, reloader, leader, lock, ready, settings, host, home, auth_mode, threads, notifier):
    """Serve requests and run the duties in this process until asked to stop."""
    # The handlers only record (queueconfig/signals.py says why): this thread logs, tells systemd and stops.
    signals = SignalInbox()
    signals.install()  # only on the main thread: the testbed runs serve on a thread of its own process
    from minipanda.tasks import duties, settings as task_settings

    duties.attach(runner, settings or task_settings.Settings(), home)
    queued_log = QueuedAccessLog()
    if threading.current_thread() is threading.main_thread():
        freeze_start_up_objects()
    try:
        server.start(app, threads=threads)
        log.info("minipanda serving on %s://%s:%s (home %s, auth %s, %d threads, pid %d)", server.scheme, host,
                 server.effective_port, home, auth_mode, threads, os.getpid())
        runner.start()
        notifier.send("READY=1", f"STATUS=serving on {server.scheme}://{host}:{server.effective_port}")
        if ready is not None:
            ready(server)
        while not server.stop_requested.is_set():
            if signals.installed:
                signals.wait(1.0)
            else:
                server.stop_requested.wait(1.0)
            act_on_signals(signals, server, runner, reloader, notifier)
    finally:
        server.stop()
        runner.stop()
        if leader is not None:
            leader.close()
        queued_log.stop()
        lock.close()
        log.info("minipanda stopped")


def act_on_signals(signals, server, runner, reloader, notifier):
    """What the signals recorded since the last call ask for, done by the serving loop's own thread."""
    if signals.stop_signum is not None and not server.stop_requested.is_set():
        signals.ignore_further()  # stopping now: a repeated stop is the same stop
        log.info("received %s; stopping", signals.stop_name)
        notifier.send("STOPPING=1")
        server.request_stop()
        return
    if not signals.take_hangup():
        return
    if reloader is not None:
        log.info("received SIGHUP; re-reading the queue configuration")
        reloader.request()
        runner.wake("queue-config")
    else:
        log.info("received SIGHUP; no queue configuration file to re-read (start with --queues FILE)")


def freeze_start_up_objects():
    """Leave what the server holds once started (its modules, classes, the app, the models) out of every later
    garbage collection: a full collection walked all of it, ~35 ms each, about one per 5,000-job submission (a
    sixth of the request's CPU; bench/README.md, round 9). Only in a process that is the server (``serve`` on the
    main thread): the testbed runs serve on a thread of its own process, whose objects are its own business."""
    gc.freeze()
