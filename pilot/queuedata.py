"""Every queuedata key the pilot reads, with its default, in one table; and loading queuedata.

Queuedata is PanDA's schedconfig dict for one queue, served at ``/cache/schedconfig/<queue>.all.json`` or read
from a local JSON file (``--queuedata FILE``; a bare queue dict or ``{queue: dict}``). The first block of keys is
PanDA's own; the ``pilot_*`` keys and the few after them are minipanda extras. A missing or invalid value falls
back to the default below (and an invalid one is logged), so a queue only sets what it wants to change.
"""
import collections
import json
import logging
import os

from pilot import errors
from pilot.fileutil import atomic_write_json

log = logging.getLogger(__name__)

Key = collections.namedtuple("Key", "name kind default doc")

# A job silent this long is lost: PanDA's watcher fails it after 2 h without a heartbeat (HEARTBEAT_TIMEOUT's
# default). The server's watchdog takes the same value when a queue sets none (minipanda.tasks.settings,
# watchdog.heartbeat_timeout; tests/test_watchdog.py keeps the two equal), so the pilot gives a job up when the
# server fails it: with pilot3's own 3 h it would run an hour on a job the server had already failed and retried.
LOST_HEARTBEAT_TIMEOUT = 7200.0
HANDOFF_FILES = {
    "job": "pandaJobData.out", "request": "worker_requestjob.json", "attributes": "worker_attributes.json",
    "report": "jobReport.json", "event_status": "event_status.dump.json", "kill": "kill_worker",
    "pandaids": "worker_pandaids.json", "kill_payload": "pilot_kill_payload", "heartbeat": "worker_heartbeat.json",
}

