"""What the pilot reports: updateJob parameters (PanDA's names), the payload's job report, and timing.

The same dicts go over HTTP, into the outbox, and (without ``xml``) into ``worker_attributes.json``.
"""
import json
import logging
import os
import threading
import time

from pilot.fileutil import atomic_write_bytes, read_json

log = logging.getLogger(__name__)
METADATA_LIMIT = 4000  # the server keeps 4000 characters of metaData: send a job report that fits, as JSON


def utc(epoch):
    """PanDA's timestamp form (``time.strftime``: half the CPU of a datetime made for it, and the pilot need not
    load ``datetime``)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def update(job, state, identity):
    """The updateJob parameters every update carries.

    Args:
        job: the Job.
        state: starting | running | finished | failed.
        identity: dict with pilotID, batchID, node, siteName (the pilot's fixed facts).
    """
    params = {"jobId": job.panda_id, "state": state, "attemptNr": job.attempt_nr, "coreCount": job.core_count,
              "timestamp": utc(time.time())}
    params.update({k: v for k, v in identity.items() if v})
    return params


def fileinfo(files):
    """The final update's ``xml``: JSON text ``{lfn: {guid, fsize, adler32, surl}}`` of the staged-out files."""
    return json.dumps({spec.lfn: spec.fileinfo() for spec in files if spec.surl})


def event_status(files):
    """The handoff ``event_status.dump.json`` entries of the staged-out files."""
    return [{"type": spec.kind if spec.kind == "log" else "output", "path": spec.surl, "guid": spec.guid,
             "fsize": spec.fsize, "chksum": spec.adler32} for spec in files if spec.surl]


def read_job_report(job_dir):
    """The payload's ``jobReport.json`` when it wrote a valid one, else None."""
    report = read_json(os.path.join(job_dir, "jobReport.json"))
    if report is not None and not isinstance(report, dict):
        log.warning("jobReport.json is not a JSON object; ignored")
        return None
    return report


def shrink(report):
    """The job report without the bulky per-executor log reports (pilot3 does the same)."""
    report = dict(report)
    executors = report.get("executor")
    if isinstance(executors, list):
        report["executor"] = [dict(e, logfileReport={}) if isinstance(e, dict) else e for e in executors]
    return report


def metadata(report):
    """The metaData text: the shrunk report if it fits the server's column, else its essential keys."""
    text = json.dumps(shrink(report), sort_keys=True)
    if len(text) <= METADATA_LIMIT:
        return text
    essential = {k: report[k] for k in ("exitCode", "exitMsg", "exitAcronym") if k in report}
    essential["truncated"] = f"the job report held {len(text)} characters; see the log tarball"
    return json.dumps(essential)


def exit_info(report):
    """(exeErrorCode, exeErrorDiag) from a job report; (None, None) when it has none."""
    if not report:
        return None, None
    code = report.get("exitCode")
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    return code, str(report.get("exitMsg") or "")[:500] or None


def report_outputs(report):
    """{lfn: guid} the payload declared in its job report (files.output[].subFiles[])."""
    found = {}
    try:
        for entry in (report or {}).get("files", {}).get("output", []):
            for sub in entry.get("subFiles", []):
                if sub.get("name") and sub.get("file_guid"):
                    found[sub["name"]] = sub["file_guid"]
    except (AttributeError, TypeError):
        pass
    return found


class Timing:
    """Epoch times of the pilot's steps per job, kept in ``pilot_timing.json`` (pilot3's timing file shape).

    ``{"<PandaID>": {"PILOT_PRE_GETJOB": t, ...}, ..., "0": {"PILOT_START_TIME": t, ...}}``

    Marks are kept in memory; the pilot saves the file once per job and when it ends (writing it at every mark
    cost more CPU than the rest of a short job's bookkeeping), at most once a ``SAVE_EVERY_S`` after a job (a
    rename costs a short job more than its marks are worth meanwhile). Marks come from the job loop and from the
    wrap-up thread (pilot.finals): a lock keeps a save from reading a job's marks while they change.

    A pilot may run tens of thousands of short jobs, so neither its memory nor a save grows with them: a job done
    (``save(done=...)``) is encoded once, appended to the file's head at the next save, and forgotten but for the
    last :data:`KEEP_DONE` (read back by :meth:`get` and :meth:`marks`). Only the tail - the jobs still in hand and
    the pilot's own entry ``"0"``, whose marks still change - is rewritten in place at each save. The first save
    creates the file whole (through a temporary and a rename); later ones write one short piece at its end.
    """

    SAVE_EVERY_S = 1.0
    KEEP_DONE = 16  # done jobs whose marks stay readable (the job loop reads the last one's payload span)

    def __init__(self, path):
        self.path = path
        self.data = {}  # key -> marks of the pilot ("0") and of the jobs not yet done
        self.done = {}  # key -> marks of the last KEEP_DONE jobs done (insertion order: oldest first)
        self.pending = []  # JSON text of jobs done since the last save
        self.head_end = 0  # the file's size up to its tail (0: no file written yet)
        self.head_count = 0  # jobs in the file's head
        self.saved_at = None  # monotonic time of the last write
        self.lock = threading.Lock()

    def mark(self, panda_id, name, when=None):
        with self.lock:
            self.data.setdefault(str(panda_id), {})[name] = time.time() if when is None else when

    def marks(self, panda_id):
        """A copy of the marks of ``panda_id`` (a job in hand or among the last done), {} if none."""
        key = str(panda_id)
        with self.lock:
            return dict(self.data.get(key) or self.done.get(key) or {})

    def get(self, panda_id, name):
        return self.marks(panda_id).get(name)

    def save(self, done=None, now=False):
        """Write the file (``now``, or when the last write is ``SAVE_EVERY_S`` old); ``done``: the PandaID of a
        job whose marks will not change any more."""
        with self.lock:
            key = str(done) if done is not None else None
            if key is not None and key != "0" and key in self.data:
                self.pending.append(self._entry(key, self.data[key]))
                self.done[key] = self.data.pop(key)
                while len(self.done) > self.KEEP_DONE:
                    del self.done[next(iter(self.done))]
            if not now and self.saved_at is not None and time.monotonic() - self.saved_at < self.SAVE_EVERY_S:
                return
            self.saved_at = time.monotonic()
            try:
                self._write()
            except OSError as exc:
                log.warning("cannot write the timing file %s: %s", self.path, exc)

    def _write(self):
        """Append the jobs done since the last save to the head and rewrite the tail after them."""
        tail = [self._entry(key, marks) for key, marks in self.data.items() if key != "0"]
        if "0" in self.data:
            tail.append(self._entry("0", self.data["0"]))
        pending = len(self.pending)
        if self.head_end:
            head = self._joined(self.pending, self.head_count).encode()
            if self._append(head + (self._joined(tail, self.head_count + pending) + "}").encode()):
                self.head_end, self.head_count, self.pending = self.head_end + len(head), self.head_count + pending, []
                return
            log.warning("the timing file %s is gone or was cut by someone else: the marks of the jobs this pilot "
                        "wrote before are lost from it; written whole again", self.path)
        head = ("{" + self._joined(self.pending, 0)).encode()  # the first write, or again after the file was lost
        atomic_write_bytes(self.path, head + (self._joined(tail, pending) + "}").encode(), durable=False)
        self.head_end, self.head_count, self.pending = len(head), pending, []

    def _append(self, data):
        """Write ``data`` where the file's head ends (and end the file there); False if it is gone or cut."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(fd).st_size < self.head_end:
                return False
            os.pwrite(fd, data, self.head_end)
            os.ftruncate(fd, self.head_end + len(data))
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _joined(entries, before):
        """``entries`` as members of a JSON object, after ``before`` members."""
        return "".join(("," if before or i else "") + entry for i, entry in enumerate(entries))

    @staticmethod
    def _entry(key, marks):
        return json.dumps(key) + ":" + json.dumps(marks, separators=(",", ":"))

    def pilot_timing(self, panda_id):
        """updateJob's pilotTiming: seconds of getjob|stagein|payload|stageout|initsetup|setup."""
        t = self.marks(panda_id)
        start = self.get(0, "PILOT_START_TIME")

        def span(a, b):
            return int(round(t[b] - t[a])) if a in t and b in t else 0

        values = [span("PILOT_PRE_GETJOB", "PILOT_POST_GETJOB"), span("PILOT_PRE_STAGEIN", "PILOT_POST_STAGEIN"),
                  span("PILOT_PRE_PAYLOAD", "PILOT_POST_PAYLOAD"), span("PILOT_PRE_STAGEOUT", "PILOT_POST_STAGEOUT"),
                  int(round(t.get("PILOT_PRE_GETJOB", start or 0) - start)) if start else 0, 0]
        return "|".join(str(max(0, v)) for v in values)
