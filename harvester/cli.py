"""The ``harvester`` command: run the agents, and look at what they did.

    harvester run --queues queues.yaml --server URL --token-file FILE [--home DIR] [--once]
    harvester status | workers | explain QUEUE | explain --worker ID | kill --queue Q | --worker ID
    harvester discover --ssh USER@HOST [--port P --key F --known-hosts F] | --local
"""
import argparse
import base64
import dataclasses
import functools
import getpass
import hashlib
import json
import logging
import os
import socket
import sys

from harvester import __version__
from harvester.errors import AlreadyRunning, HarvesterError
from queueconfig.errors import ConfigError
from queueconfig.service import Notifier, parse_with_settings_file, quiet_on_closed_pipe
from queueconfig.signals import SignalInbox

log = logging.getLogger("harvester")
DEFAULT_SERVER = "http://127.0.0.1:25080"


def default_home():
    return os.environ.get("HARVESTER_HOME") or os.path.join(os.path.expanduser("~"), ".harvester")


def parser():
    top = argparse.ArgumentParser(prog="harvester", description="minipanda harvester: provisions pilots on batch "
                                  "systems and relays for pilots whose node has no network. See docs/harvester.md.")
    top.add_argument("--version", action="version", version=f"harvester {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=default_home(), help="state directory: harvester.db, pilot zipapp, "
                        "worker directories (default $HARVESTER_HOME or ~/.harvester)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = functools.partial(sub.add_parser, parents=[common])

    run = add("run", help="run the agents (until SIGTERM/Ctrl-C, or one cycle with --once)",
              description="Keep every online queue supplied with pilots. Every option can also be a key of the "
                          "--config file; the command line wins.")
    run.add_argument("--config", metavar="FILE",
                     help="settings file (YAML): each option of this command as a key without its dashes (queues: "
                          "queues.yaml, token-file: ...), 'setting:' a mapping for --setting; relative paths are "
                          "taken from the file's directory. See docs/operations.md")
    run.add_argument("--queues", default=os.environ.get("HARVESTER_QUEUES"), metavar="FILE",
                     help="queue file (YAML/JSON, ours or Harvester's panda_queueconfig.json); reloaded when it "
                          "changes and on SIGHUP (default $HARVESTER_QUEUES); required, here or in --config")
    run.add_argument("--server", default=os.environ.get("MINIPANDA_URL", DEFAULT_SERVER),
                     help=f"the minipanda server (default $MINIPANDA_URL or {DEFAULT_SERVER})")
    run.add_argument("--token-file", default=os.environ.get("HARVESTER_TOKEN_FILE"),
                     help="file with a token of role harvester ('minipanda token create --role harvester --name "
                          "NAME'); default $HARVESTER_TOKEN_FILE; none for a server run with --auth none")
    run.add_argument("--harvester-id", help="this harvester's name on the server (default: the name of its "
                                            "harvester token, which the server holds it to; without one, host "
                                            "name plus a digest of --home, kept in the database)")
    run.add_argument("--once", action="store_true", help="run every agent exactly once, in cycle order, and exit "
                                                         "(cron, tests); exit code 1 when an agent failed")
    run.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. monitor_period=5 (see 'harvester settings')")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")

    add("settings", help="list the settings of 'run --setting' with their defaults")
    status = add("status", help="per queue: workers by state, held jobs, decisions, errors; agents")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    workers = add("workers", help="list workers")
    workers.add_argument("--queue", help="only this queue")
    workers.add_argument("--state", help="only this state (submitted, ready, running, idle, missing, finished, "
                                         "failed, cancelled, missed)")
    workers.add_argument("--limit", type=int, default=100, help="at most this many, newest first (default 100)")
    workers.add_argument("--json", action="store_true", help="a JSON list of worker objects")
    explain = add("explain", help="why a queue got N workers this cycle, or why a worker is where it is")
    explain.add_argument("queue", nargs="?", help="the queue")
    explain.add_argument("--worker", type=int, help="a worker id instead of a queue")
    explain.add_argument("--json", action="store_true", help="print JSON")
    discover = add("discover", help="read a Slurm login node's partitions and print a queue file for them",
                   description="Read partitions and nodes (sinfo, scontrol) over SSH or locally and print a queue "
                               "configuration that passes 'queueconfig lint' (queues start offline).")
    where = discover.add_mutually_exclusive_group(required=True)
    where.add_argument("--ssh", metavar="USER@HOST", help="the login node, over SSH")
    where.add_argument("--local", action="store_true", help="the Slurm this host is a client of")
    discover.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    discover.add_argument("--key", help="SSH private key file (default: the SSH agent and ~/.ssh keys)")
    discover.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    discover.add_argument("--accept-unknown-host", action="store_true", help="trust a host key not yet in "
                          "known_hosts, record it there, and write transport.accept_unknown_host into the queues")
    discover.add_argument("--prefix", default="", help="prefix of the queue names (default: none)")
    discover.add_argument("--workdir", help="base directory of worker directories on that host")
    database = sub.add_parser("db", help="the harvester database: consistent backups").add_subparsers(
        dest="db_command", required=True, metavar="ACTION")
    backup = database.add_parser("backup", parents=[common], help="copy harvester.db while harvester runs (SQLite's "
                                 "online backup API); restore by putting the copy in place with harvester stopped")
    backup.add_argument("file", help="where to write the copy (written as FILE.part, renamed when whole)")
    kill = add("kill", help="ask the running harvester to kill workers (the sweeper does it)")
    kill.add_argument("--queue", help="every live worker of this queue")
    kill.add_argument("--worker", type=int, action="append", help="this worker (repeatable)")
    return top