KEYS = (
    # PanDA schedconfig keys
    Key("state", str, "ACTIVE", "queue state; anything but ACTIVE stops the pilot (exit 78)"),
    Key("status", str, "online", "queue status; 'offline' stops the pilot (exit 64)"),
    Key("maxtime", int, 0, "s, the longest a pilot may live; 0 = only -l limits it"),
    Key("maxrss", int, 0, "MB of memory per job slot: offered to getJob, and the job limit when minRamCount is 0"),
    Key("maxwdir", int, 0, "MB a job's work directory may hold (1104) and the disk offered to getJob; 0 = no limit"),
    Key("maxinputsize", int, 0, "MB of input files per job (1168); 0 = no limit"),
    Key("timefloor", float, 0.0, "minutes after pilot start during which another job may be started; 0 = one job"),
    Key("corecount", int, 0, "cores offered to getJob; 0 = the node's usable cores"),
    Key("copytools", dict, {"mv": {}}, "copytools this queue allows, {name: settings}"),
    Key("acopytools", dict, {"pr": ["mv"], "pw": ["mv"], "pl": ["mv"]},
        "copytools per activity: pr (stage-in), pw (outputs), pl (log); the first listed is used"),
    Key("catchall", str, "", "free text; kept for compatibility, not interpreted"),
    Key("type", str, "", "production, analysis or unified: the job label asked for when prodsourcelabels is "
                         "empty (managed, user, unified)"),
    # minipanda extras
    Key("copytool", str, "", "one copytool for every activity (overrides acopytools): copy, mv, symlink, http"),
    Key("prodsourcelabels", list, [], "job labels the queue serves; the pilot asks for them (-j): unified when "
                                      "managed and user, else the one served; empty: from type, else managed"),
    Key("wnconnectivity", str, "full", "'none...' means no outbound network: file mode, as --no-server-updates"),
    Key("input_dir", str, "", "where copy/mv/symlink find inputs (<dir>/<scope>/<lfn> or <dir>/<lfn>); "
                              "default: the harvester work dir, else the pilot work area (-a)"),
    Key("output_dir", str, "", "where outputs and the log go (<dir>/<scope>/<lfn>); default: the harvester "
                               "work dir, else <pilot work area>/outputs"),
    Key("input_url", str, "", "http stage-in URL template with {lfn} {scope} {dataset}; a leading '/' is "
                              "relative to the server URL"),
    Key("output_url", str, "", "http stage-out URL template with {lfn} {scope} {dataset} (each file is PUT "
                               "there, e.g. /files/{scope}/{lfn}); a leading '/' is relative to the server"),
    Key("trf_url_prefixes", list, [], "URL prefixes a transformation may be downloaded from, besides the "
                                      "server's own /trf/user/"),
    Key("handoff_files", dict, HANDOFF_FILES, "file names exchanged with harvester (partial override allowed)"),
    Key("pilot_lifetime", float, 324000.0, "s a pilot lives when -l is not given"),
    Key("pilot_heartbeat_interval", float, 1800.0, "s between running heartbeats (updateJob or attributes file)"),
    Key("pilot_running_delay", float, 2.0, "s the payload runs before the job is reported running (then every "
                                           "pilot_heartbeat_interval); a payload that ends sooner goes straight "
                                           "to its final state (without inputs, or with inputs that arrive "
                                           "within this delay at 10 MB/s: one report, the final); 0 = report "
                                           "running at once"),
    Key("pilot_monitor_interval", float, 60.0, "s between checks of memory, time, looping, disk, stdout"),
    Key("pilot_lost_heartbeat_timeout", float, LOST_HEARTBEAT_TIMEOUT,
        "s without a successful heartbeat (counted from the job's getJob) before the job is killed, or not started "
        "(1318); the server's watchdog fails the job after as long"),
    Key("pilot_looping_limit", float, 7200.0, "s without any file change in the job directory (1150)"),
    Key("pilot_memory_grace", float, 1.5, "the job is killed (1235) above grace x its memory limit"),
    Key("pilot_walltime_grace", float, 1.5, "the job is killed (1213) after grace x its maxWalltime"),
    Key("pilot_kill_grace", float, 10.0, "s between SIGTERM and SIGKILL to the payload's process group"),
    Key("pilot_max_stdout_mb", float, 2048.0, "MB the payload's stdout/stderr may reach (1106)"),
    Key("pilot_min_disk_getjob_mb", float, 2048.0, "MB free in the work area needed to ask for a job (exit 69)"),
    Key("pilot_min_disk_running_mb", float, 1024.0, "MB free while the payload runs (1098)"),
    Key("pilot_stageout_reserve", float, 300.0, "s of the pilot's lifetime kept for stage-out and the final update"),
    Key("pilot_getjob_tries", int, 2, "getJob requests before giving up when the server has no job"),
    Key("pilot_getjob_interval", float, 60.0, "s between getJob requests that found no job"),
    Key("pilot_update_tries", int, 5, "tries of the final update before it goes to the outbox"),
    Key("pilot_update_backoff", float, 2.0, "s before the second try of an update; doubles up to 60"),
    Key("pilot_http_timeout", float, 60.0, "s timeout of one HTTP request"),
    Key("pilot_handoff_poll", float, 1.0, "s between looks for the next job file in file mode"),
    Key("pilot_handoff_wait", float, 300.0, "s to wait for a requested job file before giving up"),
    Key("pilot_stagein_timeout", float, 600.0, "s allowed per input file, plus 1 s per 10 MB (1151)"),
    Key("pilot_cleanup_age", float, 43200.0, "s untouched after which an old pilot directory is removed"),
)
DEFAULTS = {k.name: k.default for k in KEYS}
_KINDS = {k.name: k.kind for k in KEYS}


