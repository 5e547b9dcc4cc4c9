"""The shared-file handoff with the pilot of one worker, in the worker's access point.

Harvester writes the queuedata, the job file, the job's inputs and its transformation there; the pilot (ours, or
PanDA pilot3 in harvester mode) writes its attributes, reports, outputs and, when its HTTP failed, its outbox
there. File names are the queue's ``pilot.handoff`` section; their meaning is pilot.handoff's (one definition
for both sides). Every file harvester writes is a temporary file renamed into place.

Nothing a job or a pilot names is used as a path: file names must be plain names (pilot.fileutil.safe_name) and
are joined to a directory harvester chose; anything else raises MessengerError naming the field. This module
keeps no state of its own (harvester's database does): every method reads the files as they are now.
"""
import functools
import json
import logging
import os
import re
import tempfile
import urllib.parse

from harvester import staging
from harvester.errors import MessengerError
from pilot import outbox as pilot_outbox
from pilot.fileutil import atomic_write_bytes, atomic_write_json, safe_name
from pilot.handoff import final_attributes_id
from pilot.payload import TRF_PATH
from pilot.queuedata import HANDOFF_FILES

log = logging.getLogger(__name__)

QUEUEDATA_FILE = "queuedata.json"  # bare queue dict: our --queuedata, pilot3 --queuedata-url (and its cache name)
SCHEDCONFIG_FILE = "schedconfig.json"  # {queue: dict}: pilot3 LOCAL_AGIS_SCHEDCONF
# pilot3 (generic user) downloads a transformation only from these bases; with HARVESTER_WORKDIR set it copies
# <workdir>/<name> instead, but the base is checked first. Our pilot accepts any host for /trf/user/.
PILOT3_TRF_BASE = "http://pandaserver-doma.cern.ch:25080/trf/user/"
FINAL_STATES = ("finished", "failed")


