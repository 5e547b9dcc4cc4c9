"""Field types for the queue schema, above all the strict ones for values that later reach a shell or a job script.

Each check raises ``ValueError`` with a message that says what is allowed and why, because the loader shows that
message to the site admin as it is.
"""
import ipaddress
import re
from types import MappingProxyType
from typing import Annotated, Mapping

from pydantic import AfterValidator, Field, PlainSerializer, StrictBool, StrictFloat, StrictInt

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SHELL_CHARS = set("`$;|&<>\\")
_CONDOR_LINE = re.compile(r"\+?[A-Za-z][A-Za-z0-9_.]*\s*=\s*\S.*")


def _matching(pattern, reason, doc):
    """A check that ``value`` matches ``pattern`` entirely, raising ``ValueError(reason)`` otherwise."""
    compiled = re.compile(pattern)

    def check(value):
        if not compiled.fullmatch(value):
            raise ValueError(reason)
        return value

    check.__doc__ = doc
    return check


name = _matching(
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}",
    "may contain only letters, digits and _ . - and must start with a letter or digit (at most 128 characters): "
    "queue and site names appear in URLs, file names and batch job names", "Check a queue or site name.")
token = _matching(
    r"[A-Za-z0-9_][A-Za-z0-9_.,+-]{0,127}",
    "may contain only letters, digits and _ . , + - (no spaces, quotes or shell characters) and must not start "
    "with '-': it is passed to the batch system's command line and written into the job script",
    "Check a batch token such as a partition, account or QOS name.")
user = _matching(
    r"[A-Za-z_][A-Za-z0-9_.-]{0,31}",
    "must be a login name (a letter or _, then letters, digits, _ . -; at most 32 characters): it is given to ssh "
    "and written into paths", "Check a login name.")
path = _matching(
    r"(?:/|~/?)[A-Za-z0-9_./~+@%,:=-]*",
    "must be an absolute path (or start with ~) made of letters, digits and _ . / ~ + @ % , : = - (no spaces, "
    "quotes or shell characters): paths are written into job scripts and batch/ssh commands, and several batch "
    "systems split their options on spaces", "Check a path on a local or remote machine.")
file_name = _matching(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
    "must be a plain file name (letters, digits, _ . -; no '/' and not starting with '.' or '-'): handoff files "
    "live directly in the worker's directory", "Check a plain file name (no directory part).")
program = _matching(
    r"[A-Za-z0-9_./+][A-Za-z0-9_./+-]{0,255}",
    "must be a program name or path (letters, digits, _ . / + -; not starting with '-'; no spaces, quotes or shell "
    "characters): it is run over ssh as one word", "Check a program name or path.")
env_name = _matching(
    r"[A-Za-z_][A-Za-z0-9_]{0,127}",
    "must be an environment variable name (a letter or _, then letters, digits or _)",
    "Check an environment variable name.")
url = _matching(
    r"(?:https?://|/)[^\s'\"`<>\\]*",
    "must be an http(s) URL or a path starting with '/' (relative to the server), without spaces, quotes or "
    "backslashes", "Check a URL (template) that the pilot fetches.")


def one_line(value):
    """Refuse control characters: a newline in a value would start a new line of the script it is written into."""
    if _CONTROL.search(value):
        raise ValueError("must be a single line without control characters (a newline would start a new line of "
                         "the job script or command this value is written into)")
    return value


def host(value):
    """Check a host name or IP address that reaches ssh or HTCondor command lines."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not value or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be a DNS host name (letters, digits, '-' and '.') or an IP address: it is given to "
                         "ssh and the batch system, where anything else could be read as an option or a command")
    return value


def host_port(value):
    """Check ``host`` or ``host:port``."""
    hostname, _, port = value.partition(":") if value.count(":") == 1 else (value, "", "")
    host(hostname)
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("must be host or host:port with a port from 1 to 65535")
    return value


def directive(value):
    """Check one extra batch directive of Slurm, PBS or LSF (HTCondor is checked by :func:`condor_directive`)."""
    one_line(value)
    found = sorted(_SHELL_CHARS.intersection(value))
    if found:
        raise ValueError(f"must not contain {' '.join(found)}: directives are copied verbatim into the job script "
                         "header and some batch systems hand them to a shell, where these characters run commands")
    if not value.startswith("-"):
        raise ValueError("must be a command-line option of the batch system, starting with '-' "
                         "(for example '--exclusive' or '-l nodes=1:ppn=8'); the '#SBATCH'/'#PBS'/'#BSUB' prefix "
                         "is added by minipanda")
    return value


def condor_directive(value):
    """Check one extra HTCondor submit-description line ``key = value``."""
    one_line(value)
    if "`" in value or not _CONDOR_LINE.fullmatch(value):
        raise ValueError("must be one HTCondor submit command 'key = value' (for example "
                         "'+MaxRuntime = 3600' or 'requirements = (OpSys == \"LINUX\")'), without backticks")
    return value


def freeze_mapping(value):
    """Return a read-only view of a validated mapping, so that a loaded queue cannot be changed in place."""
    return MappingProxyType(dict(value))


Count = Annotated[StrictInt, Field(ge=0)]
Positive = Annotated[StrictInt, Field(ge=1)]
Fraction = Annotated[StrictFloat, Field(ge=0.0)]
Seconds = Annotated[StrictFloat, Field(gt=0.0)]  # a whole number or a fraction
Flag = StrictBool
Name = Annotated[str, AfterValidator(name)]
Token = Annotated[str, AfterValidator(token)]
Host = Annotated[str, AfterValidator(host)]
HostPort = Annotated[str, AfterValidator(host_port)]
User = Annotated[str, AfterValidator(user)]
Path = Annotated[str, AfterValidator(path)]
Program = Annotated[str, AfterValidator(program)]
Url = Annotated[str, AfterValidator(url)]
FileName = Annotated[str, AfterValidator(file_name)]
OneLine = Annotated[str, AfterValidator(one_line)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Environment = Annotated[Mapping[Annotated[str, AfterValidator(env_name)], OneLine], AfterValidator(freeze_mapping),
                        PlainSerializer(dict)]
