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


class HandoffRefused(MessengerError):
    """A file from a pilot that harvester will not take: a symlink (at any component of its path), not a regular
    file, over the queue's size cap, outside the access point, or not what its name promises. The job it speaks
    for is failed with this message; the other workers go on.

    Attributes:
        path: the file (on the submit host).
        code: why (:mod:`harvester.transport.safefiles` codes: symlink, not_regular, too_large, ...; or invalid).
    """

    def __init__(self, message, path=None, code="invalid"):
        super().__init__(message)
        self.path, self.code = path, code
