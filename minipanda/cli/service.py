"""``minipanda service-unit serve|harvester``: a systemd unit for the server or for harvester, printed on stdout.

The unit runs the installed command (its absolute path, found beside this Python), as one user, with one
settings file (``--config``), ``Type=notify`` (both processes send READY=1 once they serve and STOPPING=1 when
asked to stop), ``Restart=on-failure`` and hardening that leaves only the home writable. See docs/operations.md.
"""
import getpass
import os
import pwd
import shutil
import sys

SERVICES = {
    # name: (command, its arguments before --home, home under the user's home directory, what the unit runs)
    "serve": ("minipanda", ["serve"], ".minipanda", "minipanda server (PanDA protocol, monitor, /metrics)"),
    "harvester": ("harvester", ["run"], ".harvester", "minipanda harvester (pilots on batch systems)"),
}
UNSAFE = "%$\\\"';"  # what systemd would read as a specifier, a variable, an escape, a quote or a separator


def add_parsers(sub):
    unit = sub.add_parser(
        "service-unit", help="print a systemd unit for 'serve' or for 'harvester run'",
        description="Print a systemd service unit on stdout, e.g. 'minipanda service-unit serve --user panda > "
                    "/etc/systemd/system/minipanda.service'. The unit runs the installed command as USER with "
                    "--home and --config, Type=notify, Restart=on-failure, and only the home writable.")
    unit.add_argument("service", choices=sorted(SERVICES), help="serve (the server) or harvester (harvester run)")
    unit.add_argument("--user", help="the user the service runs as (default: you)")
    unit.add_argument("--home", help="its home directory (default: ~USER/.minipanda, or ~USER/.harvester)")
    unit.add_argument("--config", help="its settings file (default: <home>/serve.yaml or <home>/harvester.yaml); "
                                       "see 'minipanda serve --help' and 'harvester run --help' for the keys")
    unit.add_argument("--exec", dest="executable", metavar="PATH",
                      help="the command to run (default: the installed minipanda or harvester command beside "
                           "this Python, else on $PATH)")
    unit.set_defaults(func=cmd_service_unit)


def installed_command(name):
    """The absolute path of the console script ``name`` of this installation, or None."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), name)
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return os.path.abspath(found) if found else None


def render(service, user, home, config, executable):
    """The unit file's text."""
    command, arguments, _, what = SERVICES[service]
    argv = [executable, *arguments, "--home", home, "--config", config]
    group = ""
    try:
        group = f"Group={pwd.getpwnam(user).pw_gid}\n"  # the user's own group, by number: no name to resolve
    except KeyError:
        pass
    # Harvester's local pilots are its children: a restart of harvester must leave them running (it follows
    # them again by their pid when it is back), so only the main process is stopped.
    kill_mode = "KillMode=process\n" if service == "harvester" else ""
    return f"""# {what}: written by 'minipanda service-unit {service}'
# Install: save as /etc/systemd/system/minipanda-{service}.service, then
#   systemctl daemon-reload && systemctl enable --now minipanda-{service}
# Settings: {config} (YAML; every option of '{command} {' '.join(arguments)} --help' as a key).
[Unit]
Description={what}
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={' '.join(argv)}
ExecReload=/bin/kill -HUP $MAINPID
User={user}
{group}Restart=on-failure
RestartSec=5
TimeoutStopSec=60
{kill_mode}LimitNOFILE=65536
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={home}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


def cmd_service_unit(args):
    command, _, home_name, _ = SERVICES[args.service]
    user = args.user or getpass.getuser()
    try:
        user_home = pwd.getpwnam(user).pw_dir
    except KeyError:
        raise ValueError(f"--user {user}: no such user on this host") from None
    home = os.path.abspath(args.home or os.path.join(user_home, home_name))
    config = os.path.abspath(args.config or os.path.join(home, f"{args.service}.yaml"))
    executable = args.executable or installed_command(command)
    if not executable:
        raise ValueError(f"the {command} command is not installed beside {sys.executable} nor on $PATH; "
                         "give its path with --exec")
    if not os.path.isabs(executable) or not os.access(executable, os.X_OK):
        raise ValueError(f"--exec {executable}: not an executable file given by its absolute path")
    missing = [path for path in (home, config) if not os.path.exists(path)]
    if missing:  # the unit's file system is read-only but for the home, which must exist for that
        print(f"note: create {' and '.join(missing)} (owned by {user}) before starting the service; see "
              "docs/operations.md", file=sys.stderr)
    for option, path in (("--home", home), ("--config", config), ("--exec", executable)):
        if any(c.isspace() or c in UNSAFE for c in path):
            raise ValueError(f"{option} {path}: a path with spaces or any of {UNSAFE} cannot be written into a unit "
                             "as it is (systemd expands them); choose another path")
    print(render(args.service, user, home, config, executable), end="")
