"""The ``minipanda`` command: run the server, manage tokens, submit and inspect jobs.

Building the parser imports nothing heavy: each command imports what it needs when it runs (the server, the token
table, the HTTP client), so ``minipanda --help`` or a ``job list`` does not pay for the whole server's start-up
(tests/test_cli_startup.py holds it to that). A command that runs gets a parser of that command alone
(:data:`COMMANDS` says which function adds which): the others' parsers were ~30-40 ms of CPU at every start.
"""
import argparse
import importlib
import json
import logging
import os
import sys

from minipanda import __version__, errors
from minipanda.cli import options
from minipanda.cli.tables import print_table
from minipanda.core.roles import ROLES
from minipanda.errors import ClientError
from minipanda.server.home import DEFAULT_HOST, DEFAULT_PORT, home_dir
import queueconfig
from queueconfig.service import parse_with_settings_file, quiet_on_closed_pipe

EPILOG = """environment:
  MINIPANDA_HOME   home directory (database, signing secret, trf/); default ~/.minipanda
  MINIPANDA_URL    server URL for the job commands; default http://127.0.0.1:25080
  MINIPANDA_TOKEN  bearer token for the job commands (else <home>/admin.token when readable)
  MINIPANDA_QUEUES queue configuration file for 'serve' (see docs/queue-config.md)
"""


HOME_HELP = "home directory (default $MINIPANDA_HOME or ~/.minipanda)"
DB_HELP = "database URL (default sqlite:///<home>/minipanda.db), as given to 'serve'"


