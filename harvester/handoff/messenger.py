"""The handoff with the pilot of one worker, in the worker's access point on the submit host, through the transport.

Harvester writes the queuedata, the storage data, the job file, the job's inputs and its transformation there; the
pilot (ours, or PanDA pilot3 in harvester mode) writes its attributes, reports, outputs and, when its HTTP failed,
its outbox there. File names are the queue's ``pilot.handoff`` section; their meaning is pilot.handoff's (one
definition for both sides). Nothing here assumes the access point is on harvester's own disk: every read and write
is a :mod:`harvester.transport.safefiles` operation run by the queue's transport (locally, or on the login node over SSH).

Reading is per cycle and per queue: a :class:`harvester.handoff.snapshot.Snapshot` lists every access point of the
claimed workers in one call and reads only the handoff files that changed; a :class:`Messenger` answers from it.
The pilot's outbox (pull mode, HTTP failed) is claimed and forgotten by :mod:`harvester.handoff.outbox`.

Every file a pilot wrote is hostile (see :mod:`harvester.handoff.snapshot`). Nothing a job or a pilot names is used
as a path: file names must be plain names (pilot.fileutil.safe_name) and are joined to a directory harvester chose.
"""
import dataclasses
import json
import logging
import posixpath
import re
import urllib.parse

from harvester.errors import HandoffRefused, MessengerError
from harvester.handoff import outbox, staging
from harvester.handoff.snapshot import DEFAULT_LIMIT, OUTBOX, handoff_names
from harvester.transport import TransportError
from pilot import outbox as pilot_outbox
from pilot.fileutil import safe_name
from pilot.handoff import final_attributes_id
from pilot.payload import TRF_PATH

log = logging.getLogger(__name__)

QUEUEDATA_FILE = "queuedata.json"  # bare queue dict: our --queuedata, pilot3 --queuedata-url (and its cache name)
SCHEDCONFIG_FILE = "schedconfig.json"  # {queue: dict}: pilot3 LOCAL_AGIS_SCHEDCONF
STORAGEDATA_FILE = "ddmendpoints.json"  # the storage endpoints (none): pilot3 --storagedata-url, no CRIC lookup
# pilot3 (generic user) downloads a transformation only from these bases; with HARVESTER_WORKDIR set it copies
# <workdir>/<name> instead, but the base is checked first. Our pilot accepts any host for /trf/user/.
PILOT3_TRF_BASE = "http://pandaserver-doma.cern.ch:25080/trf/user/"
FINAL_STATES = ("finished", "failed")
PILOT_EXIT = "pilot.exit"  # written by the job script when one of several pilots ended (harvester.batch.launch)


