"""http.client's connection and reply with a lighter head: a request's head and small body in one send, a reply's
headers read without the email package. Standard library only.

``http.client`` parses every reply's headers with the email package (a feed parser, a policy, a Message): about
50 µs of the pilot's CPU per reply, more than the rest of reading it. Here the header lines are split by hand into
:class:`Headers` (``get``, ``get_all``, ``items``: what ``HTTPResponse`` and its callers use); everything else —
the status line, 100 Continue, chunked bodies, Content-Length, Connection: close, reading the body — is
http.client's own. A reply's server is as untrusted as any peer: its head is refused (``http.client.HTTPException``,
which the client turns into OSError) past MAX_LINE bytes per line, MAX_HEADERS lines or MAX_HEAD bytes in all, and
when it declares two different Content-Lengths (which of them frames the body would be a guess).

A connection resolves its host as bytes when the name is ASCII: ``socket.getaddrinfo`` encodes a str host with
the idna codec, whose first use imports ``encodings.idna``, ``stringprep`` and ``unicodedata`` (~0.3 MB resident) to
pass an ASCII name such as 127.0.0.1 through unchanged; a non-ASCII name still goes through it.

http.client also sends a request's head and its body in two ``send`` calls (two TCP segments on a TCP_NODELAY
socket: the server wakes up twice); a body of bytes up to ONE_SEND bytes goes out with its head in one.
"""
import socket

MAX_LINE = 65536  # bytes per header line, as http.client's _MAXLINE
MAX_HEADERS = 100  # header lines, as http.client's _MAXHEADERS
MAX_HEAD = 256 << 10  # bytes of all header lines together
ONE_SEND = 64 << 10  # a bytes body up to this size is sent with the request's head in one send


class Headers:
    """A reply's header fields in order; names compared without case, as email.message.Message compares them."""

    def __init__(self, fields):
        self._fields = fields  # [(name, value)]

    def get(self, name, default=None):
        """The first value of ``name``, or ``default``."""
        name = name.lower()
        for key, value in self._fields:
            if key.lower() == name:
                return value
        return default

    __getitem__ = get

    def get_all(self, name, default=None):
        """Every value of ``name`` in order, or ``default`` when there is none."""
        name = name.lower()
        values = [value for key, value in self._fields if key.lower() == name]
        return values or default

    def __contains__(self, name):
        return self.get(name) is not None

    def items(self):
        return list(self._fields)

    def keys(self):
        return [key for key, _ in self._fields]

    def values(self):
        return [value for _, value in self._fields]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._fields)


def read_headers(fp, client):
    """The header fields of a reply from the buffered reader ``fp``, up to and including its empty line.

    A line starting with a space or a tab continues the field before it (obsolete folding: joined by one space); a
    line without a colon, or whose name is empty or holds a space, is skipped (its content names no field the
    client reads: http.client's parser makes it a defect too). Raises ``client.LineTooLong`` or
    ``client.HTTPException`` past the limits, ``client.HTTPException`` for two different Content-Lengths.
    """
    fields, total, count = [], 0, 0
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            break
        count += 1
        total += len(line)
        if count > MAX_HEADERS:
            raise client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if total > MAX_HEAD:
            raise client.HTTPException(f"reply head larger than {MAX_HEAD} bytes")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, (value + " " + text.strip(" \t")).strip(" \t"))
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or " " in name or "\t" in name:
            continue
        fields.append((name, value.strip(" \t")))
    lengths = {value.strip() for name, value in fields if name.lower() == "content-length"}
    if len(lengths) > 1:
        raise client.HTTPException(f"reply declares {len(lengths)} different Content-Lengths: {sorted(lengths)}")
    return Headers(fields)


def create_connection(address, *args, **kwargs):
    """``socket.create_connection`` with an ASCII host name given as bytes (no idna codec: see the module's text)."""
    host, port = address
    if isinstance(host, str) and host.isascii():
        host = host.encode("ascii")
    return socket.create_connection((host, port), *args, **kwargs)


def lean_classes(client, connection_class):
    """(connection class, response class): ``connection_class`` (http.client's HTTPConnection or a TLS one) with
    :func:`read_headers` for its replies' heads and a small body sent with its head."""

    class LeanResponse(client.HTTPResponse):
        def begin(self):
            """http.client's ``begin`` with the head read by :func:`read_headers`."""
            if self.headers is not None:
                return
            while True:
                version, status, reason = self._read_status()
                if status != client.CONTINUE:
                    break
                read_headers(self.fp, client)  # a 100 Continue's own head, skipped
            self.code = self.status = status
            self.reason = reason.strip()
            if version in ("HTTP/1.0", "HTTP/0.9"):
                self.version = 10
            elif version.startswith("HTTP/1."):
                self.version = 11
            else:
                raise client.UnknownProtocol(version)
            self.headers = self.msg = read_headers(self.fp, client)
            encoding = self.headers.get("transfer-encoding")
            self.chunked = bool(encoding) and encoding.lower() == "chunked"
            self.chunk_left = None
            self.will_close = self._check_close()
            self.length = None
            length = self.headers.get("content-length")
            if length and not self.chunked:
                try:
                    self.length = int(length)
                except ValueError:
                    self.length = None
                if self.length is not None and self.length < 0:
                    self.length = None
            if status in (client.NO_CONTENT, client.NOT_MODIFIED) or 100 <= status < 200 or self._method == "HEAD":
                self.length = 0
            if not self.will_close and not self.chunked and self.length is None:
                self.will_close = True  # nothing frames the body but the end of the connection

    class LeanConnection(connection_class):
        response_class = LeanResponse

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = create_connection  # http.client's connect() calls it

        def _send_output(self, message_body=None, encode_chunked=False):
            if isinstance(message_body, bytes) and not encode_chunked and len(message_body) <= ONE_SEND:
                self._buffer.extend((b"", message_body))
                message = b"\r\n".join(self._buffer)
                del self._buffer[:]
                self.send(message)
                return
            super()._send_output(message_body, encode_chunked=encode_chunked)

    LeanConnection.__name__ = LeanConnection.__qualname__ = f"Lean{connection_class.__name__}"
    return LeanConnection, LeanResponse
