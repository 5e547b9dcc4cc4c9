"""The durable outbox: final updates that could not be delivered, kept on disk until the server takes them.

Like DIRAC's failover request, a final update the server could not be reached for is written (atomically) as
``<work area>/outbox/final-<PandaID>-<attemptNr>.json``::

    {"path": "/server/panda/updateJob", "params": {...updateJob parameters...}, "spooled": <epoch>, "tries": n}

It is replayed by this pilot after each job and before it exits, by the next pilot started on the same work
area, or forwarded by harvester (POST ``params`` to ``path``, delete the file on StatusCode 0). Replays are safe:
the server answers a repeated final update with ``alreadyDone`` and counts it once. An entry the server refuses
for good (unknown job, invalid update) moves to ``outbox/rejected/`` so it is kept for inspection but not resent.
"""
import glob
import logging
import os
import time

from pilot.comm import CommError
from pilot.fileutil import atomic_write_json, read_json

log = logging.getLogger(__name__)
UPDATE_PATH = "/server/panda/updateJob"


class Outbox:
    """The outbox directory of a pilot work area."""

    def __init__(self, directory):
        self.directory = directory

    def put(self, params):
        """Spool one final update; return the entry's path."""
        os.makedirs(self.directory, exist_ok=True)
        name = f"final-{int(params['jobId'])}-{int(params.get('attemptNr') or 0)}.json"
        path = os.path.join(self.directory, name)
        atomic_write_json(path, {"path": UPDATE_PATH, "params": params, "spooled": time.time(), "tries": 0})
        log.warning("final update of job %s spooled to the outbox: %s", params["jobId"], path)
        return path

    def entries(self):
        """Paths of the spooled entries (in name order; the order of delivery does not matter)."""
        return sorted(glob.glob(os.path.join(self.directory, "final-*.json")))

    def replay(self, client):
        """Send every entry once; delete the delivered ones.

        Returns:
            (delivered, left): counts. Replay stops at the first network failure: the server is not back yet.
        """
        delivered = 0
        for path in self.entries():
            entry = read_json(path)
            if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
                log.error("outbox entry %s is unreadable; moved aside", path)
                self._reject(path)
                continue
            try:
                reply = client.update_job(entry["params"])
            except CommError as exc:
                if exc.transient:
                    log.info("outbox replay stopped, server not reachable yet: %s", exc)
                    self._count_try(path, entry)
                    break
                log.error("server refused outbox entry %s for good: %s", os.path.basename(path), exc)
                self._reject(path)
                continue
            log.info("outbox entry %s delivered (%s)", os.path.basename(path),
                     "already done" if reply.get("alreadyDone") else reply.get("command", "NULL"))
            _remove(path)
            delivered += 1
        return delivered, len(self.entries())

    def _count_try(self, path, entry):
        entry["tries"] = int(entry.get("tries", 0)) + 1
        if os.path.exists(path):
            atomic_write_json(path, entry)

    def _reject(self, path):
        rejected = os.path.join(self.directory, "rejected")
        os.makedirs(rejected, exist_ok=True)
        try:
            os.replace(path, os.path.join(rejected, os.path.basename(path)))
        except FileNotFoundError:
            pass


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:  # another pilot on the node replayed it at the same time
        pass
