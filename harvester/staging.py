"""Staging for nodes without network: inputs from a queue's shared input directory into a worker's access point,
outputs from the access point to the shared output directory, each file checked by adler32.

No name from a job or a pilot is used as a path: input names must be plain names, output paths must be
``<access point>/[<scope>/]<lfn>`` with plain names, and a symlink is never followed; anything else raises
MessengerError naming the field or path.
"""
import os
import shutil
import stat

from harvester.errors import MessengerError
from pilot.copytools import find_input
from pilot.fileutil import adler32, safe_name
from pilot.jobdata import Job


def stage_in(access_point, job, storage, copy_or_link="copy"):
    """Copy or symlink the job's input files from the queue's input directory into the access point.

    Args:
        access_point: the worker's directory.
        job: the job dict (inFiles, scopeIn, ... as the pilot reads them: pilot.jobdata).
        storage: the queue's ``storage`` section (or its dict): only ``input`` of type shared is staged; for
            local and server the pilot finds or downloads its inputs itself, and nothing is done.
        copy_or_link: 'copy' or 'symlink'.
    Returns:
        The paths written, ``<access point>/<lfn>``, where the pilot looks for ``<lfn>``.
    """
    if copy_or_link not in ("copy", "symlink"):
        raise MessengerError(f"copy_or_link must be 'copy' or 'symlink', not {copy_or_link!r}")
    kind, directory = _endpoint(storage, "input")
    if kind != "shared":
        return []
    if not directory:
        raise MessengerError("storage.input is shared but has no path")
    try:
        specs = Job(job).inputs
    except ValueError as exc:
        raise MessengerError(str(exc)) from None
    written = []
    for spec in specs:
        _check_name(spec.lfn, f"job {job.get('PandaID')} inFiles")
        if spec.scope:
            _check_name(spec.scope, f"job {job.get('PandaID')} scopeIn of {spec.lfn}")
        source = find_input(spec, directory)
        if source is None:
            raise MessengerError(f"input {spec.lfn} of job {job.get('PandaID')} not found in {directory}")
        dest = os.path.join(access_point, spec.lfn)
        tmp = os.path.join(access_point, f".{spec.lfn}.{os.getpid()}.part")
        _remove(tmp)
        if copy_or_link == "symlink":
            os.symlink(os.path.abspath(source), tmp)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
        written.append(dest)
    return written


def stage_out(access_point, status_path, outputs, storage):
    """Move the listed files from the access point to the queue's output directory.

    Args:
        access_point: the worker's directory; status_path: the file the entries come from (for messages).
        outputs: event_status entries ``{"type", "path", "guid", "fsize", "chksum"}``; ``path`` must be
            ``<access point>/<lfn>`` or ``<access point>/<scope>/<lfn>`` (plain names), a regular file.
        storage: the queue's ``storage`` section (or its dict). ``output`` of type shared: moved (or copied and
            removed) to ``<path>/<scope>/<lfn>``; local: left in the access point.
    Returns:
        The entries with ``path`` where each file is now, ``fsize`` and ``chksum`` (adler32) checked. A file
        already moved by an earlier call (same adler32 at its destination) counts as done.
    """
    kind, directory = _endpoint(storage, "output")
    if kind == "server":
        raise MessengerError("storage.output is the server's file store: the messenger cannot upload")
    if kind == "shared" and not directory:
        raise MessengerError("storage.output is shared but has no path")
    done = []
    for entry in outputs:
        parts = _parts(access_point, status_path, entry)
        source = os.path.join(access_point, *parts)
        dest = os.path.join(directory, *parts) if kind == "shared" else source
        result = dict(entry, path=dest)
        if dest != source and not os.path.lexists(source) and os.path.isfile(dest):
            result.update(fsize=os.path.getsize(dest), chksum=adler32(dest))  # moved by an earlier call
            _check_sum(entry, result, dest)
            done.append(result)
            continue
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            raise MessengerError(f"output {source} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise MessengerError(f"output {source} is not a regular file (a symlink is never followed)")
        result.update(fsize=st.st_size, chksum=adler32(source))
        _check_sum(entry, result, source)
        if dest != source:
            _move(source, dest, result["chksum"])
        done.append(result)
    return done

def _parts(access_point, status_path, entry):
    path = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(path, str) or "\0" in path or not os.path.isabs(path):
        raise MessengerError(f"output path {str(path)[:200]!r} in {status_path} is not an "
                             "absolute path")
    for base in (access_point, os.path.realpath(access_point)):
        rel = os.path.relpath(os.path.normpath(path), base)
        parts = rel.split(os.sep)
        if 1 <= len(parts) <= 2 and all(safe_name(p) for p in parts):
            return parts
    raise MessengerError(f"output path {path[:200]!r} is not <access point>/[<scope>/]<lfn> with plain names")

def _check_sum(entry, result, path):
    want = entry.get("chksum")
    if want and str(want).split(":")[-1].lower().zfill(8) != result["chksum"]:
        raise MessengerError(f"output {path}: adler32 {result['chksum']}, the pilot reported {want}")


def _check_name(name, what):
    if not safe_name(name):
        raise MessengerError(f"{what}: {str(name)[:200]!r} is not a plain file name")


def _endpoint(storage, side):
    """(type, path) of ``storage.input`` or ``storage.output`` (a queueconfig Storage or its dict)."""
    end = getattr(storage, side, None) if not isinstance(storage, dict) else storage.get(side)
    if end is None:
        raise MessengerError(f"storage has no {side} endpoint")
    if isinstance(end, dict):
        kind, path = end.get("type", "local"), end.get("path")
    else:
        kind, path = getattr(end, "type", "local"), getattr(end, "path", None)
    return kind, (os.path.abspath(str(path)) if path else None)


def _move(source, dest, checksum):
    """Move ``source`` to ``dest`` (rename, or copy + rename + delete across file systems), verified."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        if os.path.isfile(dest) and not os.path.islink(dest) and adler32(dest) == checksum:
            os.unlink(source)  # an earlier call copied it and stopped before removing the source
            return
        raise MessengerError(f"{dest} exists with other content; {source} not moved over it")
    try:
        os.rename(source, dest)
        return
    except OSError:
        pass
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.{os.getpid()}.part")
    shutil.copyfile(source, tmp)
    if adler32(tmp) != checksum:
        _remove(tmp)
        raise MessengerError(f"copy of {source} to {dest} has another adler32")
    os.replace(tmp, dest)
    os.unlink(source)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
