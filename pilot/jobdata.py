"""A job definition as the pilot uses it: parsed from a getJob reply (PanDA's dispatcher keys) and validated.

File names come from the network: every LFN and the log name must be a plain file name (see
fileutil.safe_name) before it is ever joined to a path.
"""
import logging
import os

from pilot import errors
from pilot.errors import PilotError
from pilot.fileutil import parse_checksum, safe_name

log = logging.getLogger(__name__)
NULLS = (None, "", "NULL", "None")


def new_guid():
    """A random (version 4) UUID as text, from os.urandom: the uuid module loads platform and ctypes helpers."""
    raw = bytearray(os.urandom(16))
    raw[6], raw[8] = (raw[6] & 0x0F) | 0x40, (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class FileSpec:
    """One input, output or log file of a job."""

    def __init__(self, kind, lfn, scope="", guid="", fsize=0, checksum="", dataset=""):
        self.kind, self.lfn, self.scope, self.dataset = kind, lfn, scope or "", dataset or ""
        self.guid = guid or ""
        self.fsize = fsize or 0
        self.checksum_type, self.checksum = parse_checksum(checksum)
        self.registered = ""  # an input's registered path on a shared file system (surlIn), else ""
        self.path = None  # where the file is in the job directory
        self.memory = None  # the log tarball while it is in memory only (a pilot.tarball.Spool; path is None then)
        self.surl = None  # where stage-out put it
        self.adler32 = None

    def __repr__(self):
        return f"FileSpec({self.kind}, {self.lfn!r})"

    def fileinfo(self):
        """The entry of the final update's ``xml`` file info."""
        return {"guid": self.guid, "fsize": self.fsize, "adler32": self.adler32, "surl": self.surl}


def _value(data, key, default=""):
    value = data.get(key, default)
    return default if value in NULLS else value


def _int(data, key, default=0):
    try:
        return int(float(_value(data, key, default)))
    except (TypeError, ValueError):
        return default


def _list(data, key):
    value = _value(data, key)
    if isinstance(value, list):
        return ["" if v in NULLS else str(v) for v in value]
    return ["" if v.strip() in NULLS else v.strip() for v in str(value).split(",")] if value != "" else []


def _at(values, index, default=""):
    return values[index] if index < len(values) else default


class Job:
    """A job definition.

    Args:
        data: the getJob reply dict (or a pandaJobData.out entry); kept verbatim in ``raw``.
    """

    def __init__(self, data):
        self.raw = dict(data)
        self.panda_id = _int(data, "PandaID", None)
        if self.panda_id is None:
            self.panda_id = _int(data, "jobid", None)
        if self.panda_id is None:
            raise ValueError(f"job definition without a PandaID: keys {sorted(data)[:20]}")
        self.task_id = _int(data, "taskID", 0) or _int(data, "jediTaskID", 0)
        self.attempt_nr = _int(data, "attemptNr", 0)
        self.transformation = str(_value(data, "transformation"))
        self.job_pars = str(_value(data, "jobPars", _value(data, "jobParameters")))
        self.core_count = _int(data, "coreCount", 1) or 1
        self.min_ram_count = _int(data, "minRamCount", 0)
        self.max_walltime = _int(data, "maxWalltime", 0)
        self.label = str(_value(data, "prodSourceLabel"))
        self.looping_check = str(_value(data, "loopingCheck", "True")).lower() not in ("false", "0", "no")
        self.allow_no_output = {x for x in _list(data, "allowNoOutput") if x}
        self.inputs, self.outputs, self.log = self._files(data)

    def _files(self, data):
        lfns, guids, sizes = _list(data, "inFiles"), _list(data, "GUID"), _list(data, "fsize")
        sums, scopes, datasets = _list(data, "checksum"), _list(data, "scopeIn"), _list(data, "realDatasetsIn")
        surls = _list(data, "surlIn")
        inputs = []
        for i, lfn in enumerate(lfns):
            if lfn:
                size = _at(sizes, i, "0")
                inputs.append(FileSpec("input", lfn, _at(scopes, i), _at(guids, i),
                                       int(size) if size.isdigit() else 0, _at(sums, i), _at(datasets, i)))
                surl = _at(surls, i)
                if surl.startswith("/") and os.path.basename(surl) == lfn:  # a path, not a URL
                    inputs[-1].registered = surl
        log_name = str(_value(data, "logFile"))
        out_lfns = [x for x in _list(data, "outFiles") if x and x != log_name]
        out_scopes, out_datasets = _list(data, "scopeOut"), _list(data, "realDatasets")
        outputs = [FileSpec("output", lfn, _at(out_scopes, i), new_guid(), dataset=_at(out_datasets, i))
                   for i, lfn in enumerate(out_lfns)]
        log_file = FileSpec("log", log_name, str(_value(data, "scopeLog")),
                            str(_value(data, "logGUID")) or new_guid()) if log_name else None
        return inputs, outputs, log_file

    def validate(self):
        """Refuse names that are not plain file names (they would be used as paths) or too long."""
        for spec in self.inputs + self.outputs + ([self.log] if self.log else []):
            if len(spec.lfn) > 255:
                raise PilotError(errors.LFNTOOLONG, f"{spec.kind} file name longer than 255 characters")
            if not safe_name(spec.lfn) or (spec.scope and not safe_name(spec.scope)):
                code = errors.STAGEINFAILED if spec.kind == "input" else errors.BADOUTPUTFILENAME
                raise PilotError(code, f"{spec.kind} file {spec.lfn[:80]!r} (scope {spec.scope[:40]!r}) is not a "
                                       "plain file name")
        if not self.transformation:
            raise PilotError(errors.TRANSFORMNOTFOUND, "the job has no transformation")

    def summary(self):
        """A short description for the log."""
        return (f"PandaID {self.panda_id} attempt {self.attempt_nr}: {self.transformation} "
                f"({len(self.inputs)} in, {len(self.outputs)} out, log {self.log.lfn if self.log else '-'})")
