"""What this pilot did with its slot of the allocation, for harvester: ``worker_usage.json`` in its harvester
directory, rewritten (temporary file renamed into place) after a job (at most once a :data:`WRITE_EVERY_S`: a
rename per short job costs more than a record harvester reads once) and always when the pilot ends.

``{"version": 1, "up_s": s the pilot has lived, "payload_wall_s": s its payloads ran, "payload_cpu_s": CPU s of
its payloads and their children, "wait_s": up_s - payload_wall_s (asking for a job, staging, reporting),
"jobs_run": n, "ended": true once the pilot shut down, "jobs": [{"PandaID", "wall_s", "cpu_s"}, ...]}``

``jobs`` keeps the last :data:`MAX_JOBS` jobs; the totals count every job. Harvester sums the files of a worker's
pilots (harvester.handoff.usage); the time of the allocation no pilot covered is its drain.
"""
import json
import logging
import os
import time

from pilot.fileutil import atomic_write_bytes

log = logging.getLogger(__name__)
USAGE_FILE = "worker_usage.json"
VERSION = 1
MAX_JOBS = 200  # a long-lived pilot's file stays small; totals are kept apart
WRITE_EVERY_S = 1.0


class Usage:
    """The figures of one pilot, written to ``<directory>/worker_usage.json``.

    Args:
        directory: the pilot's harvester directory (``--harvester-workdir``).
        started: ``time.monotonic()`` when the pilot started.
    """

    def __init__(self, directory, started):
        self.path = os.path.join(directory, USAGE_FILE)
        self.started = started
        self.wall = self.cpu = 0.0
        self.jobs = []
        self.jobs_run = 0
        self.written_at = None  # monotonic time of the last write
        self.written_jobs = 0  # jobs_run when it was written

    def add_job(self, panda_id, wall_s, cpu_s, write=True):
        """Account for one job's payload; write the file unless it was written less than WRITE_EVERY_S ago (or,
        ``write`` False, leave that to :meth:`write_if_due`: the job loop calls it once the next payload runs)."""
        wall_s, cpu_s = max(0.0, float(wall_s or 0)), max(0.0, float(cpu_s or 0))
        self.wall, self.cpu, self.jobs_run = self.wall + wall_s, self.cpu + cpu_s, self.jobs_run + 1
        self.jobs = (self.jobs + [{"PandaID": panda_id, "wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3)}])[
            -MAX_JOBS:]
        if write:
            self.write_if_due()

    def write_if_due(self):
        """Write the file when jobs were added since the last write and that is WRITE_EVERY_S old."""
        if self.jobs_run != self.written_jobs and (
                self.written_at is None or time.monotonic() - self.written_at >= WRITE_EVERY_S):
            self.write()

    def write(self, ended=False):
        self.written_at, self.written_jobs = time.monotonic(), self.jobs_run
        up = max(self.wall, self.written_at - self.started)
        record = {"version": VERSION, "up_s": round(up, 3), "payload_wall_s": round(self.wall, 3),
                  "payload_cpu_s": round(self.cpu, 3), "wait_s": round(up - self.wall, 3),
                  "jobs_run": self.jobs_run, "ended": ended, "jobs": self.jobs}
        try:
            # compact: indented and sorted, the 200 jobs' entries cost a short job's loop more than the rest of it
            atomic_write_bytes(self.path, json.dumps(record, separators=(",", ":")).encode(), durable=ended)
        except OSError as exc:  # harvester then counts this pilot's slot as drained: said, never fatal
            log.warning("cannot write the usage file %s: %s", self.path, exc)


def children_cpu():
    """CPU seconds of the processes this pilot reaped so far (its payloads and the orphans it adopted)."""
    times = os.times()
    return times.children_user + times.children_system
