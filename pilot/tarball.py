"""The log tarball's writer: a job directory (and a slice of the pilot log) as a gzip-compressed tar, written once.

``tarfile`` spent most of a short job's tarball in Python (a TarInfo copied per member, owner names looked up, each
header built field by field: ~1 ms of a no-op job's ~7 ms of pilot CPU), while compressing its few kB took a
twentieth of that. Here each member's 512-byte header is packed at once in the GNU format ``tarfile.GNU_FORMAT``
writes (names over 100 bytes in a ``././@LongLink`` member, as GNU tar does), the bytes go through one
``zlib.compressobj`` into a gzip stream (RFC 1952: header, raw deflate, CRC-32 and size), and the size and adler32
of what is written are taken on the way (stage-out never reads the file again). Any tar or gzip reader reads it:
``tar xzf``, ``tarfile``, the monitor's log view.

What a payload left in its directory is hostile: a member is opened without following a link (``O_NOFOLLOW``) and
read to the size its open file had (a file that shrinks meanwhile is padded with zeros, one that grows is cut), a
symbolic link is stored as a link, never followed, and FIFOs, sockets and devices are left out (reading a FIFO
would block the pilot).

A :class:`Spool` holds what the writer writes in memory while it is small, so a short job's log goes to the server
without ever being a file: each file a pilot creates and deletes per job costs a new inode, 0.1-0.5 ms of CPU on a
file system without a journal under a pilot's churn, a metadata server's round trip on Lustre or NFS (bench/README.md,
round 10).
"""
import os
import stat
import threading
import time
import weakref
import zlib

from pilot.fileutil import create_exclusive

BLOCK = 512
RECORD = 20 * BLOCK  # the archive is padded to a whole record, as tar and tarfile do
CHUNK = 256 << 10  # bytes read from a member at a time
GNU_MAGIC = b"ustar  \0"
MAX_OCTAL = 8 ** 11  # sizes at or over this need GNU's base-256 field
LEVEL = 1  # deflate level: a third of level 6's CPU on text logs, ~20 % larger (bench/README.md, round 6)
MEMORY_MAX = 1 << 20  # bytes of one tarball held in memory (a larger one goes alone, by sendfile: pilot.wrapup)
MEMORY_HELD_MAX = 4 << 20  # bytes of all the in-memory tarballs of the process (the wrap-up holds up to 100 logs at
# once): the pilot's peak RSS stays under its 20 MB goal (bench/pilot_overhead.py)


