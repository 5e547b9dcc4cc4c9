"""File mode: the files exchanged with harvester in the worker's directory (names as pilot3 and Harvester use).

Harvester -> pilot: ``pandaJobData.out`` (``{PandaID: job}``), ``pilot_kill_payload`` (kill the running job).
Pilot -> harvester: ``worker_requestjob.json`` (``{"nJobs": 1}``), ``worker_attributes.json`` (each update),
``jobReport.json`` and ``event_status.dump.json`` (the end of a job), ``worker_pandaids.json`` (the PandaIDs run),
``worker_heartbeat.json`` (touched at each update: its mtime says the pilot is alive), ``kill_worker`` (the
pilot is done), ``worker_attributes-<PandaID>.json`` (a job's final attributes, kept per job). Every write is a
temporary file renamed into place, or (``worker_attributes.json`` and ``worker_pandaids.json``, rewritten job after
job) a kept one exchanged with it (pilot.fileutil.Rewriter): no new inode per report. Names can be changed with
queuedata ``handoff_files``.

Two threads write here (the job loop, and the wrap-up of ended jobs, pilot.wrapup): every shared file is written
under one lock, and ``worker_attributes.json`` keeps pilot3's shape (one job's dict) holding the NEWEST job's latest
attributes; a report of an older job (its final made by the wrap-up thread while the next job runs) never
overwrites it, and goes (in file mode) to that job's own ``worker_attributes-<PandaID>.json``, as every final does
there; a file of one job alone is written outside the lock.
"""
import json
import logging
import os
import threading
import time
import urllib.parse

from pilot.fileutil import Rewriter, atomic_touch, atomic_write_json, read_json

log = logging.getLogger(__name__)
FINAL_STATES = ("finished", "failed")
LIST_EVERY_S = 1.0  # worker_pandaids.json rewritten at most this often while jobs begin (always at the pilot's end)


