"""A large request body not received yet: the app runs first without it (minipanda.server.bridge).

A body declared over the bridge's in-memory size (a file upload) waits while the app judges the request on its
headers: a request it refuses (no or a bad token, a file the token may not write, a name already stored) is
answered before any of the body is received, let alone spooled to disk (then the body is read and thrown away,
within bounds, for the client to finish its send and read the answer: RsgiBridge.linger). An app that reads the body stops there
(:class:`BodyWanted`: up to its first read it only judges), the loop receives the body and the app runs again with
it: a second token check and judgement per large upload, and no request thread held while a body arrives.
"""


def deferred(headers, in_memory):
    """Whether the app first runs without the request's body: a chunked one (no size to judge it by: it may be as
    large as any, and a client must not get a refusal's body received by chunking it) or one declared over
    ``in_memory`` bytes. Smaller declared bodies (every API call) are received first."""
    if "chunked" in (headers.get("transfer-encoding") or "").lower():
        return True
    declared = headers.get("content-length")
    return bool(declared) and declared.strip().isdigit() and int(declared) > in_memory


class BodyWanted(BaseException):
    """Raised through the app by a read of an Unreceived body: not an Exception, so that bottle lets it pass
    instead of answering 500, and a ``finally`` (a temporary file's removal) runs as for any error."""


WANTED = object()  # the bridge's outcome of a run whose app read an Unreceived body (nothing was answered)


class Unreceived:
    """wsgi.input of a large body not received yet (see :func:`deferred`): any read stops the app (BodyWanted)."""

    wanted = False  # read: the app goes on once the body is received (the access log waits for that run)

    def _want(self, *args):
        self.wanted = True
        raise BodyWanted()

    read = readinto = readline = _want

    def close(self):
        pass