class Messenger:
    """The handoff files of one worker.

    Args:
        access_point: the worker's directory (the pilot's ``-a`` and ``--harvester-workdir``).
        names: the queue's ``pilot.handoff`` section (a queueconfig ``Handoff``) or a dict of the same keys.
    """

    def __init__(self, access_point, names=None):
        self.access_point = os.path.abspath(access_point)
        given = names.model_dump() if hasattr(names, "model_dump") else dict(names or {})
        self.names = _checked_names(tuple(sorted(given.items())))
        self.outbox_dir = os.path.join(self.access_point, "outbox")

    def path(self, key):
        return os.path.join(self.access_point, self.names[key])

    # ---- harvester -> pilot -------------------------------------------------------------------------------------
    def setup(self, queuedata):
        """Create the access point and write the queue's queuedata; return the path of ``queuedata.json``.

        Two files, because the pilots read two shapes: ``queuedata.json`` is the bare queue dict (our pilot's
        ``--queuedata``, also found by itself in file mode; pilot3's ``--queuedata-url``), ``schedconfig.json``
        is ``{queue: dict}`` (pilot3's ``LOCAL_AGIS_SCHEDCONF``; our pilot reads that shape too).
        """
        if not isinstance(queuedata, dict):
            raise MessengerError(f"queuedata must be a dict, got {type(queuedata).__name__}")
        queue = queuedata.get("nickname") or queuedata.get("name")
        if not safe_name(queue):
            raise MessengerError(f"queuedata nickname/name {queue!r} is not a plain queue name")
        os.makedirs(self.access_point, mode=0o770, exist_ok=True)
        atomic_write_json(os.path.join(self.access_point, SCHEDCONFIG_FILE), {queue: queuedata})
        path = os.path.join(self.access_point, QUEUEDATA_FILE)
        atomic_write_json(path, queuedata)
        return path

    def feed_jobs(self, jobs):
        """Write the job file ``{PandaID: job}`` and add the ids to ``worker_pandaids.json``.

        Returns False (and writes nothing) while the previous job file is still there: the pilot has not taken it.
        A transformation under ``/trf/user/`` whose script is already in the access point (put_transformation)
        is given pilot3's accepted base URL, the only base pilot3 takes; our pilot ignores the host.
        """
        data = {}
        for job in jobs:
            try:
                panda_id = int(job["PandaID"])
            except (KeyError, TypeError, ValueError):
                raise MessengerError(f"job without an integer PandaID: keys {sorted(job)[:20]}") from None
            data[str(panda_id)] = self._for_pilot3(dict(job))
        if not data:
            raise MessengerError("feed_jobs needs at least one job")
        path = self.path("job")
        if not self._create_new(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8")):
            return False
        ids = self.panda_ids()
        atomic_write_json(self.path("pandaids"), ids + [int(k) for k in data if int(k) not in ids])
        return True

    def _create_new(self, path, payload):
        """Write ``path`` only when it does not exist: a hard link of a complete temporary file (atomic)."""
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=self.access_point)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, path)  # fails if the pilot has not consumed the previous file: never overwritten
            except FileExistsError:
                return False
            except OSError:  # no hard links on this file system: check, then rename (harvester is the only feeder)
                if os.path.exists(path):
                    return False
                os.replace(tmp, path)
            return True
        finally:
            _remove(tmp)

    def _for_pilot3(self, job):
        name = _trf_name(job.get("transformation"))
        if name and os.path.isfile(os.path.join(self.access_point, name)):
            job["transformation"] = PILOT3_TRF_BASE + name
        return job

    def put_transformation(self, job, fetch):
        """Put the job's script in the access point when its transformation is the server's ``/trf/user/<name>``.

        Args:
            job: the job dict.
            fetch: callable(path) -> bytes; ``path`` is ``/trf/user/<name>``, relative to harvester's own server
                (the host in the job's URL is not trusted, as our pilot does).
        Returns:
            The script's path (``<access point>/<name>``, mode 755), or None for any other transformation.
        """
        trf = job.get("transformation")
        name = _trf_name(trf)
        if name is None:
            if _is_url(trf):
                log.info("transformation %r is not the server's /trf/user/: left to the pilot", trf)
            return None
        if not safe_name(name):
            raise MessengerError(f"transformation {str(trf)[:200]!r}: {name!r} is not a plain file name")
        data = fetch(f"/trf/user/{name}")
        if not isinstance(data, (bytes, bytearray)):
            raise MessengerError(f"fetch of /trf/user/{name} returned {type(data).__name__}, not bytes")
        path = os.path.join(self.access_point, name)
        atomic_write_bytes(path, bytes(data), mode=0o755)
        return path

    def stage_in(self, job, storage, copy_or_link="copy"):
        """The job's input files from the queue's shared input directory into the access point; see
        :func:`harvester.staging.stage_in`."""
        return staging.stage_in(self.access_point, job, storage, copy_or_link)

    # ---- pilot -> harvester -------------------------------------------------------------------------------------
    def job_requested(self):
        """nJobs the pilot asks for in ``worker_requestjob.json``; 0 without a request."""
        data = self._read("request")
        if data is None:
            return 0
        try:
            return max(0, int(data.get("nJobs", 1)))
        except (TypeError, ValueError):
            raise MessengerError(f"{self.path('request')}: nJobs is {data.get('nJobs')!r}, not a number") from None

    def read_attributes(self):
        return self._read("attributes")

    def read_job_report(self):
        return self._read("report")

    def read_event_status(self):
        return self._read("event_status")

    def kill_worker_requested(self):
        """True once the pilot says it is done (``kill_worker``)."""
        return os.path.exists(self.path("kill"))

    def last_heartbeat(self):
        """Epoch of the pilot's last sign of life (mtime of the heartbeat or attributes file), or None."""
        times = []
        for key in ("heartbeat", "attributes"):
            try:
                times.append(os.stat(self.path(key)).st_mtime)
            except FileNotFoundError:
                continue
        return max(times) if times else None

    def panda_ids(self):
        """The PandaIDs of ``worker_pandaids.json`` ([] without the file)."""
        path = self.path("pandaids")
        data = _read_json(path, list)
        try:
            return [int(x) for x in data or []]
        except (TypeError, ValueError):
            raise MessengerError(f"{path}: expected a list of PandaIDs, got {str(data)[:200]}") from None

    def _read(self, key):
        return _read_json(self.path(key), dict)

    def final_reports(self, storage=None):
        """The final updateJob parameters of every job the pilot ended (file mode), to send for it.

        From the per-job final attributes (and ``worker_attributes.json`` for pilot3, which keeps no per-job copy)
        plus the job's outputs from ``event_status.dump.json`` as ``xml`` (JSON ``{lfn: {guid, fsize, adler32,
        surl}}``, what the server's updateJob reads). With ``storage``, the outputs are first moved to the queue's
        output directory (``stage_out``) and their surl is where they are now.
        """
        finals = {}
        for name in sorted(os.listdir(self.access_point)):
            if final_attributes_id(self.names, name) is not None:
                data = _read_json(os.path.join(self.access_point, name), dict)
                if data is not None:
                    finals[str(data.get("jobId"))] = data
        current = self.read_attributes()
        if current is not None and str(current.get("jobId")) not in finals:
            finals[str(current.get("jobId"))] = current
        status = self.read_event_status() or {}
        reports = []
        for panda_id, data in sorted(finals.items()):
            state = data.get("state") or data.get("jobStatus")
            if state not in FINAL_STATES:
                continue
            params = {k: v for k, v in data.items() if k not in ("jobStatus", "xml")}
            params["state"] = state
            entries = status.get(panda_id) or []
            if not isinstance(entries, list):
                raise MessengerError(f"{self.path('event_status')}: job {panda_id} has {str(entries)[:100]}, "
                                     "not a list of files")
            if storage is not None:
                entries = self.stage_out(entries, storage)
            if entries:
                params["xml"] = json.dumps({os.path.basename(e["path"]): {
                    "guid": e.get("guid") or "", "fsize": e.get("fsize"), "adler32": e.get("chksum"),
                    "surl": e["path"]} for e in entries})
            reports.append(params)
        return reports

    def stage_out(self, outputs, storage):
        """The listed outputs from the access point to the queue's shared output directory; see
        :func:`harvester.staging.stage_out`."""
        return staging.stage_out(self.access_point, self.path("event_status"), outputs, storage)

    # ---- the pilot's outbox (pull mode, HTTP failed) -------------------------------------------------------------
    def claim_outbox(self, owner, stale_after=pilot_outbox.STALE_CLAIM):
        """Take the pilot's spooled updates to forward them: ``[(path, entry)]``.

        Each entry is renamed to ``<name>.<owner>.claimed`` (the pilot's replay no longer sees it, and a pilot
        replaying it at the same moment loses the rename: only one sends it). Entries this owner claimed before
        (a crashed run) are returned again; another sender's claim older than ``stale_after`` s is taken over.
        ``entry`` is ``{"path", "params", "spooled", "tries", "kind"}``, kind 'final' or 'heartbeat'; a
        heartbeat of a job whose final update is here too is dropped. Then call ``done(path)`` once the server
        acknowledged it, or ``release(path)`` to leave it for a later try. Unreadable entries go to ``rejected/``.
        """
        if not safe_name(owner) or not pilot_outbox.CLAIMED.match(f"final-0-0.json.{owner}.claimed"):
            raise MessengerError(f"outbox owner {owner!r} is not a plain name")
        if not os.path.isdir(self.outbox_dir):
            return []
        claimed = pilot_outbox.claim_all(self.outbox_dir, owner, stale_after)
        result = []
        for path in claimed:
            entry = _read_json_lenient(path)
            if entry is None:
                log.error("outbox entry %s is unreadable; moved to rejected/", path)
                self._reject(path)
                continue
            entry["kind"] = pilot_outbox.kind_of(os.path.basename(path))
            result.append((path, entry))
        finals = {str(e["params"].get("jobId")) for _, e in result if e["kind"] == "final"}
        kept = []
        for path, entry in result:
            if entry["kind"] == "heartbeat" and str(entry["params"].get("jobId")) in finals:
                self.done(path)  # the job's final update says more
            else:
                kept.append((path, entry))
        return kept

    def done(self, path):
        """The server acknowledged a claimed entry: delete it."""
        _remove(self._claimed(path))

    def release(self, path):
        """Give a claimed entry back for a later try (by harvester or the pilot); its try count goes up."""
        path = self._claimed(path)
        entry = _read_json_lenient(path)
        if entry is not None:
            entry["tries"] = int(entry.get("tries") or 0) + 1
            atomic_write_json(path, entry)
        pilot_outbox.unclaim(path)

    def _claimed(self, path):
        if os.path.dirname(os.path.abspath(path)) != self.outbox_dir or \
                not pilot_outbox.CLAIMED.match(os.path.basename(path)):
            raise MessengerError(f"{path} is not a claimed entry of {self.outbox_dir}")
        return os.path.abspath(path)

    def _reject(self, path):
        rejected = os.path.join(self.outbox_dir, "rejected")
        os.makedirs(rejected, exist_ok=True)
        os.replace(path, os.path.join(rejected, os.path.basename(path)))


