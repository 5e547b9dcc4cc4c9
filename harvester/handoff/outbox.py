"""The pilot's outbox, from harvester's side: a pull-mode pilot whose HTTP failed spools its updates in
``<access point>/outbox``; harvester claims them (a rename only one sender can win), forwards them to the server and
then forgets them (removes the claimed names). The pilot's side is :mod:`pilot.outbox` (one definition of the names).
"""
import json
import logging
import posixpath
import time

from harvester.errors import MessengerError
from harvester.transport import TransportError
from pilot import outbox as pilot_outbox
from pilot.fileutil import safe_name

log = logging.getLogger(__name__)


def claim(messenger, owner, stale_after=pilot_outbox.STALE_CLAIM, now=None):
    """Take the spooled updates of ``messenger``'s pilot to forward them: ``[(path, entry)]``.

    Each entry is renamed to ``<name>.<owner>.claimed`` (the pilot's replay no longer sees it, and a pilot
    replaying it at the same moment loses the rename: only one sends it); the renames and the reads of what was
    claimed are one call. Entries this owner claimed before (a crashed run) are returned again; another
    sender's claim older than ``stale_after`` s is taken over. ``entry`` is ``{"path", "params", "spooled",
    "tries", "kind"}``, kind 'final' or 'heartbeat'; a heartbeat of a job whose final update is here too is
    dropped. Then :func:`forget` the paths once the server acknowledged them. Unreadable or refused entries
    (symlinks, over the size cap, not JSON) go to ``rejected/``.
    """
    if not safe_name(owner) or not pilot_outbox.CLAIMED.match(f"final-0-0.json.{owner}.claimed"):
        raise MessengerError(f"outbox owner {owner!r} is not a plain name")
    now = time.time() if now is None else now
    renames, claimed, snapshot, outbox_dir = [], [], messenger.snapshot, messenger.outbox_dir
    for name in snapshot.names_in(outbox_dir) if snapshot else []:
        path, entry = f"{outbox_dir}/{name}", snapshot.entries[f"{outbox_dir}/{name}"]
        match = pilot_outbox.CLAIMED.match(name)
        if match and match.group("owner") == owner:
            claimed.append(path)
        elif match and now - entry.ctime > stale_after:
            log.warning("outbox entry %s claimed by %s long ago; taken over", path, match.group("owner"))
            renames.append((path, f"{outbox_dir}/{match.group('name')}.{owner}.claimed"))
        elif pilot_outbox.ENTRY.match(name):
            renames.append((path, f"{path}.{owner}.claimed"))
    if not renames and not claimed:
        return []
    targets = claimed + [new for _, new in renames]
    root, rel = messenger.root, messenger.rel
    ops = [{"op": "rename", "root": root, "src": rel(old), "dst": rel(new)} for old, new in renames]
    ops.append({"op": "read", "root": root, "paths": [rel(p) for p in targets], "limit": messenger.limit})
    results = messenger.files(ops, f"claiming {outbox_dir}")
    lost = {new for (old, new), result in zip(renames, results) if not result.get("ok")}
    files = results[-1].get("files", {}) if results[-1].get("ok") else {}
    taken, rejects = [], []
    for path in targets:
        if path in lost:
            continue  # the pilot (or another sender) took it first
        got = files.get(rel(path), {})
        entry = _outbox_entry(got.get("data"))
        if entry is None:
            log.error("outbox entry %s is unreadable (%s); moved to rejected/", path,
                      got.get("error") or "not an outbox entry")
            rejects.append(path)
            continue
        entry["kind"] = pilot_outbox.kind_of(posixpath.basename(path))
        taken.append((path, entry))
    if rejects:
        messenger.files([{"op": "rename", "root": root, "src": rel(p),
                          "dst": rel(f"{outbox_dir}/rejected/{posixpath.basename(p)}")} for p in rejects],
                        "moving refused outbox entries aside")
    finals = {str(e["params"].get("jobId")) for _, e in taken if e["kind"] == "final"}
    kept, obsolete = [], []
    for path, entry in taken:
        if entry["kind"] == "heartbeat" and str(entry["params"].get("jobId")) in finals:
            obsolete.append(path)  # the job's final update says more
        else:
            kept.append((path, entry))
    if obsolete:
        forget(messenger.transport, root, obsolete)
    return kept


def forget(transport, root, paths):
    """Remove claimed outbox entries (delivered, or superseded) below ``root``; only claimed names."""
    rels = []
    for path in paths:
        path = posixpath.normpath(path)
        if not path.startswith(root.rstrip("/") + "/") or not pilot_outbox.CLAIMED.match(posixpath.basename(path)):
            raise MessengerError(f"{path} is not a claimed outbox entry below {root}")
        rels.append(path[len(root.rstrip("/")) + 1:])
    try:
        [result] = transport.files([{"op": "remove", "root": root, "paths": rels}])
    except TransportError as exc:
        raise MessengerError(f"removing delivered outbox entries: {exc}") from None
    if not result.get("ok"):
        raise MessengerError(f"removing delivered outbox entries: {result.get('error')}")


def _outbox_entry(data):
    if data is None:
        return None
    try:
        entry = json.loads(data)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("params"), dict) else None
