"""A reply that is a whole file on disk, sent by granian from its path (RSGI ``response_file``: read and written by
its Rust threads) instead of block by block through the server's loop and a request thread.

The WSGI app hands such a file over the standard way: bottle's ``static_file`` opens it and, seeing
``wsgi.file_wrapper`` in the environ, returns ``FileReply(handle)``. The bridge (minipanda.server.http) asks
:meth:`FileReply.sendable_path` for the path to give granian; the answer is None, and the reply is sent by blocks as
any other iterable, unless the handle is a regular file read from its start whose path still names that same file
(no rename, no symlink swapped in since the app opened and checked it). Files that never change once written (the
file store, the sandbox cache) are what this is for: granian opens the path again after this check.
"""
import os
import stat

BLOCK = 1 << 20  # bytes per block when the reply is sent by blocks after all


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


def sendable_path(result):
    """The path of a WSGI app's result that is a :class:`FileReply` (or wraps one as ``inner``) granian may send
    from, else None."""
    reply = getattr(result, "inner", result)
    return reply.sendable_path() if isinstance(reply, FileReply) else None