@quiet_on_closed_pipe
def main(argv=None):
    try:
        args = parse_with_settings_file(parser(), argv, ("run",), check_setting=_check_setting)
    except ConfigError as exc:
        print("\n".join(exc.errors + [f"{len(exc.errors)} error(s) in {exc.source}"]), file=sys.stderr)
        return 2
    home = os.path.abspath(os.path.expanduser(args.home))
    try:
        if args.command == "run":
            return run(args, home)
        if args.command == "settings":
            return show_settings()
        if args.command == "discover":
            return discover(args)
        from harvester import db  # peewee: for the commands that read the database (tests/test_cli_startup.py)

        path = os.path.join(home, "harvester.db")
        if not os.path.exists(path):
            print(f"harvester: no harvester database at {path} (has 'harvester run --home {home}' run?)",
                  file=sys.stderr)
            return 2
        if args.command == "db":
            print(f"{path} -> {args.file} ({db.backup(path, args.file) / 1e6:.1f} MB)")
            return 0
        db.open_database(path)
        from harvester import cli_tables

        return getattr(cli_tables, args.command)(args)
    except HarvesterError as exc:
        print(f"harvester: {exc}", file=sys.stderr)
        return 2


def _check_setting(key, value):
    """A ``setting:`` entry of the settings file: None, or why it cannot be used."""
    from harvester.context import Settings

    known = [f.name for f in dataclasses.fields(Settings)]
    if key not in known:
        return f"unknown setting; known settings: {', '.join(known)}"
    try:
        parse_settings([f"{key}={value}"])
    except HarvesterError as exc:
        return str(exc).replace(f"--setting {key}: ", "", 1)
    return None


def show_settings():
    from harvester.context import Settings

    for field in dataclasses.fields(Settings):
        print(f"{field.name:20} {field.default!r}")
    return 0


def discover(args):
    """``harvester discover``: print the queue file, or say on stderr why it cannot be made."""
    from harvester.discover import DiscoveryError, discover as read_slurm
    from harvester.transport import LocalTransport

    if args.local:
        section, transport = {"type": "local"}, LocalTransport()
    else:
        from harvester.transport.ssh import SshSettings, SshTransport

        user, _, host = args.ssh.rpartition("@")
        section = {"type": "ssh", "host": host, **({"port": args.port} if args.port != 22 else {}),
                   **({"user": user} if user else {}),
                   **({"key_file": os.path.abspath(args.key)} if args.key else {}),
                   **({"known_hosts": os.path.abspath(args.known_hosts)} if args.known_hosts else {}),
                   **({"accept_unknown_host": True} if args.accept_unknown_host else {})}
        transport = SshTransport(SshSettings(
            host=host, port=args.port, user=user or getpass.getuser(), key_file=section.get("key_file", ""),
            known_hosts=section.get("known_hosts") or os.path.expanduser("~/.ssh/known_hosts"),
            accept_unknown_host=args.accept_unknown_host))
    with transport:
        try:
            if not args.local:
                transport.connect()  # the connection's own error (unreachable, key, host key) is the clearest
            print(read_slurm(transport, section, args.prefix, args.workdir), end="")
        except DiscoveryError as exc:
            print(f"harvester discover: {exc}", file=sys.stderr)
            return 1
    return 0


