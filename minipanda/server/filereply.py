"""A reply that is a whole file on disk, handed to granian whole instead of block by block through the server's loop
and a request thread: a small one as bytes read from the handle the app opened, a larger one by its path (RSGI
``response_file``: read and written by granian's Rust threads).

The WSGI app hands such a file over the standard way: bottle's ``static_file`` opens it and, seeing
``wsgi.file_wrapper`` in the environ, returns ``FileReply(handle)``. The bridge (minipanda.server.bridge) takes a file
of at most WHOLE bytes from that handle (:func:`whole_content`); for a larger one it asks
:meth:`FileReply.sendable_path` for the path to give granian; the answer is None, and the reply is sent by blocks as
any other iterable, unless the handle is a regular file read from its start whose path still names that same file
(no rename, no symlink swapped in since the app opened and checked it). Files that never change once written (the
file store, the sandbox cache) are what the path is for: granian opens the path again after this check.
"""
import os
import stat

BLOCK = 1 << 20  # bytes per block when the reply is sent by blocks after all
WHOLE = 1 << 20  # a file of at most this many bytes is read whole on the request thread and handed over as bytes


class FileReply:
    """``wsgi.file_wrapper``: iterable by blocks like any WSGI reply; ``close()`` closes the file."""

    def __init__(self, handle, block_size=BLOCK):
        self.handle, self.block_size = handle, block_size

    def __iter__(self):
        return iter(lambda: self.handle.read(self.block_size), b"")

    def close(self):
        self.handle.close()

    def sendable_path(self):
        """The file's absolute path when granian may send it from there, else None."""
        name = getattr(self.handle, "name", None)
        if not isinstance(name, str) or not os.path.isabs(name):
            return None
        try:
            if self.handle.tell() != 0:
                return None
            opened, named = os.fstat(self.handle.fileno()), os.stat(name, follow_symlinks=False)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(named.st_mode) or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            return None
        return name


def whole_content(result):
    """The bytes of a WSGI app's :class:`FileReply` result (or one wrapping it as ``inner``) of at most WHOLE bytes,
    read from the handle the app opened (a regular file, from its start, read to its end); else None, the handle
    left at its start.

    granian sends such bytes as any reply; sending from the path costs it a file read by its blocking threads
    (handed to and from them per block) and ~0.4 ms more CPU per MB here (bench/README.md, "Round 7").
    """
    reply = getattr(result, "inner", result)
    if not isinstance(reply, FileReply):
        return None
    handle = reply.handle
    try:
        if handle.tell() != 0:
            return None
        opened = os.fstat(handle.fileno())
        size = opened.st_size
        if not stat.S_ISREG(opened.st_mode) or size > WHOLE:
            return None
        content = handle.read(WHOLE + 1)
    except (OSError, ValueError, AttributeError):
        return None
    if len(content) != size:  # it changed since the app measured it: sent as it is now, by blocks or from its path
        handle.seek(0)
        return None
    return content


def sendable_path(result):
    """The path of a WSGI app's result that is a :class:`FileReply` (or wraps one as ``inner``) granian may send
    from, else None."""
    reply = getattr(result, "inner", result)
    return reply.sendable_path() if isinstance(reply, FileReply) else None
