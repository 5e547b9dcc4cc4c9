"""What one cycle sees of the access points of a queue: one listing, then only the handoff files that changed read.

:meth:`Snapshot.take` lists every access point of the claimed workers in ONE call (names, kinds, sizes, times),
then reads in ONE more call only the handoff files that changed since the previous snapshot (and none when nothing
did); a :class:`harvester.handoff.messenger.Messenger` answers from it. Every read is a
:mod:`harvester.transport.safefiles` operation run by the queue's transport (locally, or on the login node over SSH).

Every file a pilot wrote is hostile: nothing is followed through a symlink at any component, only regular files
under ``pilot.handoff_max_bytes`` are read, and a file that fails that is a :class:`HandoffRefused` naming the
file and why (the monitor fails the job it speaks for).
"""
import collections
import dataclasses
import functools
import posixpath
import re

from harvester.errors import HandoffRefused, MessengerError
from harvester.transport import TransportError
from pilot.fileutil import safe_name
from pilot.handoff import final_attributes_id
from pilot.queuedata import HANDOFF_FILES
from pilot.usage import USAGE_FILE

OUTBOX = "outbox"
DEFAULT_LIMIT = 1 << 20
# what a listing covers: <access point>/x, <access point>/{outbox,pilot-N}/x, <access point>/pilot-N/outbox/x
SCAN_DEPTH, SCAN_DESCEND = 4, (OUTBOX, "pilot-[0-9]*")


@dataclasses.dataclass(frozen=True)
class Entry:
    """A listed file: kind ('f' regular, 'd' directory, 'l' symlink, 'o' other), size, mtime, ctime (epoch s)."""

    kind: str
    size: int
    mtime: float
    ctime: float


class Snapshot:
    """What one listing showed of some access points, and the handoff files read with it.

    Attributes:
        entries: absolute path -> :class:`Entry` for everything listed.
        contents: absolute path -> bytes, or the :class:`HandoffRefused` that says why it was not read.
        reads: how many files were read from the submit host for this snapshot (the rest came from the previous).
    """

    def __init__(self, entries, contents, reads=0):
        self.entries, self.contents, self.reads = entries, contents, reads
        self.children = collections.defaultdict(list)
        for path in entries:
            parent, name = posixpath.split(path)
            self.children[parent].append(name)

    @classmethod
    def take(cls, transport, access_points, names=None, limit=DEFAULT_LIMIT, previous=None, usage_of=()):
        """List ``access_points`` (grouped by parent directory, one call in all) and read the handoff files that
        changed since ``previous`` (one more call, only when some did); the pilots' usage records
        (pilot.usage) only in the access points ``usage_of`` (the workers that ended: read once, not per job).

        Raises:
            MessengerError: the listing failed (the host is unreachable, a workers directory is unreadable).
        """
        names = handoff_names(names)
        groups = collections.defaultdict(list)
        for access_point in access_points:
            if access_point:
                parent, base = posixpath.split(posixpath.normpath(access_point))
                groups[parent].append(base)
        roots = sorted(groups)
        ops = [{"op": "scan", "root": root, "only": sorted(set(groups[root])), "depth": SCAN_DEPTH,
                "descend": list(SCAN_DESCEND)} for root in roots]
        try:
            results = transport.files(ops) if ops else []
        except TransportError as exc:
            raise MessengerError(f"cannot list the access points: {exc}") from None
        entries = {}
        for root, result in zip(roots, results):
            if not result.get("ok"):
                raise MessengerError(f"cannot list the access points in {root}: {result.get('error')}")
            for rel, kind, size, mtime, ctime in result["entries"]:
                entries[f"{root}/{rel}"] = Entry(kind, size, mtime, ctime)
        contents, wanted = {}, collections.defaultdict(list)
        old_entries = previous.entries if previous is not None else {}
        old_contents = previous.contents if previous is not None else {}
        usage_of = {posixpath.normpath(a) for a in usage_of if a}
        for path, entry in entries.items():
            if not _is_report(path, names) and not _is_usage(path, usage_of):
                continue
            if entry.kind != "f":
                what = "a symlink: never followed" if entry.kind == "l" else "not a regular file"
                contents[path] = HandoffRefused(f"{path} is {what}", path, "symlink" if entry.kind == "l"
                                                else "not_regular")
            elif entry.size > limit:
                contents[path] = _too_large(path, entry.size, limit)
            elif old_entries.get(path) == entry and path in old_contents:
                contents[path] = old_contents[path]
            else:
                root = next(r for r in roots if path.startswith(r + "/"))
                wanted[root].append(path[len(root) + 1:])
        _with_outputs_of_new_finals(wanted, entries, contents, names, limit)
        reads = sum(len(paths) for paths in wanted.values())
        if wanted:
            read_roots = sorted(wanted)
            try:
                results = transport.files([{"op": "read", "root": root, "paths": wanted[root], "limit": limit}
                                           for root in read_roots])
            except TransportError as exc:
                raise MessengerError(f"cannot read the pilots' files: {exc}") from None
            for root, result in zip(read_roots, results):
                if not result.get("ok"):
                    raise MessengerError(f"cannot read the pilots' files in {root}: {result.get('error')}")
                for rel, got in result["files"].items():
                    path = f"{root}/{rel}"
                    if path not in entries:  # an outputs file the listing had not seen yet (written meanwhile)
                        if "data" not in got:
                            continue
                        entries[path] = Entry("f", len(got["data"]), 0.0, 0.0)
                    contents[path] = got["data"] if "data" in got else HandoffRefused(
                        _refusal_text(got), path, got.get("code") or "invalid")
        return cls(entries, contents, reads)

    def names_in(self, directory):
        return sorted(self.children.get(directory.rstrip("/"), ()))



