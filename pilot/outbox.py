"""The durable outbox: final updates that could not be delivered, kept on disk until the server takes them.

Like DIRAC's failover request, a final update the server could not be reached for is written (atomically) as
``<work area>/outbox/final-<PandaID>-<attemptNr>.json``::

    {"path": "/server/panda/updateJob", "params": {...updateJob parameters...}, "spooled": <epoch>, "tries": n,
     "kind": "final"}

It is replayed by this pilot after each job and before it exits, by the next pilot started on the same work
area, or forwarded by harvester (POST ``params`` to ``path``, delete the file on StatusCode 0). Replays are safe:
the server answers a repeated final update with ``alreadyDone`` and counts it once. An entry the server refuses
for good (unknown job, invalid update) moves to ``outbox/rejected/`` so it is kept for inspection but not resent.

With harvester (``--harvester-workdir``), a running update that could not reach the server is kept as
``heartbeat-<PandaID>.json`` (the latest only; removed when an update gets through or the job ends) for harvester
to forward; the pilot never replays those itself.

Whoever sends an entry first claims it by renaming it to ``<name>.<owner>.claimed`` (a rename is atomic: only
one of the pilot and harvester wins, and neither glob matches a claimed name). A claim left by a sender that
died is given back after ``STALE_CLAIM`` s (its ctime: a rename updates it).
"""
import glob
import logging
import os
import re
import time

from pilot.comm import CommError
from pilot.fileutil import atomic_write_json, read_json

log = logging.getLogger(__name__)
UPDATE_PATH = "/server/panda/updateJob"
ENTRY = re.compile(r"^(final-\d+-\d+|heartbeat-\d+)\.json$")
CLAIMED = re.compile(r"^(?P<name>(?:final-\d+-\d+|heartbeat-\d+)\.json)\.(?P<owner>[A-Za-z0-9_][A-Za-z0-9._@-]*)"
                     r"\.claimed$")
STALE_CLAIM = 600.0


def kind_of(name):
    """'final' or 'heartbeat' for an entry (or claimed entry) file name."""
    return "heartbeat" if name.startswith("heartbeat-") else "final"


def claim(path, owner):
    """Rename the entry ``path`` to its claimed name; return that, or None when someone else took it first."""
    claimed = f"{path}.{owner}.claimed"
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    return claimed


def unclaim(claimed):
    """Give a claimed entry back under its own name (a newer entry of that name wins); return the name used."""
    directory, base = os.path.split(claimed)
    match = CLAIMED.match(base)
    if not match:
        raise ValueError(f"{claimed} is not a claimed outbox entry")
    original = os.path.join(directory, match.group("name"))
    if os.path.exists(original):  # a newer heartbeat, or the same final report spooled again: keep that one
        _remove(claimed)
    else:
        try:
            os.rename(claimed, original)
        except FileNotFoundError:
            pass
    return original


def release_stale(directory, max_age=STALE_CLAIM, now=None):
    """Give back every claim older than ``max_age`` s: its sender died before it could finish."""
    now = time.time() if now is None else now
    for path in glob.glob(os.path.join(directory, "*.claimed")):
        try:
            if CLAIMED.match(os.path.basename(path)) and now - os.stat(path).st_ctime > max_age:
                log.warning("outbox entry %s was claimed %.0f s ago and never sent; given back", path,
                            now - os.stat(path).st_ctime)
                unclaim(path)
        except FileNotFoundError:
            continue


def claim_all(directory, owner, stale_after=STALE_CLAIM):
    """Claim every final and heartbeat entry for ``owner`` (harvester forwarding them); return the claimed paths.

    Entries ``owner`` claimed before (it crashed) are included as they are; another sender's claim older than
    ``stale_after`` s is renamed to ``owner``'s (atomic: if that sender woke up, only one of them has it).
    """
    claimed, now = [], time.time()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        match = CLAIMED.match(name)
        try:
            if match and match.group("owner") == owner:
                claimed.append(path)
            elif match and now - os.stat(path).st_ctime > stale_after:
                log.warning("outbox entry %s claimed by %s long ago; taken over", path, match.group("owner"))
                mine = os.path.join(directory, f"{match.group('name')}.{owner}.claimed")
                os.rename(path, mine)
                claimed.append(mine)
            elif ENTRY.match(name):
                taken = claim(path, owner)
                if taken:
                    claimed.append(taken)
        except FileNotFoundError:
            continue
    return claimed


class Outbox:
    """The outbox directory of a pilot work area."""

    def __init__(self, directory):
        self.directory = directory

    def put(self, params):
        """Spool one final update; return the entry's path."""
        os.makedirs(self.directory, exist_ok=True)
        name = f"final-{int(params['jobId'])}-{int(params.get('attemptNr') or 0)}.json"
        path = os.path.join(self.directory, name)
        atomic_write_json(path, {"path": UPDATE_PATH, "params": params, "spooled": time.time(), "tries": 0,
                                 "kind": "final"})
        log.warning("final update of job %s spooled to the outbox: %s", params["jobId"], path)
        return path

    def put_heartbeat(self, params):
        """Keep the latest running update that did not reach the server, for harvester to forward."""
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"heartbeat-{int(params['jobId'])}.json")
        atomic_write_json(path, {"path": UPDATE_PATH, "params": params, "spooled": time.time(), "tries": 0,
                                 "kind": "heartbeat"})
        return path

    def drop_heartbeat(self, panda_id):
        """The server was reached again (or the job ended): the spooled heartbeat is obsolete."""
        _remove(os.path.join(self.directory, f"heartbeat-{int(panda_id)}.json"))

    def entries(self):
        """Paths of the spooled entries (in name order; the order of delivery does not matter)."""
        return sorted(glob.glob(os.path.join(self.directory, "final-*.json")))

    def replay(self, client):
        """Send every entry once; delete the delivered ones.

        Returns:
            (delivered, left): counts. Replay stops at the first network failure: the server is not back yet.
        """
        delivered = 0
        if os.path.isdir(self.directory):
            release_stale(self.directory)
        for path in self.entries():
            claimed = claim(path, f"pilot-{os.getpid()}")
            if claimed is None:  # harvester (or another pilot) is sending it
                continue
            entry = read_json(claimed)
            if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
                log.error("outbox entry %s is unreadable; moved aside", path)
                self._reject(claimed, path)
                continue
            try:
                reply = client.update_job(entry["params"])
            except CommError as exc:
                if exc.transient:
                    log.info("outbox replay stopped, server not reachable yet: %s", exc)
                    entry["tries"] = int(entry.get("tries", 0)) + 1
                    atomic_write_json(claimed, entry)
                    unclaim(claimed)
                    break
                log.error("server refused outbox entry %s for good: %s", os.path.basename(path), exc)
                self._reject(claimed, path)
                continue
            log.info("outbox entry %s delivered (%s)", os.path.basename(path),
                     "already done" if reply.get("alreadyDone") else reply.get("command", "NULL"))
            _remove(claimed)
            delivered += 1
        return delivered, len(self.entries())

    def _reject(self, claimed, path):
        rejected = os.path.join(self.directory, "rejected")
        os.makedirs(rejected, exist_ok=True)
        try:
            os.replace(claimed, os.path.join(rejected, os.path.basename(path)))
        except FileNotFoundError:
            pass


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:  # another pilot on the node replayed it at the same time
        pass
