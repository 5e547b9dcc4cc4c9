"""The server's errors and the protocol values they carry: every exception class of ``minipanda/`` and PanDA's
StatusCode values live here, so routes, services and the CLI share one definition.

The pilot (standard library only, shipped alone) keeps its own copy of the wire values in ``pilot/wire.py``;
``tests/test_pilot_wire.py`` checks that both copies agree.
"""

# PanDA's StatusCode values (legacy reply family; the v1 family maps them to HTTP statuses).
SC_OK, SC_TIMEOUT, SC_NO_JOBS, SC_FAILED, SC_INVALID, SC_ROLE, SC_PERMISSION, SC_MISSING_KEY = (
    0, 10, 20, 30, 50, 60, 70, 80)
TOBEKILLED = "tobekilled"  # command=... in an update reply: the pilot must stop the job
# The states a pilot may report in updateJob.
PILOT_STATES = frozenset({"starting", "running", "holding", "transferring", "finished", "failed"})


class RequestError(ValueError):
    """A request the server refuses; ``code`` is the legacy StatusCode, ``http`` the v1 HTTP status."""

    def __init__(self, message, code=SC_INVALID, http=400):
        super().__init__(message)
        self.code, self.http = code, http


class BodyTooLarge(RequestError):
    """A request body over the server's size limit (HTTP 413)."""

    def __init__(self, limit):
        super().__init__(f"request body larger than the server's limit of {limit} bytes", SC_INVALID, 413)


class UnknownQueue(RequestError):
    """A job names a queue that the loaded queue configuration does not have."""


class AuthError(Exception):
    """A request without a usable token (HTTP 401) or without the needed role (HTTP 403)."""

    def __init__(self, message, http=401):
        super().__init__(message)
        self.http = http


class SpecError(ValueError):
    """A submitted job spec that cannot be accepted; ``errors`` lists every bad field by name."""

    def __init__(self, errors):
        super().__init__("; ".join(errors))
        self.errors = errors


class TaskParamError(ValueError):
    """Task parameters that cannot be accepted; ``errors`` names every bad field. ``code`` is PanDA's submit
    code (4 error, 2 duplicate)."""

    def __init__(self, errors, code=4):
        super().__init__("; ".join(errors))
        self.errors, self.code = errors, code


class InvalidTransition(ValueError):
    """A state change that the transition table does not allow."""


class TaskChanged(Exception):
    """The task left a generating state (killed, paused, finished) while the generator worked on it."""


class DatabaseConfigError(ValueError):
    """The database URL or the database found there cannot be used."""


class ConfigError(ValueError):
    """A server setting that cannot work; the message names it."""


class SettingError(ValueError):
    """A setting with an unknown name or a value that is not a number."""


class ServerLocked(ConfigError):
    """Another server already runs on this home or database."""


class ClientError(RuntimeError):
    """The server refused a call or could not be reached; the message says which and why."""
