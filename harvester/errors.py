"""Every error harvester raises on purpose, in one place."""


class HarvesterError(Exception):
    """Base of harvester's own errors."""


class TransitionError(HarvesterError):
    """A worker status change that the transition table does not allow."""


class AlreadyRunning(HarvesterError):
    """Another live harvester holds this home's database."""


class ServerError(HarvesterError):
    """A call to the minipanda server did not succeed.

    Attributes:
        transient: True when trying again later can help (unreachable, timeout, 5xx); False when the server
            refused the request itself (4xx, ``success: false``).
    """

    def __init__(self, message, transient=True, status=None):
        super().__init__(message)
        self.transient, self.status = transient, status


class MessengerError(HarvesterError):
    """A handoff file in a worker's access point is missing what it must hold, or is not valid."""