@quiet_on_closed_pipe
def main(argv=None):
    """Run the ``minipanda`` command; returns its exit status."""
    parser = build_parser(only=command_named(argv))
    try:
        args = parse_with_settings_file(parser, argv, ("serve",), check_setting=_check_setting)
    except queueconfig.ConfigError as exc:
        print("\n".join(exc.errors + [f"{len(exc.errors)} error(s) in {exc.source}"]), file=sys.stderr)
        return 1
    if not getattr(args, "func", None):
        build_parser().print_help()  # every command's (``parser`` may hold only the one named)
        return 2
    logging.basicConfig(level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except (ClientError, errors.ConfigError, ValueError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"minipanda: error: {exc}", file=sys.stderr)
        return 1


def _check_setting(key, value):
    """A ``setting:`` entry of the settings file: None, or why it cannot be used."""
    from minipanda.tasks import settings as task_settings

    try:
        task_settings.check(key, value)
    except errors.SettingError as exc:  # the message names the setting; the file's message names it already
        return str(exc).replace(f"setting {key!r} is unknown", "unknown setting").replace(f"setting {key}: ", "")
    return None


def build_parser(only=None):
    """The ``minipanda`` parser. ``only``: the name of the command about to run: the other commands are left out,
    with the modules that add them (their parsers were ~10-20 ms of CPU at the start of every command; main()
    builds the whole parser when no command of that name ran: for help, for an error naming every command)."""
    parser = argparse.ArgumentParser(prog="minipanda", description="A small PanDA server: dispatch jobs to pilots.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minipanda {__version__}")
    sub = parser.add_subparsers(title="commands")
    if only is not None:  # an error of the command line names every command, as the whole parser's does
        parser.error = lambda message: build_parser().error(message)
    for names, add in COMMANDS:
        if only is None or only in names:
            add(sub)
    return parser


def command_named(argv):
    """The command ``argv`` (the arguments after ``minipanda``) runs when its first one names one, else None."""
    argv = sys.argv[1:] if argv is None else argv
    return argv[0] if argv and any(argv[0] in names for names, _ in COMMANDS) else None


def _add_serve(sub):
    serve = sub.add_parser("serve", help="run the server (PanDA protocol on /server/panda and /api/v1)",
                           description="Run the server until SIGTERM or Ctrl-C. Every option can also be a key of "
                                       "the --config file; the command line wins.")
    serve.add_argument("--config", metavar="FILE",
                       help="settings file (YAML): each option below as a key without its dashes (port: 25080, "
                            "max-body-mb: 64), 'setting:' a mapping for --setting; relative paths are taken from "
                            "the file's directory. See docs/operations.md")
    serve.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1, loopback)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 25080)")
    serve.add_argument("--db", help="database URL: sqlite:///PATH (default <home>/minipanda.db) or postgresql://...")
    serve.add_argument("--home", help="home directory (default $MINIPANDA_HOME or ~/.minipanda)")
    serve.add_argument("--auth", choices=["token", "none"], default="token",
                       help="'token' (default): bearer tokens with roles; 'none': everyone is admin, loopback only")
    serve.add_argument("--threads", type=int, default=8,
                       help="request threads (default 8; more only adds GIL contention on a small machine)")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (default 1); more than 1 needs PostgreSQL "
                            "(--db postgresql://...), see docs/operations.md")
    serve.add_argument("--leader-retry", type=float, default=10.0, metavar="S",
                       help="PostgreSQL: how often a server not running the duties checks whether it can take "
                            "them over (default 10 s)")
    serve.add_argument("--max-body-mb", type=float, default=64, help="largest request body accepted (default 64)")
    serve.add_argument("--server-name", action="append", default=[], metavar="NAME",
                       help="a host name clients use to reach this server (repeatable); with --auth none, requests "
                            "whose Host header names anything but loopback, localhost, --host or these are refused")
    serve.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                       help="a request body that brings nothing new for S seconds is refused with 408 (default 30); "
                            "bodies are read before a request thread is taken")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate chain (PEM); needs "
                                                          "--tls-key")
    serve.add_argument("--tls-key", metavar="FILE", help="the private key (PEM, unencrypted) of --tls-cert")
    serve.add_argument("--queues", default=os.environ.get("MINIPANDA_QUEUES"), metavar="FILE",
                       help="queue configuration (YAML/JSON, ours or Harvester's panda_queueconfig.json); default "
                            "$MINIPANDA_QUEUES. Re-read when it changes or on SIGHUP; without it, queues are "
                            "registered with default queuedata when a job first names them")
    serve.add_argument("--reload-period", type=float, default=10.0, metavar="S",
                       help="how often to check the queue configuration file for changes (default 10 s)")
    serve.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                       help="task-side tuning, repeatable: duty periods, watchdog timeouts, brokerage and scout "
                            "knobs (e.g. watchdog.sent_timeout=600), retention (e.g. retention.job_days=30); see "
                            "docs/tasks.md and docs/operations.md")
    serve.add_argument("--debug", action="store_true", help="debug logging")
    serve.set_defaults(func=cmd_serve)