@functools.lru_cache(maxsize=64)
def _checked_names(given):
    """The handoff names (defaults filled in), each checked once per distinct set: the monitor makes a Messenger
    for every worker of every cycle. The dict returned is shared: never change it."""
    names = dict(HANDOFF_FILES, **{k: v for k, v in given if k in HANDOFF_FILES and v})
    for key, name in names.items():
        if not safe_name(name):
            raise MessengerError(f"handoff file name {key}={name!r} is not a plain file name")
    return names


def _is_url(value):
    return isinstance(value, str) and bool(re.match(r"^https?://", value))


def _trf_name(trf):
    """``<name>`` of a transformation ``http(s)://<host>/trf/user/<name>``, else None."""
    if not _is_url(trf):
        return None
    match = TRF_PATH.match(urllib.parse.urlparse(trf).path)
    return match.group(1) if match else None


def _read_json(path, kind):
    """The JSON of ``path`` (None when it does not exist); MessengerError when it is not a JSON ``kind``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MessengerError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MessengerError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, kind):
        raise MessengerError(f"{path} holds a JSON {type(data).__name__}, expected {kind.__name__}")
    return data


def _read_json_lenient(path):
    try:
        entry = _read_json(path, dict)
    except MessengerError:
        return None
    return entry if entry is not None and isinstance(entry.get("params"), dict) else None


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