class Handoff:
    """The harvester work directory of one worker.

    Args:
        directory: the access point (``--harvester-workdir``).
        names: queuedata ``handoff_files``.
    """

    def __init__(self, directory, names):
        self.directory, self.names = directory, names
        self.lock = threading.RLock()  # the job loop and the wrap-up thread both write
        self.order = {}  # PandaID -> its rank among the jobs this pilot began (begun later ranks higher)
        self.shown = -1  # the rank of the job worker_attributes.json speaks for
        self.unlisted = []  # PandaIDs begun and not in worker_pandaids.json yet
        self.listed_at = None  # monotonic time of its last write
        self.rewriters = {}  # key -> the Rewriter of a file rewritten at every report

    def path(self, key):
        return os.path.join(self.directory, self.names[key])

    def take_job(self):
        """The next job definition from the job file, or None when there is none (yet).

        The file holds ``{PandaID: job}`` (several allowed: one is taken, the rest written back), a plain job dict,
        or a URL-encoded query string. It is consumed: removed, or rewritten without the job taken.
        """
        path = self.path("job")
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        jobs = _parse_jobs(text)
        if not jobs:
            log.error("job file %s holds no job definition; moved aside", path)
            os.replace(path, path + ".bad")
            return None
        key = sorted(jobs)[0]
        rest = {k: v for k, v in jobs.items() if k != key}
        if rest:
            atomic_write_json(path, rest)
        else:
            os.unlink(path)
        job = dict(jobs[key])
        job.setdefault("PandaID", key)
        return job

    def request_job(self, n_jobs=1):
        """Ask harvester for another job."""
        atomic_write_json(self.path("request"), {"nJobs": n_jobs})

    def cancel_request(self):
        try:
            os.unlink(self.path("request"))
        except FileNotFoundError:
            pass

    def wait_for_job(self, wait, poll, sleep, stop):
        """Request a job and wait up to ``wait`` s for the job file; None on timeout or when ``stop()``."""
        self.request_job()
        deadline = time.monotonic() + wait
        while not stop():
            job = self.take_job()
            if job is not None:
                self.cancel_request()
                return job
            if time.monotonic() >= deadline:
                break
            sleep(min(poll, max(0.0, deadline - time.monotonic())))
        self.cancel_request()
        return None

    def write_attributes(self, update, final=False, own_file=True):
        """A job's latest state for harvester: the update without its file info, plus jobStatus.

        Into ``worker_attributes.json`` unless that speaks for a job begun later (then the update, from the wrap-up
        of an older job, would hide the running job from harvester); a final state, or an update kept out of that
        file, goes to the job's own ``worker_attributes-<PandaID>.json``, so no report is lost (``final``: the
        update is the job's last, whatever its state), fsync'd: harvester relays it for a pilot without network.
        Not written at all with ``own_file`` False (over HTTP: the final goes to the server, or to the fsync'd
        outbox when it cannot, and no one reads that file).
        """
        data = {k: v for k, v in update.items() if k != "xml"}
        data["jobStatus"] = update.get("state")
        panda_id = _panda_id(update.get("jobId"))
        with self.lock:
            rank = self._rank(panda_id)
            shown = rank >= self.shown
            if shown:
                self.shown = rank
                self._rewrite("attributes", data)
            else:
                log.debug("attributes of job %s kept in its own file: %s speaks for a job begun later", panda_id,
                          self.names["attributes"])
            own_file = own_file and panda_id is not None and (not shown or final or data["jobStatus"] in FINAL_STATES)
        if own_file:  # a file of this job alone: written (maybe with an fsync) outside the lock the job loop takes
            atomic_write_json(os.path.join(self.directory, final_attributes_name(self.names, panda_id)), data)

    def begin_job(self, panda_id, list_later=False):
        """Note a job the pilot begins (its rank for :meth:`write_attributes`) and list it for harvester: at once
        for the pilot's first job, else within ``LIST_EVERY_S`` (harvester reads the list as a hint; a rewrite of
        the whole list per short job cost the job loop more than the rest of its bookkeeping); see
        :meth:`list_panda_ids`. With ``list_later`` a write that is due waits for :meth:`list_if_due` (the job
        loop calls it once the job's payload runs, not between two payloads)."""
        with self.lock:
            self._rank(_panda_id(panda_id))
            if list_later and self.listed_at is not None:
                self.unlisted.append(panda_id)
            else:
                self.add_panda_id(panda_id, soon=True)

    def list_if_due(self):
        """Write the PandaIDs waiting to be listed when the last write is ``LIST_EVERY_S`` old."""
        with self.lock:
            if self.unlisted and (self.listed_at is None or time.monotonic() - self.listed_at >= LIST_EVERY_S):
                self.list_panda_ids()

    def _rank(self, panda_id):
        return self.order.setdefault(panda_id, len(self.order))

    def touch_heartbeat(self):
        """Harvester's liveness file: its modification time is the pilot's last sign of life (only the time
        counts, so the file is touched in place, not rewritten)."""
        path = self.path("heartbeat")
        try:
            os.utime(path)
        except FileNotFoundError:
            atomic_touch(path)

    def write_final(self, panda_id, update, report, outputs):
        """The end of a job: attributes (also kept per job: the next job of a multi-job pilot overwrites
        ``worker_attributes.json`` before harvester may have read it), job report and the outputs' locations
        (event_status.dump.json)."""
        with self.lock:
            # the outputs and the report before the final: harvester, which reads the outputs file again whenever
            # it reads a new final, then never sees a job's final without its outputs
            atomic_write_json(self.path("report"), report)
            status = read_json(self.path("event_status")) or {}
            status[str(panda_id)] = outputs
            atomic_write_json(self.path("event_status"), status)
            self.write_attributes(dict(update, jobId=update.get("jobId", panda_id)), final=True)

    def add_panda_id(self, panda_id, soon=False):
        """List ``panda_id`` in worker_pandaids.json now, or (``soon``) with the next write due."""
        with self.lock:
            self.unlisted.append(panda_id)
            if not soon or self.listed_at is None or time.monotonic() - self.listed_at >= LIST_EVERY_S:
                self.list_panda_ids()

    def list_panda_ids(self):
        """Write the PandaIDs not listed yet into worker_pandaids.json (the pilot calls it when it ends)."""
        with self.lock:
            if not self.unlisted:
                return
            ids = read_json(self.path("pandaids"))
            ids = ids if isinstance(ids, list) else []
            new = [panda_id for panda_id in dict.fromkeys(self.unlisted) if panda_id not in ids]
            self.unlisted, self.listed_at = [], time.monotonic()
            if new:
                # no fsync: harvester's own record of a pilot's jobs is the server's (getJob names the worker) or,
                # in push mode, its own job file; this list is a hint it reads
                self._rewrite("pandaids", ids + new)

    def _rewrite(self, key, data):
        """A file rewritten at every report, without an fsync (harvester reads the newest; a crash loses nothing
        the server does not hold), nor a new inode (pilot.fileutil.Rewriter)."""
        if key not in self.rewriters:
            self.rewriters[key] = Rewriter(self.path(key))
        self.rewriters[key].write(json.dumps(data, indent=1, sort_keys=True, default=str).encode("utf-8"))

    def close(self):
        """The pilot's end: the kept spare files removed."""
        with self.lock:
            for rewriter in self.rewriters.values():
                rewriter.close()

    def kill_requested(self):
        """True when harvester asks the running job to be killed."""
        return os.path.exists(self.path("kill_payload"))

    def touch_kill_worker(self):
        """Tell harvester the pilot is done."""
        atomic_touch(self.path("kill"))


def final_attributes_name(names, panda_id):
    """The per-job copy of a job's final attributes: ``worker_attributes.json`` -> ``worker_attributes-<id>.json``."""
    root, ext = os.path.splitext(names["attributes"])
    return f"{root}-{int(panda_id)}{ext}"


def final_attributes_id(names, filename):
    """The PandaID of a ``final_attributes_name`` file name, else None."""
    root, ext = os.path.splitext(names["attributes"])
    head, tail = root + "-", filename[len(root) + 1:len(filename) - len(ext) if ext else None]
    if filename.startswith(head) and filename.endswith(ext) and tail.isdigit() and tail.isascii():
        return int(tail)
    return None


def _panda_id(value):
    """A PandaID as an int (the job definition may give it as a string), else the value as it is."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _parse_jobs(text):
    try:
        data = json.loads(text)
    except ValueError:
        data = dict(urllib.parse.parse_qsl(text.strip(), keep_blank_values=True))
        return {str(data["PandaID"]): data} if data.get("PandaID") else {}
    if not isinstance(data, dict):
        return {}
    if "PandaID" in data:
        return {str(data["PandaID"]): data}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}