def handoff_names(names):
    """The handoff file names of a queue's ``pilot.handoff`` section (a queueconfig ``Handoff``, a dict of the same
    keys, or None), defaults filled in and each checked to be a plain name. The dict returned is shared: never
    change it."""
    return _checked_names(_given(names))


def _is_report(path, names):
    """True for the handoff files a snapshot reads: attributes, PandaIDs, job request, outputs, per-job finals."""
    name = posixpath.basename(path)
    parent = posixpath.basename(posixpath.dirname(path))
    if parent == OUTBOX:
        return False
    return name in (names["attributes"], names["pandaids"], names["request"], names["event_status"]) or \
        final_attributes_id(names, name) is not None


def _with_outputs_of_new_finals(wanted, entries, contents, names, limit):
    """Read ``event_status.dump.json`` again wherever a per-job final is read, whatever the listing said of it.

    The pilot writes a job's outputs before its final, but a listing is not one instant: it may stat the outputs
    file before the pilot rewrote it and the final after the pilot wrote it, and so keep the old outputs (from the
    previous snapshot, or none) for a job whose final it reads - and harvester would report the job finished
    without staging its outputs. Read after the listing, the outputs file is at least as new as any final listed.
    """
    for root, rels in list(wanted.items()):
        directories = {posixpath.dirname(rel) for rel in rels
                       if final_attributes_id(names, posixpath.basename(rel)) is not None}
        for directory in directories:
            rel = posixpath.join(directory, names["event_status"])
            entry = entries.get(f"{root}/{rel}")
            if rel in rels or (entry is not None and (entry.kind != "f" or entry.size > limit)):
                continue  # read already, or refused by the listing
            rels.append(rel)
            contents.pop(f"{root}/{rel}", None)


def _is_usage(path, access_points):
    """True for a pilot's usage record in one of ``access_points`` (its own, or a ``pilot-N`` directory's)."""
    if not access_points or posixpath.basename(path) != USAGE_FILE:
        return False
    parent = posixpath.dirname(path)
    return parent in access_points or (re.fullmatch(r"pilot-[0-9]+", posixpath.basename(parent)) is not None
                                       and posixpath.dirname(parent) in access_points)


def _too_large(path, size, limit):
    return HandoffRefused(f"{path} is {size} bytes, over the queue's limit of {limit} bytes "
                          "(pilot.handoff_max_bytes): not read", path, "too_large")


def _refusal_text(got):
    return got.get("error") or "refused"


def _given(names):
    given = names.model_dump() if hasattr(names, "model_dump") else dict(names or {})
    return tuple(sorted((k, v) for k, v in given.items() if isinstance(v, str)))


@functools.lru_cache(maxsize=64)
def _checked_names(given):
    """The handoff names (defaults filled in), each checked once per distinct set: the monitor makes a Messenger
    for every worker of every cycle. The dict returned is shared: never change it."""
    names = dict(HANDOFF_FILES, **{k: v for k, v in given if k in HANDOFF_FILES and v})
    for key, name in names.items():
        if not safe_name(name):
            raise MessengerError(f"handoff file name {key}={name!r} is not a plain file name")
    return names