class Writer:
    """A .tgz written to ``raw`` (a binary file object), with the size and adler32 of its bytes as written."""

    def __init__(self, raw, level=LEVEL, mtime=None):
        self.raw, self.size, self.adler = raw, 0, 1
        self.crc, self.length = 0, 0  # of the uncompressed tar stream (the gzip trailer)
        self.pending = bytearray()  # tar bytes not compressed yet
        self.deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        stamp = int(time.time() if mtime is None else mtime) & 0xFFFFFFFF
        self._out(b"\x1f\x8b\x08\x00" + stamp.to_bytes(4, "little") + (b"\x04" if level == 1 else b"\x00") + b"\x03")

    def _out(self, data):
        if data:
            self.adler = zlib.adler32(data, self.adler)
            self.size += len(data)
            self.raw.write(data)

    def _tar(self, data):
        """Bytes of the tar stream, compressed a CHUNK at a time (a short job's whole tarball in one call)."""
        self.pending += data
        if len(self.pending) >= CHUNK:
            self._compress()

    def _compress(self):
        data, self.pending = self.pending, bytearray()
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self._out(self.deflate.compress(data))

    def add_tree(self, path, arcname, keep=lambda name: True):
        """``path`` (a directory) as ``arcname`` and everything under it, in name order; ``keep(member name)``
        False leaves a member (and what is under it) out."""
        self._add(path, arcname, keep)

    def _add(self, path, name, keep):
        if not keep(name):
            return
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            self._header(name + "/", st, b"5", 0)
            for child in sorted(os.listdir(path)):
                self._add(os.path.join(path, child), f"{name}/{child}", keep)
        elif stat.S_ISLNK(st.st_mode):
            self._header(name, st, b"2", 0, os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            self.add_file(path, name)
        # FIFOs, sockets, devices: left out

    def add_file(self, path, name, offset=0, end=None, mode=None):
        """The regular file ``path`` as ``name``: its bytes from ``offset`` up to ``end`` (its size when None), as
        the open file holds them now (a log still being written may grow); nothing when it is not a regular file
        any more (replaced by a link meanwhile)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if os.path.islink(path):
                return
            raise exc
        with os.fdopen(fd, "rb", buffering=0) as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            offset = offset if 0 <= offset <= st.st_size else 0
            end = st.st_size if end is None else max(offset, min(end, st.st_size))
            size = end - offset
            self._header(name, st, b"0", size, mode=mode)
            if offset:
                handle.seek(offset)
            left = size
            while left > 0:
                data = handle.read(min(CHUNK, left))
                if not data:
                    break
                self._tar(data)
                left -= len(data)
            self._tar(bytes(left + (-size % BLOCK)))  # a file that shrank: zeros up to the size in its header

    def _header(self, name, st, kind, size, linkname="", mode=None):
        raw_name, raw_link = os.fsencode(name), os.fsencode(linkname)
        if len(raw_name) > 100:
            self._long(raw_name, b"L")
        if len(raw_link) > 100:
            self._long(raw_link, b"K")
        mode = stat.S_IMODE(st.st_mode) if mode is None else mode
        self._tar(_header(raw_name[:100], mode, st.st_uid, st.st_gid, size, max(0, int(st.st_mtime)), kind,
                          raw_link[:100]))

    def _long(self, raw, kind):
        data = raw + b"\0"
        self._tar(_header(b"././@LongLink", 0, 0, 0, len(data), 0, kind, b""))
        self._tar(data + bytes(-len(data) % BLOCK))

    def close(self):
        """The end of the archive (two zero blocks, padded to a record), the rest of the deflate stream and the
        gzip trailer."""
        self._tar(bytes(2 * BLOCK + (-(self.length + len(self.pending) + 2 * BLOCK) % RECORD)))
        self._compress()
        self._out(self.deflate.flush())
        self._out((self.crc & 0xFFFFFFFF).to_bytes(4, "little") + (self.length & 0xFFFFFFFF).to_bytes(4, "little"))

    @property
    def adler32(self):
        return f"{self.adler & 0xFFFFFFFF:08x}"


class Spool:
    """Where a log tarball's bytes go as a :class:`Writer` writes them (its ``raw``): memory while they fit
    (``limit`` bytes, and MEMORY_HELD_MAX for all the process's in-memory tarballs together), else the file
    ``path``, created exclusively (what memory held written first: it spills).

    After :meth:`close`, ``data`` holds the bytes of a tarball in memory (None once it is in its file,
    ``on_disk``); :meth:`keep` writes it to ``path`` (it has to stay on the node: an upload failed, a copytool
    needs a file), :meth:`drop` lets it go (the server holds it). The bytes it holds count against
    MEMORY_HELD_MAX until then, or until the Spool is gone.
    """

    _lock = threading.Lock()
    _held = [0]  # bytes held by every Spool of the process

    def __init__(self, path, limit=MEMORY_MAX):
        self.path, self.limit = path, limit
        self.buffer, self.file, self.data, self.on_disk = bytearray(), None, None, False
        self.size, self.adler32 = 0, None
        self._reserved = [0]  # bytes this Spool counts in _held (a cell: the finalizer must not refer to self)
        weakref.finalize(self, Spool._release, self._reserved)

    @classmethod
    def held(cls):
        """Bytes held in memory by every Spool of the process."""
        return cls._held[0]

    @classmethod
    def _reserve(cls, cell, count):
        with cls._lock:
            if cls._held[0] + count > MEMORY_HELD_MAX:
                return False
            cls._held[0] += count
            cell[0] += count
            return True

    @classmethod
    def _release(cls, cell):
        with cls._lock:
            cls._held[0] -= cell[0]
            cell[0] = 0

    def write(self, data):
        if self.file is None:
            if len(self.buffer) + len(data) <= self.limit and self._reserve(self._reserved, len(data)):
                self.buffer += data
                return
            self._spill()
        self.file.write(data)

    def _spill(self):
        self.file = create_exclusive(self.path)
        self.on_disk = True
        self.file.write(self.buffer)
        self.buffer = bytearray()
        self._release(self._reserved)

    def close(self, size, adler32):
        """The tarball is whole: its ``size`` and ``adler32`` (the Writer's)."""
        self.size, self.adler32 = size, adler32
        if self.file is not None:
            self.file.close()
        else:
            self.data, self.buffer = bytes(self.buffer), bytearray()

    def keep(self):
        """The tarball in its file (written now if memory held it); its path. OSError: not written, no part of it
        left."""
        if not self.on_disk:
            try:
                with create_exclusive(self.path) as handle:
                    handle.write(self.data)
            except OSError:
                self.discard()
                raise
            self.on_disk = True
            self.drop()
        return self.path

    def drop(self):
        """The bytes in memory let go (the server holds them)."""
        self.data = None
        self._release(self._reserved)

    def discard(self):
        """A tarball that failed: no part of it kept, in memory or on disk."""
        if self.file is not None:
            self.file.close()
        if os.path.lexists(self.path):
            os.unlink(self.path)
        self.buffer, self.on_disk = bytearray(), False
        self.drop()


def _number(value, width):
    """A header's numeric field: octal digits and a NUL, or GNU's base-256 for a size octal cannot hold."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _header(name, mode, uid, gid, size, mtime, kind, linkname):
    head = b"".join((
        name.ljust(100, b"\0"), _number(mode, 8), _number(uid, 8), _number(gid, 8), _number(size, 12),
        _number(mtime, 12), b" " * 8, kind, linkname.ljust(100, b"\0"), GNU_MAGIC, bytes(32 + 32 + 8 + 8 + 155 + 12)))
    checksum = sum(head)
    return head[:148] + b"%06o\0 " % checksum + head[156:]