class Messenger:
    """The handoff files of one pilot of a worker.

    Args:
        directory: the pilot's handoff directory: the access point (the pilot's ``-a`` and
            ``--harvester-workdir``), or ``pilot-N`` inside it when the worker runs several pilots.
        names: the queue's ``pilot.handoff`` section (a queueconfig ``Handoff``) or a dict of the same keys.
        transport: the queue's transport (where the access point is).
        snapshot: this cycle's :class:`Snapshot` of the access point, for every read.
        root: the directory the access point is in (the queue's workers directory): paths below it are walked
            without following a symlink. Default: the parent of ``directory``.
        limit: the queue's ``pilot.handoff_max_bytes``.
        server, scratch: harvester's server client and a local directory, for inputs from the server's store.
    """

    def __init__(self, directory, names=None, transport=None, snapshot=None, root=None, limit=DEFAULT_LIMIT,
                 server=None, scratch=None):
        self.directory = posixpath.normpath(directory)
        self.root = posixpath.normpath(root or posixpath.dirname(self.directory))
        if not self.directory.startswith(self.root + "/"):
            raise MessengerError(f"{directory} is not inside {self.root}")
        self.names = handoff_names(names)
        self.transport, self.snapshot, self.limit = transport, snapshot, limit
        self.server, self.scratch = server, scratch  # for inputs from the server's file store
        self.outbox_dir = f"{self.directory}/{OUTBOX}"
        self.scripts = set()  # transformations put in this access point by this messenger

    def path(self, key):
        return f"{self.directory}/{self.names[key]}"

    def rel(self, path):
        """``path`` relative to the root (what the transport's file operations take)."""
        return path[len(self.root) + 1:]

    def files(self, ops, what):
        """Run the transport's file operations ``ops``; a failure of the transport is a MessengerError on ``what``."""
        try:
            results = self.transport.files(ops)
        except TransportError as exc:
            raise MessengerError(f"{what}: {exc}") from None
        return results

    def _write_ops(self, name, data, mode=0o644, exclusive=False):
        return {"op": "write", "root": self.root, "path": self.rel(f"{self.directory}/{name}"), "data": data,
                "mode": mode, "exclusive": exclusive}

    # ---- harvester -> pilot -------------------------------------------------------------------------------------
    def setup(self, queuedata):
        """Create the pilot's directory and write the queue's queuedata and storage data (one call); return the
        path of ``queuedata.json``. See :meth:`setup_ops`."""
        for result in self.files(self.setup_ops(queuedata), f"setting up {self.directory}"):
            if not result.get("ok"):
                raise MessengerError(f"setting up {self.directory}: {result.get('error')}")
        return f"{self.directory}/{QUEUEDATA_FILE}"

    def setup_ops(self, queuedata):
        """The operations that create the pilot's directory and write the queue's queuedata and storage data, for a
        caller that sends them with others in one call.

        Two queuedata files, because the pilots read two shapes: ``queuedata.json`` is the bare queue dict (our
        pilot's ``--queuedata``, also found by itself in file mode; pilot3's ``--queuedata-url``),
        ``schedconfig.json`` is ``{queue: dict}`` (pilot3's ``LOCAL_AGIS_SCHEDCONF``; our pilot reads that shape
        too). ``ddmendpoints.json`` is ``{}``: the queue's storage is paths, not DDM endpoints; pilot3 reads it
        (``--storagedata-url {storagedata}``) instead of retrying a lookup of CERN's CRIC for minutes.
        """
        if not isinstance(queuedata, dict):
            raise MessengerError(f"queuedata must be a dict, got {type(queuedata).__name__}")
        queue = queuedata.get("nickname") or queuedata.get("name")
        if not safe_name(queue):
            raise MessengerError(f"queuedata nickname/name {queue!r} is not a plain queue name")
        return [{"op": "mkdir", "root": self.root, "path": self.rel(self.directory), "mode": 0o770},
                self._write_ops(SCHEDCONFIG_FILE, _json({queue: queuedata})),
                self._write_ops(QUEUEDATA_FILE, _json(queuedata)),
                self._write_ops(STORAGEDATA_FILE, b"{}")]

    def feed_jobs(self, jobs):
        """Write the job file ``{PandaID: job}`` and add the ids to ``worker_pandaids.json``.

        Returns False (and writes nothing) while the previous job file is still there: the pilot has not taken it.
        A transformation whose script this messenger put in the access point (:meth:`put_transformation`) is given
        pilot3's accepted base URL, the only base pilot3 takes; our pilot ignores the host.
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
        [result] = self.files([self._write_ops(self.names["job"], _json(data), exclusive=True)],
                               f"writing {self.path('job')}")
        if not result.get("ok"):
            if result.get("code") == "exists":
                return False
            raise MessengerError(f"writing {self.path('job')}: {result.get('error')}")
        ids = sorted({int(k) for k in data} | set(self._listed_ids()))
        [result] = self.files([self._write_ops(self.names["pandaids"], _json(ids))], "writing the PandaIDs")
        if not result.get("ok"):
            log.warning("%s: %s", self.path("pandaids"), result.get("error"))
        return True

    def _listed_ids(self):
        if self.snapshot is None:
            return []
        try:
            return self.panda_ids()
        except MessengerError:
            return []

    def _for_pilot3(self, job):
        name = _trf_name(job.get("transformation"))
        if name and name in self.scripts:
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
        [result] = self.files([self._write_ops(name, bytes(data), 0o755)], f"writing {self.directory}/{name}")
        if not result.get("ok"):
            raise MessengerError(f"writing {self.directory}/{name}: {result.get('error')}")
        self.scripts.add(name)
        return f"{self.directory}/{name}"

    def stage_in(self, job, storage):
        """The job's input files into this directory, verified; see :func:`harvester.handoff.staging.stage_in`."""
        return staging.stage_in(self, job, storage, self.server, self.scratch)

    # ---- pilot -> harvester (from the snapshot) ------------------------------------------------------------------
    def _entry(self, path):
        if self.snapshot is None:
            raise MessengerError(f"{path}: no snapshot of the access point to read from")
        return self.snapshot.entries.get(path)

    def content(self, path):
        """The bytes of a handoff file (None when it does not exist); HandoffRefused when it may not be read."""
        if self._entry(path) is None:
            return None
        got = self.snapshot.contents.get(path)
        if isinstance(got, HandoffRefused):
            raise got
        if got is None:
            raise MessengerError(f"{path}: listed but not read")
        return got

    def _json(self, path, kind):
        """The JSON of ``path`` (None when it does not exist); MessengerError when it is not a JSON ``kind``."""
        text = self.content(path)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MessengerError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, kind):
            raise MessengerError(f"{path} holds a JSON {type(data).__name__}, expected {kind.__name__}")
        return data

    def exists(self, key):
        return self._entry(self.path(key)) is not None

    def job_requested(self):
        """nJobs the pilot asks for in ``worker_requestjob.json``; 0 without a request."""
        data = self._json(self.path("request"), dict)
        if data is None:
            return 0
        try:
            return max(0, int(data.get("nJobs", 1)))
        except (TypeError, ValueError):
            raise MessengerError(f"{self.path('request')}: nJobs is {data.get('nJobs')!r}, not a number") from None

    def read_attributes(self):
        return self._json(self.path("attributes"), dict)

    def kill_worker_requested(self):
        """True once the pilot says it is done (``kill_worker``)."""
        return self.exists("kill")

    def pilot_exited(self):
        """True when the job script recorded this pilot's end (one of several pilots: ``pilot.exit``)."""
        return self._entry(f"{self.directory}/{PILOT_EXIT}") is not None

    def last_heartbeat(self):
        """Epoch of the pilot's last sign of life (mtime of the heartbeat or attributes file), or None."""
        times = [entry.mtime for entry in (self._entry(self.path(key)) for key in ("heartbeat", "attributes"))
                 if entry is not None]
        return max(times) if times else None

    def panda_ids(self):
        """The PandaIDs the pilot lists in ``worker_pandaids.json`` ([] without the file): its word only."""
        path = self.path("pandaids")
        data = self._json(path, list)
        try:
            return [int(x) for x in data or []]
        except (TypeError, ValueError):
            raise MessengerError(f"{path}: expected a list of PandaIDs, got {str(data)[:200]}") from None

    def final_reports(self):
        """What the pilot says of each job it ended (file mode): :class:`Final` per job, in PandaID order.

        From the per-job final attributes ``worker_attributes-<PandaID>.json`` (and ``worker_attributes.json`` for
        pilot3, which keeps no per-job copy), with the job's outputs from ``event_status.dump.json``. A file that
        is refused (symlink, size, not JSON, a jobId other than its name's) is a Final with ``refusal`` set: the
        monitor fails that job with it (a refused ``worker_attributes.json`` names no job: ``panda_id`` None).
        """
        finals = {}
        for name in self.snapshot.names_in(self.directory) if self.snapshot else []:
            panda_id = final_attributes_id(self.names, name)
            if panda_id is None:
                continue
            path = f"{self.directory}/{name}"
            try:
                data = self._json(path, dict)
                if str(data.get("jobId")) != str(panda_id):
                    raise HandoffRefused(f"{path} speaks for job {str(data.get('jobId'))[:20]!r}, not {panda_id}",
                                         path)
                finals[panda_id] = Final(panda_id, data, path=path)
            except MessengerError as exc:
                finals[panda_id] = Final(panda_id, None, refusal=str(exc), path=path)
        try:
            current = self.read_attributes()
        except HandoffRefused as exc:  # never to be read: the job it speaks for fails
            current = None
            finals.setdefault(None, Final(None, None, refusal=str(exc), path=self.path("attributes")))
        except MessengerError:  # garbage in the pilot's running report: said by the monitor, read again next cycle
            current = None
        if current is not None:
            try:
                panda_id = int(current.get("jobId"))
            except (TypeError, ValueError):
                panda_id = None
            if panda_id is not None and panda_id not in finals:
                finals[panda_id] = Final(panda_id, current, path=self.path("attributes"))
        try:
            status, status_error = self._json(self.path("event_status"), dict) or {}, None
        except MessengerError as exc:
            status, status_error = {}, str(exc)
        reports = []
        for panda_id in sorted(finals, key=lambda x: (x is not None, x or 0)):
            final = finals[panda_id]
            if final.params is not None:
                state = final.params.get("state") or final.params.get("jobStatus")
                if state not in FINAL_STATES:
                    continue
                final.params = {k: v for k, v in final.params.items() if k not in ("jobStatus", "xml")}
                final.params["state"] = state
                entries = status.get(str(panda_id)) or []
                if status_error:
                    final.output_error = status_error
                elif not isinstance(entries, list):
                    final.output_error = (f"{self.path('event_status')}: job {panda_id} has {str(entries)[:100]}, "
                                          "not a list of files")
                else:
                    final.outputs = entries
            reports.append(final)
        return reports

    # ---- the pilot's outbox (pull mode, HTTP failed) -------------------------------------------------------------
    def claim_outbox(self, owner, stale_after=pilot_outbox.STALE_CLAIM, now=None):
        """Take the pilot's spooled updates to forward them: ``[(path, entry)]``.

        See :func:`harvester.handoff.outbox.claim`; then :func:`harvester.handoff.outbox.forget` the paths once
        the server acknowledged them.
        """
        return outbox.claim(self, owner, stale_after, now)


@dataclasses.dataclass
class Final:
    """A job's end as the pilot wrote it: ``params`` (the final update) and ``outputs`` (event_status entries), or
    ``refusal`` (why harvester will not take the pilot's word for it; ``output_error`` the same for its outputs)."""

    panda_id: object
    params: dict = None
    refusal: str = None
    path: str = ""
    outputs: list = dataclasses.field(default_factory=list)
    output_error: str = None


def _json(data):
    return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")


def _is_url(value):
    return isinstance(value, str) and bool(re.match(r"^https?://", value))


def _trf_name(trf):
    """``<name>`` of a transformation ``http(s)://<host>/trf/user/<name>``, else None."""
    if not _is_url(trf):
        return None
    match = TRF_PATH.match(urllib.parse.urlparse(trf).path)
    return match.group(1) if match else None
