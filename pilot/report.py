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

    ``{"0": {"PILOT_START_TIME": t, ...}, "<PandaID>": {"PILOT_PRE_GETJOB": t, ...}}``

    Marks are kept in memory; the pilot saves the file once per job and when it ends (writing it at every mark
    cost more CPU than the rest of a short job's bookkeeping), at most once a ``SAVE_EVERY_S`` after a job (a
    rename costs a short job more than its marks are worth meanwhile). A job's marks are encoded once, when the
    save after its end says it is done: the file grows with the pilot's jobs, its writing need not. Marks come from
    the job loop and from the wrap-up thread (pilot.finals): a lock keeps a save from reading a job's marks while
    they change.
    """

    SAVE_EVERY_S = 1.0

    def __init__(self, path):
        self.path = path
        self.data = {}
        self.encoded = {}  # key -> the JSON text of a finished job's marks
        self.saved_at = None  # monotonic time of the last write
        self.lock = threading.Lock()

    def mark(self, panda_id, name, when=None):
        with self.lock:
            self.data.setdefault(str(panda_id), {})[name] = time.time() if when is None else when

    def get(self, panda_id, name):
        return self.data.get(str(panda_id), {}).get(name)

    def save(self, done=None, now=False):
        """Write the file (``now``, or when the last write is ``SAVE_EVERY_S`` old); ``done``: the PandaID of a
        job whose marks will not change any more."""
        with self.lock:
            if done is not None and str(done) in self.data:
                self.encoded[str(done)] = self._entry(str(done))
            if not now and self.saved_at is not None and time.monotonic() - self.saved_at < self.SAVE_EVERY_S:
                return
            self.saved_at = time.monotonic()
            text = "{" + ",".join(self.encoded.get(key) or self._entry(key) for key in self.data) + "}"
        try:
            atomic_write_bytes(self.path, text.encode(), durable=False)
        except OSError as exc:
            log.warning("cannot write the timing file %s: %s", self.path, exc)

    def _entry(self, key):
        return json.dumps(key) + ":" + json.dumps(self.data[key], separators=(",", ":"))

    def pilot_timing(self, panda_id):
        """updateJob's pilotTiming: seconds of getjob|stagein|payload|stageout|initsetup|setup."""
        with self.lock:
            t = dict(self.data.get(str(panda_id), {}))
        start = self.data.get("0", {}).get("PILOT_START_TIME")

        def span(a, b):
            return int(round(t[b] - t[a])) if a in t and b in t else 0

        values = [span("PILOT_PRE_GETJOB", "PILOT_POST_GETJOB"), span("PILOT_PRE_STAGEIN", "PILOT_POST_STAGEIN"),
                  span("PILOT_PRE_PAYLOAD", "PILOT_POST_PAYLOAD"), span("PILOT_PRE_STAGEOUT", "PILOT_POST_STAGEOUT"),
                  int(round(t.get("PILOT_PRE_GETJOB", start or 0) - start)) if start else 0, 0]
        return "|".join(str(max(0, v)) for v in values)