def parse_settings(pairs):
    from harvester.context import Settings

    settings = Settings()
    known = {f.name: f for f in dataclasses.fields(Settings)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise HarvesterError(f"--setting {pair!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        kind = type(known[key].default)
        try:
            setattr(settings, key, kind(value))
        except ValueError:
            raise HarvesterError(f"--setting {key}: expected a {kind.__name__}, got {value!r}") from None
    return settings


def token_harvester_id(token_file):
    """The harvester id a harvester-role token speaks for (the server refuses any other), or None: no token, a
    token of another role (admin acts for any harvester), or a file that is not a token (the server says why)."""
    if not token_file:
        return None
    try:
        with open(token_file, encoding="utf-8") as handle:
            payload = handle.read().strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (OSError, IndexError, ValueError):
        return None
    if not isinstance(claims, dict) or claims.get("role") != "harvester":
        return None
    return claims.get("harvester_id") or claims.get("sub")


def harvester_id(option, home, token_file=None):
    """This harvester's name on the server: --harvester-id, else the one its harvester token is bound to, else the
    one kept in the database, else host name plus a digest of the home."""
    from harvester import models

    bound = token_harvester_id(token_file)
    if bound and option and option != bound:
        raise HarvesterError(f"--harvester-id {option}: the token in {token_file} speaks for harvester {bound} "
                             "only; leave --harvester-id out, or give this harvester a token made with "
                             f"'minipanda token create --role harvester --name {option}'")
    option = option or bound
    row = models.Setting.get_or_none(models.Setting.key == "harvester_id")
    if option:
        if row is not None and row.value != option:
            log.warning("harvester id %s replaces %s: the server knows this harvester's earlier workers under the "
                        "old id", option, row.value)
        if row is None or row.value != option:
            models.Setting.insert(key="harvester_id", value=option).on_conflict_replace().execute()
        return option
    if row is not None:
        return row.value
    value = f"{socket.gethostname()}-{hashlib.sha256(home.encode()).hexdigest()[:6]}"
    models.Setting.create(key="harvester_id", value=value)
    return value


def run(args, home):
    from harvester.context import Context
    from harvester.queues import QueueFile
    from harvester.runner import Runner
    from harvester.client import ServerClient
    from harvester import db

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings repeat what our own error says
    settings = parse_settings(args.setting)
    if not args.queues:
        raise HarvesterError("run: no queue file: give --queues FILE, 'queues: FILE' in the --config file, or "
                             "$HARVESTER_QUEUES")
    queue_file = QueueFile(args.queues)
    queue_file.load()  # no valid queue at all stops us here, before anything changes
    if args.token_file and not os.path.isfile(args.token_file):
        raise HarvesterError(f"--token-file {args.token_file}: no such file")
    os.makedirs(home, exist_ok=True)
    db.open_database(os.path.join(home, "harvester.db"))
    try:
        previous = db.acquire_instance()
    except AlreadyRunning as exc:
        raise HarvesterError(str(exc)) from None
    ident = harvester_id(args.harvester_id, home, args.token_file)
    server = ServerClient(args.server, args.token_file and os.path.abspath(args.token_file), ident,
                          settings.server_timeout)
    context = Context(home, server, settings, ident)
    queue_file.context = context
    queue_file.apply()
    runner = Runner(context, queue_file.check)
    log.info("harvester %s (%s) started on %s: home %s, server %s, %d queues%s", ident, __version__,
             socket.gethostname(), home, args.server, len(context.queues),
             f" (took over from {previous})" if previous else "")
    try:
        runner.recover()
        if args.once:
            errors = runner.run_cycle()
            failed = {name: error for name, error in errors.items() if error}
            for name, error in failed.items():
                print(f"harvester: agent {name} failed: {error}", file=sys.stderr)
            return 1 if failed else 0
        notifier = Notifier.from_environment(log)  # systemd (Type=notify)
        # The handlers only record (queueconfig/signals.py says why); this thread acts on them in serve_forever.
        signals = SignalInbox()
        signals.install()
        runner.start()
        notifier.send("READY=1", f"STATUS={len(context.queues)} queues, server {args.server}")
        try:
            runner.serve_forever(signals, on_hangup=queue_file.request)
        except KeyboardInterrupt:  # only before the inbox took SIGINT, or when it could not (not the main thread)
            pass
        signals.ignore_further()  # stopping now: a repeated stop is the same stop
        if signals.stop_signum is not None:
            log.info("received %s; stopping", signals.stop_name)
        notifier.send("STOPPING=1")
        stuck = runner.stop()
        if stuck:
            log.warning("agents still busy at exit: %s (their leases expire by themselves)", ", ".join(stuck))
        log.info("harvester %s stopped", ident)
        return 0
    finally:
        context.close()
        server.close()
        db.release_instance()
        db.close_database()


if __name__ == "__main__":
    sys.exit(main())
