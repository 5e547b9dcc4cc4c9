"""Datasets and their files: registration of input data, listing, and the outputs jobs report.

The CLI scans local files (:func:`scan_paths`: size, adler32, a new GUID, the directory as location) and sends
their metadata; the server only records it (:func:`add_files`). Task outputs are added by the settle duty when a
job finishes, with the size, checksum and location the pilot reported.
"""
import os
import re
import uuid
import zlib

from minipanda.core import models, states
from minipanda.core.db import database
from minipanda.errors import RequestError
from peewee import JOIN, fn

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}\Z")
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.+-][A-Za-z0-9_.+:-]{0,254}\Z")
CHECKSUM = re.compile(r"^(ad:)?[0-9a-f]{8}\Z")
MAX_FILES_PER_CALL = 100000


def adler32_of(path):
    """The adler32 checksum of a file as PanDA writes it: 8 lowercase hex digits."""
    value = 1
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            value = zlib.adler32(block, value)
    return "%08x" % (value & 0xFFFFFFFF)


def scan_paths(paths, n_events=None):
    """File metadata for ``paths`` (files, or directories whose regular files are taken), sorted by name.

    Raises:
        ValueError: a path that does not exist, or two files with the same name.
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += [os.path.join(path, n) for n in sorted(os.listdir(path)) if os.path.isfile(os.path.join(path, n))]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise ValueError(f"{path}: no such file or directory")
    files, seen = [], {}
    for path in found:
        path = os.path.abspath(path)
        lfn = os.path.basename(path)
        if lfn in seen:
            raise ValueError(f"{path}: a file named {lfn} was already given ({seen[lfn]}); file names in a dataset "
                             "must be unique")
        seen[lfn] = path
        entry = {"lfn": lfn, "fsize": os.path.getsize(path), "checksum": "ad:" + adler32_of(path),
                 "guid": str(uuid.uuid4()), "location": os.path.dirname(path)}
        if n_events is not None:
            entry["nEvents"] = n_events
        files.append(entry)
    return files


def _parse_file(entry, where, errors):
    if not isinstance(entry, dict):
        errors.append(f"{where}: expected an object with lfn, fsize, checksum, guid, location")
        return None
    lfn = entry.get("lfn")
    if not isinstance(lfn, str) or not PLAIN_NAME.match(lfn) or lfn in (".", ".."):
        errors.append(f"{where}.lfn: expected a plain file name, got {str(lfn)[:80]!r}")
    out = {"lfn": lfn, "guid": str(entry.get("guid") or uuid.uuid4())[:64],
           "location": str(entry.get("location") or "")[:4000]}
    for name, key in (("fsize", "fsize"), ("nEvents", "n_events")):
        value = entry.get(name)
        if value is None and name == "nEvents":
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors.append(f"{where}.{name}: expected a non-negative integer, got {value!r}")
        out[key] = value
    checksum = str(entry.get("checksum") or "").lower()
    if not CHECKSUM.match(checksum):
        errors.append(f"{where}.checksum: expected an adler32 as ad:xxxxxxxx, got {checksum[:40]!r}")
    out["checksum"] = checksum if checksum.startswith("ad:") else "ad:" + checksum
    return out


def add_files(name, files, user, manages_all=False):
    """Register ``files`` in the input dataset ``name`` (created when new); files already there are skipped.

    Returns:
        {"dataset", "added", "skipped", "n_files"}.

    Raises:
        RequestError: a bad name or file entry (every bad field is named), a file already registered with
            other metadata, or a dataset that belongs to someone else or to a task.
    """
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise RequestError(f"name: expected a dataset name of letters, digits and ._:/-, got {str(name)[:80]!r}")
    if not isinstance(files, list) or not files:
        raise RequestError("files: expected a non-empty list of file entries")
    if len(files) > MAX_FILES_PER_CALL:
        raise RequestError(f"files: at most {MAX_FILES_PER_CALL} files per call, got {len(files)}")
    errors = []
    parsed = [_parse_file(f, f"files[{i}]", errors) for i, f in enumerate(files)]
    lfns = [p["lfn"] for p in parsed if p]
    if len(set(lfns)) != len(lfns):
        errors.append("files: the same lfn is given twice")
    if errors:
        raise RequestError("; ".join(errors[:20]))
    now = states.utcnow()
    with database.atomic():
        dataset = models.Dataset.get_or_none(models.Dataset.name == name)
        if dataset is None:
            dataset = models.Dataset.create(name=name, type="input", user_name=user, creation_time=now,
                                            modification_time=now)
        elif dataset.type != "input":
            raise RequestError(f"name: {name} is the {dataset.type} dataset of task {dataset.task_id}; files are "
                               "added to it by its jobs", http=409)
        elif dataset.user_name != user and not manages_all:
            raise RequestError(f"name: dataset {name} belongs to {dataset.user_name}", http=403)
        known = {f.lfn: f for f in models.DatasetFile.select().where(models.DatasetFile.dataset == dataset.id)}
        new = []
        for entry in parsed:
            old = known.get(entry["lfn"])
            if old is None:
                new.append(dict(entry, dataset=dataset.id, status="ready", creation_time=now))
            elif (old.fsize, old.checksum) != (entry["fsize"], entry["checksum"]):
                raise RequestError(f"files: {entry['lfn']} is already in {name} with size {old.fsize} and checksum "
                                   f"{old.checksum}, not {entry['fsize']} and {entry['checksum']}", http=409)
        for start in range(0, len(new), 500):
            models.DatasetFile.insert_many(new[start:start + 500]).execute()
        models.Dataset.update(modification_time=now).where(models.Dataset.id == dataset.id).execute()
        total = models.DatasetFile.select().where(models.DatasetFile.dataset == dataset.id).count()
    return {"dataset": name, "added": len(new), "skipped": len(parsed) - len(new), "n_files": total}


def list_datasets(user=None, pattern=None, limit=1000):
    """Datasets, newest first, with their file count and size."""
    D, F = models.Dataset, models.DatasetFile
    query = (D.select(D, fn.COUNT(F.file_id).alias("n_files"), fn.SUM(F.fsize).alias("bytes"))
             .join(F, JOIN.LEFT_OUTER, on=(F.dataset == D.id)).group_by(D.id)
             .order_by(D.id.desc()).limit(limit))
    if user:
        query = query.where(D.user_name == user)
    if pattern:
        query = query.where(D.name ** pattern.replace("*", "%"))
    return [{"name": d.name, "type": d.type, "userName": d.user_name, "jediTaskID": d.task_id,
             "nFiles": d.n_files, "bytes": int(d.bytes or 0), "creationTime": d.creation_time} for d in query]


def show_dataset(name):
    """One dataset and its files, or RequestError(404). A task's name (prun's ``--outDS`` with its ``/``) is the
    container of the task's output and log datasets: their files are listed together, each with its dataset."""
    dataset = models.Dataset.get_or_none(models.Dataset.name == name)
    if dataset is None:
        task = models.Task.select().where(models.Task.task_name == name).order_by(
            models.Task.jedi_task_id.desc()).first() if isinstance(name, str) else None
        if task is None:
            raise RequestError(f"dataset {name!r} not found", http=404)
        members = list(models.Dataset.select().where(models.Dataset.task_id == task.jedi_task_id,
                                                     models.Dataset.type != "input").order_by(models.Dataset.name))
        return {"name": name, "type": "container", "userName": task.user_name, "jediTaskID": task.jedi_task_id,
                "creationTime": task.creation_time, "datasets": [d.name for d in members],
                "files": [f for d in members for f in _files_of(d)]}
    return {"name": dataset.name, "type": dataset.type, "userName": dataset.user_name, "jediTaskID": dataset.task_id,
            "creationTime": dataset.creation_time,
            "files": [{k: v for k, v in f.items() if k != "dataset"} for f in _files_of(dataset)]}


def _files_of(dataset):
    files = models.DatasetFile.select().where(models.DatasetFile.dataset == dataset.id).order_by(
        models.DatasetFile.lfn)
    return [{"lfn": f.lfn, "guid": f.guid, "fsize": f.fsize, "checksum": f.checksum, "location": f.location,
             "nEvents": f.n_events, "status": f.status, "PandaID": f.panda_id, "dataset": dataset.name}
            for f in files]


def input_files(name):
    """The files of an input dataset in name order, or None when there is no such dataset."""
    dataset = models.Dataset.get_or_none(models.Dataset.name == name)
    if dataset is None:
        return None
    return list(models.DatasetFile.select().where(models.DatasetFile.dataset == dataset.id)
                .order_by(models.DatasetFile.lfn))
