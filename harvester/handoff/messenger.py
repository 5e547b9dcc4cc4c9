"""The handoff with the pilot of one worker, in the worker's access point on the submit host, through the transport.

Harvester writes the queuedata, the storage data, the job file, the job's inputs and its transformation there; the
pilot (ours, or PanDA pilot3 in harvester mode) writes its attributes, reports, outputs and, when its HTTP failed,
its outbox there. File names are the queue's ``pilot.handoff`` section; their meaning is pilot.handoff's (one
definition for both sides). Nothing here assumes the access point is on harvester's own disk: every read and write
is a :mod:`harvester.transport.safefiles` operation run by the queue's transport (locally, or on the login node over SSH).

Reading is per cycle and per queue: :meth:`Snapshot.take` lists every access point of the claimed workers in ONE
call (names, kinds, sizes, times), then reads in ONE more call only the handoff files that changed since the
previous snapshot (and none when nothing did). A :class:`Messenger` answers from that snapshot.

Every file a pilot wrote is hostile: nothing is followed through a symlink at any component, only regular files
under ``pilot.handoff_max_bytes`` are read, and a file that fails that is a :class:`HandoffRefused` naming the
file and why (the monitor fails the job it speaks for). Nothing a job or a pilot names is used as a path: file names
must be plain names (pilot.fileutil.safe_name) and are joined to a directory harvester chose.
"""
import collections
import dataclasses
import functools
import json
import logging
import posixpath
import re
import time
import urllib.parse

from harvester.errors import HandoffRefused, MessengerError
from harvester.handoff import staging
from harvester.transport import TransportError
from pilot import outbox as pilot_outbox
from pilot.fileutil import safe_name
from pilot.handoff import final_attributes_id
from pilot.payload import TRF_PATH
from pilot.queuedata import HANDOFF_FILES
from pilot.usage import USAGE_FILE

log = logging.getLogger(__name__)

QUEUEDATA_FILE = "queuedata.json"  # bare queue dict: our --queuedata, pilot3 --queuedata-url (and its cache name)
SCHEDCONFIG_FILE = "schedconfig.json"  # {queue: dict}: pilot3 LOCAL_AGIS_SCHEDCONF
STORAGEDATA_FILE = "ddmendpoints.json"  # the storage endpoints (none): pilot3 --storagedata-url, no CRIC lookup
# pilot3 (generic user) downloads a transformation only from these bases; with HARVESTER_WORKDIR set it copies
# <workdir>/<name> instead, but the base is checked first. Our pilot accepts any host for /trf/user/.
PILOT3_TRF_BASE = "http://pandaserver-doma.cern.ch:25080/trf/user/"
FINAL_STATES = ("finished", "failed")
OUTBOX = "outbox"
PILOT_EXIT = "pilot.exit"  # written by the job script when one of several pilots ended (harvester.batch.launch)
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
        names = _checked_names(_given(names))
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
        self.names = _checked_names(_given(names))
        self.transport, self.snapshot, self.limit = transport, snapshot, limit
        self.server, self.scratch = server, scratch  # for inputs from the server's file store
        self.outbox_dir = f"{self.directory}/{OUTBOX}"
        self.scripts = set()  # transformations put in this access point by this messenger

    def path(self, key):
        return f"{self.directory}/{self.names[key]}"

    def rel(self, path):
        """``path`` relative to the root (what the transport's file operations take)."""
        return path[len(self.root) + 1:]

    def _files(self, ops, what):
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
        for result in self._files(self.setup_ops(queuedata), f"setting up {self.directory}"):
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
        [result] = self._files([self._write_ops(self.names["job"], _json(data), exclusive=True)],
                               f"writing {self.path('job')}")
        if not result.get("ok"):
            if result.get("code") == "exists":
                return False
            raise MessengerError(f"writing {self.path('job')}: {result.get('error')}")
        ids = sorted({int(k) for k in data} | set(self._listed_ids()))
        [result] = self._files([self._write_ops(self.names["pandaids"], _json(ids))], "writing the PandaIDs")
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
        [result] = self._files([self._write_ops(name, bytes(data), 0o755)], f"writing {self.directory}/{name}")
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
        renames, claimed = [], []
        for name in self.snapshot.names_in(self.outbox_dir) if self.snapshot else []:
            path, entry = f"{self.outbox_dir}/{name}", self.snapshot.entries[f"{self.outbox_dir}/{name}"]
            match = pilot_outbox.CLAIMED.match(name)
            if match and match.group("owner") == owner:
                claimed.append(path)
            elif match and now - entry.ctime > stale_after:
                log.warning("outbox entry %s claimed by %s long ago; taken over", path, match.group("owner"))
                renames.append((path, f"{self.outbox_dir}/{match.group('name')}.{owner}.claimed"))
            elif pilot_outbox.ENTRY.match(name):
                renames.append((path, f"{path}.{owner}.claimed"))
        if not renames and not claimed:
            return []
        targets = claimed + [new for _, new in renames]
        ops = [{"op": "rename", "root": self.root, "src": self.rel(old), "dst": self.rel(new)} for old, new in renames]
        ops.append({"op": "read", "root": self.root, "paths": [self.rel(p) for p in targets], "limit": self.limit})
        results = self._files(ops, f"claiming {self.outbox_dir}")
        lost = {new for (old, new), result in zip(renames, results) if not result.get("ok")}
        files = results[-1].get("files", {}) if results[-1].get("ok") else {}
        taken, rejects = [], []
        for path in targets:
            if path in lost:
                continue  # the pilot (or another sender) took it first
            got = files.get(self.rel(path), {})
            entry = _outbox_entry(got.get("data"))
            if entry is None:
                log.error("outbox entry %s is unreadable (%s); moved to rejected/", path,
                          got.get("error") or "not an outbox entry")
                rejects.append(path)
                continue
            entry["kind"] = pilot_outbox.kind_of(posixpath.basename(path))
            taken.append((path, entry))
        if rejects:
            self._files([{"op": "rename", "root": self.root, "src": self.rel(p),
                          "dst": self.rel(f"{self.outbox_dir}/rejected/{posixpath.basename(p)}")} for p in rejects],
                        "moving refused outbox entries aside")
        finals = {str(e["params"].get("jobId")) for _, e in taken if e["kind"] == "final"}
        kept, obsolete = [], []
        for path, entry in taken:
            if entry["kind"] == "heartbeat" and str(entry["params"].get("jobId")) in finals:
                obsolete.append(path)  # the job's final update says more
            else:
                kept.append((path, entry))
        if obsolete:
            forget(self.transport, self.root, obsolete)
        return kept


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