def _add_token(sub):
    token = sub.add_parser("token", help="create, list and revoke bearer tokens").add_subparsers(title="token")
    create = token.add_parser("create", help="print a new signed token")
    create.add_argument("--role", required=True, choices=list(ROLES),
                        help="admin, production, pilot, harvester (runs pilots and relays for them) or user")
    create.add_argument("--name", required=True, help="user name carried by the token")
    create.add_argument("--days", type=float, default=30, help="validity in days (default 30)")
    create.add_argument("--home", help=HOME_HELP)
    create.add_argument("--db", help=DB_HELP)
    create.set_defaults(func=cmd_token_create)
    tlist = token.add_parser("list", help="list tokens and whether they are revoked")
    tlist.add_argument("--home", help=HOME_HELP)
    tlist.add_argument("--db", help=DB_HELP)
    tlist.set_defaults(func=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke a token by its id (jti), or every token of a name")
    revoke.add_argument("jti", nargs="?", help="the token id, as 'token create' and 'token list' show it")
    revoke.add_argument("--name", help="revoke every valid token carrying this name instead")
    revoke.add_argument("--home", help=HOME_HELP)
    revoke.add_argument("--db", help=DB_HELP)
    revoke.set_defaults(func=cmd_token_revoke)


def _add_db(sub):
    dbs = sub.add_parser("db", help="the server's database: consistent backups").add_subparsers(title="db")
    backup = dbs.add_parser("backup", help="copy a live SQLite database (and its archives) while the server runs",
                            description="Copy the SQLite database with SQLite's online backup API: the copy holds "
                                        "what was committed when it began, and the server keeps running. Archive "
                                        "month files are copied beside it (FILE's name without .db, then "
                                        "-archive-YYYY-MM.db). Restore by putting the copies in place of the "
                                        "originals while the server is stopped.")
    backup.add_argument("file", help="where to write the copy (written as FILE.part, renamed when whole)")
    backup.add_argument("--home", help=HOME_HELP)
    backup.add_argument("--db", help=DB_HELP)
    backup.add_argument("--no-archives", action="store_true", help="copy the database only, not the month archives")
    backup.set_defaults(func=cmd_db_backup)


def _add_job(sub):
    job = sub.add_parser("job", help="submit, list, show and kill jobs").add_subparsers(title="job")
    jsubmit = job.add_parser("submit", help="submit jobs from a JSON file (a job object or a list of them)")
    jsubmit.add_argument("file", help="a JSON file: one job object (PanDA JobSpec names) or a list of them")
    jlist = job.add_parser("list", help="list jobs, newest first")
    jlist.add_argument("--status", help="only jobs in this state (activated, running, finished, ...)")
    jlist.add_argument("--queue", help="only jobs of this queue (computingSite)")
    jlist.add_argument("--user", help="only jobs of this user (prodUserName)")
    jlist.add_argument("--task", type=int, help="jobs of one task (jediTaskID)")
    jlist.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50)")
    jshow = job.add_parser("show", help="show one job in full, with its state history")
    jshow.add_argument("panda_id", type=int, help="the job's PandaID")
    jkill = job.add_parser("kill", help="kill jobs: queued ones are cancelled, running ones told to stop")
    jkill.add_argument("panda_ids", type=int, nargs="+", help="PandaIDs of the jobs to kill")
    for command, func in ((jsubmit, cmd_job_submit), (jlist, cmd_job_list), (jshow, cmd_job_show),
                          (jkill, cmd_job_kill)):
        command.add_argument("--url", help="server URL (default $MINIPANDA_URL or http://127.0.0.1:25080)")
        command.add_argument("--token-file", help="file holding a bearer token")
        command.add_argument("--home", help=HOME_HELP)
        command.add_argument("--json", action="store_true", help="machine-readable output")
        command.set_defaults(func=func)


def _add_from(module):
    """A function adding the commands of ``module`` (its add_parsers), imported only when they are wanted."""
    def add(sub):
        importlib.import_module(module).add_parsers(sub)
    return add


# (the commands' names, the function adding them), in the order `minipanda --help` lists them
COMMANDS = (
    (("serve",), _add_serve),
    (("token",), _add_token),
    (("db",), _add_db),
    (("job",), _add_job),
    (("task", "dataset", "why", "retry-rule"), _add_from("minipanda.cli.tasks")),
    (("queue",), _add_from("minipanda.cli.queues")),
    (("worker", "harvester"), _add_from("minipanda.cli.harvester")),
    (("service-unit",), _add_from("minipanda.cli.service")),
    (("testbed",), _add_from("testbed.cli")),  # the one package that runs the server and harvester together
)


def cmd_serve(args):
    import faulthandler

    from minipanda.server import process
    from minipanda.tasks import settings as task_settings

    # a crash in native code (the HTTP server, sqlite3, a driver) leaves each thread's Python stack in the log
    faulthandler.enable()
    home = home_dir(args.home)
    process.serve(home, host=args.host, port=args.port, db_url=args.db, auth_mode=args.auth, threads=args.threads,
                 max_body_mb=args.max_body_mb, queues_file=args.queues, reload_period=args.reload_period,
                 settings=task_settings.Settings(task_settings.parse_overrides(args.setting)),
                 tls_cert=args.tls_cert, tls_key=args.tls_key, workers=args.workers,
                 leader_retry=args.leader_retry, body_timeout=args.body_timeout,
                 server_names=args.server_name)