class QueueDataError(Exception):
    """Queuedata could not be read; ``code`` is errors.QUEUEDATA or QUEUEDATANOTOK."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def _coerce(name, value):
    kind = _KINDS[name]
    if kind in (int, float):
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        number = float(value)
        if number < 0:
            raise ValueError("must not be negative")
        return int(number) if kind is int else number
    if kind is str:
        return "" if value is None else str(value)
    if not isinstance(value, kind):
        raise ValueError(f"expected a JSON {'object' if kind is dict else 'list'}")
    return value


class QueueData:
    """Typed read access to one queue's queuedata: ``qd["pilot_looping_limit"]``, always a valid value."""

    def __init__(self, raw, name=""):
        self.raw = dict(raw or {})
        self.name = name or str(self.raw.get("nickname") or self.raw.get("name") or "")
        self.values = {}
        for key in KEYS:
            value = self.raw.get(key.name)
            if value is None or value == "" and key.kind is not str:
                self.values[key.name] = key.default
                continue
            try:
                self.values[key.name] = _coerce(key.name, value)
            except (TypeError, ValueError) as exc:
                log.warning("queuedata %s=%r is invalid (%s); using the default %r", key.name, value, exc,
                            key.default)
                self.values[key.name] = key.default
        self.values["handoff_files"] = dict(HANDOFF_FILES, **{
            k: str(v) for k, v in self.values["handoff_files"].items() if k in HANDOFF_FILES and v})

    def __getitem__(self, name):
        return self.values[name]

    def copytool(self, activity):
        """The copytool name for activity 'pr' (stage-in), 'pw' (outputs) or 'pl' (log)."""
        if self["copytool"]:
            return self["copytool"]
        aliases = {"pr": ("pr", "read_lan"), "pw": ("pw", "write_lan"), "pl": ("pl", "pw", "write_lan")}
        for name in aliases[activity]:
            tools = self["acopytools"].get(name)
            if isinstance(tools, str):
                tools = [tools]
            if tools:
                return str(tools[0])
        tools = list(self["copytools"])
        return str(tools[0]) if tools else "mv"

    def job_label(self):
        """The prodSourceLabel a pilot asks for: what the queue serves, unified when it serves both production
        and user jobs (harvester passes the same as -j); the queue's type when it names no labels; else managed."""
        labels = [str(label) for label in self["prodsourcelabels"]]
        if labels:
            return job_label(labels)
        return {"unified": "unified", "analysis": "user", "production": "managed"}.get(self["type"].lower(),
                                                                                       "managed")

    @property
    def offline_network(self):
        """True when the queue says its worker nodes have no outbound network."""
        return self["wnconnectivity"].strip().lower().startswith("none")

    def memory_limit_mb(self, min_ram_count):
        """The job's memory limit in MB before grace: its minRamCount, else maxrss; 0 = no limit."""
        return min_ram_count if min_ram_count and min_ram_count > 0 else self["maxrss"]


def job_label(labels):
    """The pilot label for a queue serving ``labels``: unified for managed and user, else managed, user or the
    first one listed."""
    if {"managed", "user"} <= set(labels):
        return "unified"
    return next((label for label in ("managed", "user") if label in labels), labels[0] if labels else "managed")


def parse(text, queue, source):
    """QueueData from JSON text: a bare queue dict or a full schedconfig ``{queue: dict}``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise QueueDataError(f"queuedata from {source} is not JSON: {exc}", errors.QUEUEDATANOTOK) from None
    if isinstance(data, dict) and isinstance(data.get(queue), dict):
        data = data[queue]
    if not isinstance(data, dict):
        raise QueueDataError(f"queuedata from {source} is not a JSON object", errors.QUEUEDATANOTOK)
    return QueueData(data, queue)


def load_file(path, queue):
    """QueueData from a local JSON file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read(), queue, path)
    except OSError as exc:
        raise QueueDataError(f"cannot read queuedata file {path}: {exc}", errors.QUEUEDATA) from None


def save(qd, path):
    """Keep a copy of the queuedata in use (for the log tarball and for debugging)."""
    atomic_write_json(path, {"raw": qd.raw, "effective": qd.values})


def documented_keys():
    """(name, default, doc) for every key, for docs and ``pilot --list-queuedata-keys``."""
    return [(k.name, k.default, k.doc) for k in KEYS]


def from_environment_dir(directory, queue):
    """QueueData from ``<directory>/queuedata.json`` when it exists (file mode), else None."""
    path = os.path.join(directory, "queuedata.json")
    return load_file(path, queue) if directory and os.path.isfile(path) else None
