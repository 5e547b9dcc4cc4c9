"""What the long-running commands share beyond the queue file: a quiet end when the reader of their output goes
away, systemd's notify socket, and the settings file of ``minipanda serve`` and ``harvester run``.

queueconfig is the one package both the server and harvester import, and these belong to neither: they are how
each process is configured and run as a service (see docs/operations.md, "Running it for months").
"""
import argparse
import difflib
import functools
import os
import select
import socket
import sys

from queueconfig.errors import ConfigError, suggest_value


# ---- a closed pipe -----------------------------------------------------------------------------------------------

def stdout_reader_gone():
    """True when stdout is a pipe or socket whose reading end is closed (``cmd | head -1`` after head exits)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file descriptor behind stdout
        return False


def quiet_on_closed_pipe(main):
    """Wrap a command's ``main(argv)``: when the reader of stdout goes away (``minipanda job list | head -1``),
    stop at once, print nothing more and exit 0, as ``head`` asked for no more. A broken pipe elsewhere (a
    socket, a child's stdin) is a real error and is raised as it is."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            code = main(argv)
            sys.stdout.flush()  # a buffered tail is written here, inside the try, not at exit
            return code
        except BrokenPipeError:
            if not stdout_reader_gone():
                raise
            # Python flushes stdout once more at exit: point it at /dev/null so that flush has nowhere to fail.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return wrapped


# ---- systemd's notify socket ---------------------------------------------------------------------------------

class Notifier:
    """Tells systemd (a ``Type=notify`` unit) that this process is ready, or stopping: a datagram of
    ``KEY=VALUE`` lines to the unix socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
    socket), as ``sd_notify(3)`` does, without a library. Outside systemd there is no socket and nothing is sent.

    :meth:`from_environment` takes the variable out of ``os.environ``, so that the processes this one starts
    (local pilots, their payloads) never speak for it.
    """

    def __init__(self, address=None, logger=None):
        self.address, self.log = address or None, logger

    @classmethod
    def from_environment(cls, logger=None):
        return cls(os.environ.pop("NOTIFY_SOCKET", None), logger)

    def send(self, *lines):
        """Send ``READY=1``, ``STOPPING=1``, ``STATUS=...``; True when sent. A failure is logged, never raised: a
        service must not stop because its supervisor's socket went away."""
        if not self.address:
            return False
        if self.address.startswith("@"):
            target = "\0" + self.address[1:]  # an abstract socket: a name, not a file
        elif self.address.startswith("/"):
            target = self.address
        else:
            self._warn(f"NOTIFY_SOCKET {self.address!r}: only a path or an @abstract name is supported")
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall("\n".join(lines).encode("utf-8"))
        except OSError as exc:
            self._warn(f"cannot tell systemd {', '.join(lines)} through {self.address}: {exc}")
            return False
        return True

    def _warn(self, text):
        if self.log is not None:
            self.log.warning(text)


# ---- the settings file of a command --------------------------------------------------------------------------

NOT_IN_A_FILE = ("help", "version", "config")


def subparser(parser, *path):
    """The argparse parser of the subcommand ``path`` (e.g. ``("run",)``) under ``parser``."""
    for name in path:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = actions[0].choices[name]
    return parser


def option_keys(parser):
    """{key as written in a settings file: its argparse action}: every long option of ``parser`` without its
    dashes (``max-body-mb``), and the same with underscores (``max_body_mb``)."""
    keys = {}
    for action in parser._actions:
        longs = [s[2:] for s in action.option_strings if s.startswith("--")]
        if not longs or longs[0] in NOT_IN_A_FILE:
            continue
        for name in longs:
            keys[name] = keys[name.replace("-", "_")] = action
    return keys


def read_settings_file(path, parser, check_setting=None, setting_option="setting"):
    """Read the settings file of the command whose argparse parser is ``parser``.

    The file is a YAML mapping: each key is one of the command's long options without its dashes
    (``port: 25080``, ``max-body-mb: 64``, ``tls-cert: /etc/...``), with a value of the option's type; a flag
    takes ``true`` or ``false``; ``setting:`` is a mapping of ``--setting KEY=VALUE`` pairs, each checked by
    ``check_setting(key, value)`` (which returns an error text or None). A relative path in a path option
    (``metavar`` FILE, or ``--home``/``--queues``) is taken from the file's directory; ``~`` is the user's home.

    Returns:
        {argparse dest: value}, ready for ``parser.set_defaults`` (so that the command line still wins).

    Raises:
        ConfigError: every problem at once, each as ``FILE:LINE: key: what is wrong; did you mean ...``.
    """
    from queueconfig.parsing import parse  # PyYAML: only a command given --config pays for it

    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the settings file: {exc.strerror}"], path) from None
    document, lines = parse(content, path, syntax="yaml")
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: expected a mapping of option names to values, got {_kind(document)}"], path)
    keys, base = option_keys(parser), os.path.dirname(os.path.abspath(path))
    values, errors = {}, []
    for key, value in document.items():
        where = f"{path}:{lines[(key,)]}" if (key,) in lines else path
        action = keys.get(key) if isinstance(key, str) else None
        if action is None:
            close = difflib.get_close_matches(str(key), sorted(k for k in keys if "_" not in k), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(
                sorted(k for k in keys if "_" not in k))
            errors.append(f"{where}: {key}: unknown key; {hint}")
            continue
        if action.dest == setting_option:
            found, problems = _settings(value, check_setting)
            errors.extend(f"{path}:{lines.get((key, name), lines[(key,)])}: {key}{'.' if name else ''}{name}: "
                          f"{text}" for name, text in problems)
        else:
            found, problem = _typed(action, value)
            if problem:
                errors.append(f"{where}: {key}: {problem}")
            elif isinstance(found, str) and _is_path(action):
                found = os.path.join(base, os.path.expanduser(found))  # an absolute path stays as it is
        if action.dest in values:
            errors.append(f"{where}: {key}: the same option as an earlier key; keep one")
        values[action.dest] = found
    if errors:
        raise ConfigError(errors, path)
    return values


def _settings(value, check_setting):
    """(["KEY=VALUE", ...], [(key, problem)]) of a ``setting:`` mapping."""
    if not isinstance(value, dict):
        return [], [("", f"expected a mapping of setting names to values, got {_kind(value)} {value!r}")]
    pairs, problems = [], []
    for name, setting in value.items():
        if isinstance(setting, (dict, list)) or setting is None:
            problems.append((name, f"expected a single value, got {_kind(setting)}"))
            continue
        text = str(setting).lower() if isinstance(setting, bool) else str(setting)
        problem = check_setting(str(name), text) if check_setting else None
        if problem:
            problems.append((name, problem))
        pairs.append(f"{name}={text}")
    return pairs, problems


def _typed(action, value, single=False):
    """(value for the option, or an error text) of one key."""
    if isinstance(action, argparse._AppendAction) and not single:  # a repeatable option: a list, or one value
        found = []
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            one, problem = _typed(action, item, single=True)
            if problem:
                return None, f"[{index}]: {problem}" if isinstance(value, list) else problem
            found.append(one)
        return found, None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            return None, f"expected true or false, got {_kind(value)} {value!r}"
        return value if isinstance(action, argparse._StoreTrueAction) else not value, None
    if isinstance(value, (dict, list)) or value is None:
        return None, f"expected a single value, got {_kind(value)}"
    kind = action.type
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value,
                                                                                                       float)):
            expected = "a whole number" if kind is int else "a number"
            return None, f"expected {expected}, got {_kind(value)} {value!r}"
        value = kind(value)
    elif isinstance(value, bool):
        return None, (f"expected text, got boolean {value!r} (YAML reads yes/no/on/off/true/false as booleans: "
                      "put the value in quotes)")
    elif callable(kind):
        try:
            value = kind(str(value))
        except (TypeError, ValueError) as exc:
            return None, f"{value!r}: {exc}"
    else:
        value = str(value)
    if action.choices is not None and value not in action.choices:
        choices = [str(c) for c in action.choices]
        hint = suggest_value(str(value), choices)
        return None, f"{value!r} is not allowed; expected one of {', '.join(choices)}" + (f"; {hint}" if hint else "")
    return value, None


PATH_OPTIONS = ("home", "queues", "token-file", "tls-cert", "tls-key", "known-hosts", "key")


def _is_path(action):
    return action.metavar in ("FILE", "DIR") or any(s[2:] in PATH_OPTIONS for s in action.option_strings)


def _kind(value):
    return {bool: "boolean", int: "integer", float: "number", str: "text", list: "a list", dict: "a mapping",
            type(None): "nothing"}.get(type(value), type(value).__name__)


def parse_with_settings_file(parser, argv, path, check_setting=None):
    """``parser.parse_args(argv)``, with the defaults of the subcommand ``path`` taken from its ``--config`` file
    when one is given: the command line wins over the file, the file over the environment and the defaults."""
    args = parser.parse_args(argv)
    config = getattr(args, "config", None)  # only the command at ``path`` has --config
    if not config:
        return args
    command = subparser(parser, *path)
    command.set_defaults(**read_settings_file(config, command, check_setting))
    return parser.parse_args(argv)