def _open_db(args):
    from minipanda.core import db, schema

    home = home_dir(args.home)
    schema.open_database(args.db or db.default_url(home))
    return home


def cmd_db_backup(args):
    from minipanda.core import backup, db

    home = home_dir(args.home)
    for source, copy, size in backup.backup(args.db or db.default_url(home), args.file, not args.no_archives):
        print(f"{source} -> {copy} ({size / 1e6:.1f} MB)")


def cmd_token_create(args):
    from minipanda.core import auth

    home = _open_db(args)
    token, jti = auth.create_token(auth.load_secret(home), args.name, args.role, days=args.days)
    print(token)
    print(f"token id {jti} for {args.name} ({args.role}); revoke with: minipanda token revoke {jti}", file=sys.stderr)


def cmd_token_list(args):
    from minipanda.core import models

    _open_db(args)
    rows = [[t.jti, t.name, t.role, str(t.created)[:19], str(t.expires)[:19], "revoked" if t.revoked else "valid"]
            for t in models.Token.select().order_by(models.Token.created)]
    print_table(["jti", "name", "role", "created", "expires", "state"], rows)


def cmd_token_revoke(args):
    from minipanda.core import auth

    if (args.jti is None) == (args.name is None):
        raise ValueError("token revoke: give a token id or --name NAME, not both")
    _open_db(args)
    if args.name is not None:
        count = auth.revoke_tokens_named(args.name)
        if not count:
            raise ValueError(f"no valid token named {args.name}")
        print(f"revoked {count} token{'s' if count > 1 else ''} of {args.name}")
    elif not auth.revoke_token(args.jti):
        raise ValueError(f"no token with id {args.jti}")
    else:
        print(f"revoked {args.jti}")


_client = options.client


def cmd_job_submit(args):
    try:
        with open(args.file, encoding="utf-8") as handle:
            specs = json.load(handle)
    except ValueError as exc:
        raise ValueError(f"{args.file}: not valid JSON ({exc})") from None
    if isinstance(specs, dict):
        specs = [specs]
    results = _client(args).submit_jobs(specs)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(["PandaID", "jobDefinitionID", "jobName"], results)


def cmd_job_list(args):
    rows = _client(args).list_jobs(status=args.status, queue=args.queue, user=args.user, limit=args.limit,
                                   task_id=args.task)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    cols = ["PandaID", "jobStatus", "computingSite", "prodUserName", "attemptNr", "currentPriority", "stateChangeTime",
            "pilotErrorCode", "jobName"]
    print_table(cols, [[row.get(c) for c in cols] for row in rows])


def cmd_job_show(args):
    client = _client(args)
    (desc,) = client.describe_jobs([args.panda_id])
    if desc is None:
        raise ValueError(f"job {args.panda_id} not found")
    history = client.status_log(args.panda_id)
    if args.json:
        print(json.dumps({"job": desc, "history": history}, indent=1))
        return
    if desc.get("archived"):
        print(f"job {args.panda_id} is archived ({desc['archived']}): moved out of the live tables by the retention "
              "duty; shown read-only\n")
    for key in sorted(k for k, v in desc.items() if v not in (None, "", "NULL") and k not in ("Files", "archived")):
        print(f"{key:24} {desc[key]}")
    if desc["Files"]:
        print("\nfiles:")
        print_table(["type", "lfn", "fsize", "checksum", "status"],
                    [[f["type"], f["lfn"], f["fsize"], f["checksum"], f["status"]] for f in desc["Files"]])
    print("\nhistory:")
    print_table(["time", "from", "to", "reason"], [[h["time"], h["from"], h["to"], h["reason"]] for h in history])


def cmd_job_kill(args):
    results = _client(args).kill_jobs(args.panda_ids)
    for pid, done in zip(args.panda_ids, results):
        print(f"{pid}: {'kill registered' if done else 'not killed (unknown, already final, or not yours)'}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
