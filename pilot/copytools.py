"""Copytools and staging: inputs into the job directory, outputs and the log out of it, each checked.

Tools (queuedata ``copytool``, else ``acopytools`` per activity pr/pw/pl):

======== ==================================== ==========================================
tool     stage-in (from input_dir / URL)      stage-out (to output_dir)
======== ==================================== ==========================================
copy     copy                                 copy
mv       copy (the source is never moved)     move (rename, or copy + delete across FS)
symlink  symbolic link to the source          -- (refused: 1323)
http     download from queuedata input_url    PUT to queuedata output_url (the server's store)
======== ==================================== ==========================================

Stage-in checks the size (1099) and the checksum (adler32 or md5: 1145); a missing file is 1331, a transfer past
its time limit 1151. copy, mv and symlink look in input_dir first, then at the input's registered path (surlIn).
Stage-out checks the copy's adler32 against the original (1172); over http the server checks
it (``X-Checksum``) and a refusal is 1172, a 403 (the server refusing the file) 1137 at once, any other failure
after the retries of transient ones (5xx, 401, 408, 429, no connection) 1137, its time limit 1152. An http output's
surl is its URL.
"""
import logging
import os
import shutil
import time

from pilot import comm, errors, tarball
from pilot.errors import PilotError
from pilot.fileutil import Digest, blocks, checksum, create_exclusive, file_digest, safe_name

log = logging.getLogger(__name__)
READ_TOOLS = ("copy", "mv", "symlink", "http")
WRITE_TOOLS = ("copy", "mv", "http")


def _copy(src, dest, deadline, timeout_code, kind="adler32"):
    """Copy ``src`` to ``dest`` (through ``dest``.part, renamed when whole) in one pass that also takes the
    checksum of ``kind`` of the bytes copied (None: none): the :class:`~pilot.fileutil.Digest`, its size included.
    """
    tmp = dest + ".part"
    digest = Digest(kind)
    try:
        with open(src, "rb", buffering=0) as inp, create_exclusive(tmp) as out:
            for block in blocks(inp):
                out.write(block)
                digest.update(block)
                if time.monotonic() > deadline:
                    raise PilotError(timeout_code, f"copy of {os.path.basename(src)} exceeded its time limit")
        shutil.copystat(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return digest


def find_input(spec, input_dir):
    """The source path of an input: <dir>/<scope>/<lfn>, else <dir>/<lfn>, else where the file is registered (the
    job's surlIn, e.g. the directory ``minipanda dataset add`` scanned: on one machine no input_dir is needed);
    or None."""
    for candidate in ([os.path.join(input_dir, spec.scope, spec.lfn)] if spec.scope else []) + \
            [os.path.join(input_dir, spec.lfn)] + ([spec.registered] if spec.registered else []):
        if os.path.isfile(candidate):
            return candidate
    return None


def input_url(template, spec):
    """The URL (or server path) of a file from queuedata ``input_url`` or ``output_url``."""
    url = template
    for name, value in (("lfn", spec.lfn), ("scope", spec.scope), ("dataset", spec.dataset)):
        url = url.replace("{" + name + "}", value)
    return url


def stage_in(job, job_dir, tool, input_dir, url_template, client, timeout, max_input_mb=0):
    """Bring every input of ``job`` into ``job_dir`` with ``tool`` and verify it.

    Args:
        job: the Job (inputs' ``path`` is set).
        job_dir: the job directory.
        tool: copytool name (see the module table).
        input_dir: shared directory for copy/mv/symlink.
        url_template: queuedata input_url for http.
        client: a comm.ServerClient for http (None without network).
        timeout: seconds allowed per file (plus 1 s per 10 MB of its size).
        max_input_mb: queuedata maxinputsize; 0 = no limit.
    """
    if tool not in READ_TOOLS:
        raise PilotError(errors.UNKNOWNCOPYTOOL, f"copytool {tool!r} cannot stage in; known: {READ_TOOLS}")
    total = sum(spec.fsize for spec in job.inputs)
    if max_input_mb and total > max_input_mb * 1e6:
        raise PilotError(errors.SIZETOOLARGE, f"inputs hold {total / 1e6:.0f} MB, queue maxinputsize is "
                                              f"{max_input_mb} MB")
    for spec in job.inputs:
        if not safe_name(spec.lfn):  # Job.validate refuses it first; never joined to a path as it is
            raise PilotError(errors.STAGEINFAILED, f"input {spec.lfn[:80]!r} is not a plain file name")
        dest = os.path.join(job_dir, spec.lfn)
        deadline = time.monotonic() + timeout + spec.fsize / 1e7
        kind = spec.checksum_type
        if tool == "http":
            digest = _download(spec, dest, url_template, client, deadline)
        else:
            source = find_input(spec, input_dir)
            if source is None:
                where = f" nor at {spec.registered}" if spec.registered else ""
                raise PilotError(errors.MISSINGINPUTFILE, f"input {spec.lfn} not found in {input_dir}{where}")
            if tool == "symlink":
                os.symlink(os.path.abspath(source), dest)
                digest = None  # what the link points to is read for its checks
            else:
                digest = _copy(source, dest, deadline, errors.STAGEINTIMEOUT, kind)
        spec.path = dest
        try:
            _verify_input(spec, digest)
        except PilotError:
            os.unlink(dest)  # a file that failed its checks is not kept
            raise
        log.info("staged in %s with %s (%d bytes)", spec.lfn, tool, digest.size if digest else spec.fsize)


def _download(spec, dest, template, client, deadline):
    """The input downloaded to ``dest`` with its checksum taken on the way: the Digest."""
    if client is None or not template:
        raise PilotError(errors.UNKNOWNCOPYTOOL, "copytool http needs network and queuedata input_url")
    url = input_url(template, spec)
    digest = Digest(spec.checksum_type)
    try:
        client.download(url, dest, deadline, digest=digest, max_size=spec.fsize or None)
    except FileNotFoundError:
        raise PilotError(errors.MISSINGINPUTFILE, f"input {spec.lfn} not found at {url}") from None
    except TimeoutError as exc:
        raise PilotError(errors.STAGEINTIMEOUT, str(exc)) from None
    except OSError as exc:
        raise PilotError(errors.STAGEINFAILED, f"download of {spec.lfn} failed: {exc}") from None
    return digest


def _verify_input(spec, digest=None):
    """The staged file's size and checksum against the job's; ``digest`` (taken as the file was written, of the
    job's checksum kind) spares reading it again."""
    size = digest.size if digest is not None else os.path.getsize(spec.path)
    if spec.fsize and size != spec.fsize:
        raise PilotError(errors.STAGEINFAILED, f"input {spec.lfn}: {size} bytes staged, {spec.fsize} expected")
    if spec.checksum_type:
        found = digest.hexdigest() if digest is not None else checksum(spec.path, spec.checksum_type)
        if found != spec.checksum:
            raise PilotError(errors.GETMD5MISMATCH, f"input {spec.lfn}: {spec.checksum_type} {found}, "
                                                    f"{spec.checksum} expected")


def destination(spec, output_dir):
    """Where stage-out puts a file: <output_dir>/<scope>/<lfn>, or <output_dir>/<lfn> without a scope."""
    return os.path.join(output_dir, spec.scope, spec.lfn) if spec.scope else os.path.join(output_dir, spec.lfn)


def stage_out(spec, tool, output_dir, timeout, url_template="", client=None, tries=1, backoff=1.0,
              sleep=time.sleep, measured=False, panda_id=None):
    """Copy, move or upload one produced file (``spec.path``); fill surl, fsize, adler32.

    Args:
        spec: the output's FileSpec.
        tool: copytool name (see the module table).
        output_dir: destination directory for copy/mv.
        timeout: seconds allowed (plus 1 s per 10 MB).
        url_template: queuedata output_url for http.
        client: a comm.ServerClient for http (None without network).
        tries, backoff, sleep: http retries of transient failures, waiting backoff, 2x backoff, ... (at most 60 s).
        measured: ``spec.fsize`` and ``spec.adler32`` were taken as the file was written (the log tarball): the
            file is not read once more for them; a log tarball held in memory (``spec.memory``) goes from there.
        panda_id: the job whose file this is, named to the server with http (a pilot token stores only its
            jobs' outputs and logs).
    """
    if tool not in WRITE_TOOLS:
        raise PilotError(errors.UNKNOWNCOPYTOOL, f"copytool {tool!r} cannot stage out; use one of {WRITE_TOOLS}")
    if tool == "http" and (client is None or not url_template):
        raise PilotError(errors.UNKNOWNCOPYTOOL, "copytool http needs network and queuedata output_url")
    if tool == "http":
        if not measured:
            digest = file_digest(spec.path)
            spec.fsize, spec.adler32 = digest.size, digest.hexdigest()
        _upload(spec, url_template, client, time.monotonic() + timeout + spec.fsize / 1e7, tries, backoff, sleep,
                panda_id)
        return
    if spec.memory is not None:  # a log tarball held in memory: copy and mv need its file
        spec.path, spec.memory = spec.memory.keep(), None
    dest = destination(spec, output_dir)
    copied = None  # the Digest of the bytes copied, taken in the same pass
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        deadline = time.monotonic() + timeout + os.path.getsize(spec.path) / 1e7
        if tool == "mv":
            try:
                os.replace(spec.path, dest)
            except OSError:
                copied = _copy(spec.path, dest, deadline, errors.STAGEOUTTIMEOUT)
                os.unlink(spec.path)
        else:
            copied = _copy(spec.path, dest, deadline, errors.STAGEOUTTIMEOUT)
    except OSError as exc:
        raise PilotError(errors.STAGEOUTFAILED, f"stage-out of {spec.lfn} to {dest} failed: {exc}") from None
    if measured and copied is not None and (copied.size, copied.hexdigest()) != (spec.fsize, spec.adler32):
        raise PilotError(errors.PUTADMISMATCH, f"{spec.lfn}: the copy ({copied.size} bytes, adler32 "
                                               f"{copied.hexdigest()}) differs from what was written")
    if not measured:
        copied = copied or file_digest(dest)  # a rename moved the file itself: read once for its checksum
        spec.fsize, spec.adler32 = copied.size, copied.hexdigest()
    spec.surl = os.path.abspath(dest)
    log.info("staged out %s with %s to %s (%d bytes, adler32 %s)", spec.lfn, tool, dest, spec.fsize, spec.adler32)


def _upload(spec, template, client, deadline, tries, backoff, sleep, panda_id=None):
    if "{scope}" in template and not spec.scope:
        raise PilotError(errors.STAGEOUTFAILED, f"{spec.lfn} has no scope for output_url {template}")
    target = input_url(template, spec)
    url = client.url + target if target.startswith("/") else target
    wait = backoff
    for attempt in range(max(1, tries)):
        try:
            reply = client.upload(spec.path if spec.memory is None else spec.memory.data, url, spec.adler32, deadline,
                                  panda_id)
            break
        except TimeoutError as exc:
            raise PilotError(errors.STAGEOUTTIMEOUT, f"stage-out of {spec.lfn}: {exc}") from None
        except OSError as exc:
            raise PilotError(errors.STAGEOUTFAILED, f"stage-out of {spec.lfn}: {exc}") from None
        except comm.CommError as exc:
            if exc.status == 403:  # a refusal, not a glitch: the same request would be refused again
                log.error("upload of %s refused by the server (HTTP 403), not tried again: %s", spec.lfn,
                          exc.reply.get("message") or exc)
                raise PilotError(errors.STAGEOUTFAILED, f"stage-out of {spec.lfn} refused: {exc}") from None
            log.warning("upload of %s failed, try %d of %d: %s", spec.lfn, attempt + 1, tries, exc)
            if exc.status == 400 and "X-Checksum" in str(exc):
                raise PilotError(errors.PUTADMISMATCH, f"{spec.lfn}: the server refused its adler32: {exc}") from None
            if not exc.transient or attempt + 1 >= tries or time.monotonic() + wait > deadline:
                raise PilotError(errors.STAGEOUTFAILED, f"stage-out of {spec.lfn}: {exc}") from None
            sleep(wait)
            wait = min(wait * 2, 60.0)
    if reply.get("adler32") not in (None, spec.adler32):
        raise PilotError(errors.PUTADMISMATCH, f"{spec.lfn}: the server stored adler32 {reply['adler32']}")
    spec.surl = url
    log.info("staged out %s with http to %s (%d bytes, adler32 %s)", spec.lfn, url, spec.fsize, spec.adler32)


def log_tarball(job, job_dir, dest, extra_files=(), memory_limit=0):
    """Build the log tarball: the job directory without its inputs and outputs, plus ``extra_files`` (the pilot log).

    Written once by :class:`pilot.tarball.Writer`, its size and adler32 taken as it is written, so stage-out need
    not read it again; held in memory while it is at most ``memory_limit`` bytes (0: always a file), else written
    to ``dest`` (:class:`pilot.tarball.Spool`).

    Args:
        job: the Job (its inputs are left out).
        job_dir: the job directory.
        dest: path of the tarball's file (outside the job directory), when it is one.
        extra_files: paths added next to the job directory's files, or (path, offset) pairs: only the bytes from
            ``offset`` on (the pilot log since the previous job's tarball), or (path, offset, end): up to ``end``.
        memory_limit: bytes of a tarball held in memory.

    Returns:
        the closed Spool: ``data`` (in memory) or ``path`` (``on_disk``), ``size`` and ``adler32``.
    """
    top = f"PandaJob_{job.panda_id}"
    skip = {spec.lfn for spec in job.inputs + job.outputs}  # as pilot3: staged apart, never in the log

    def keep(name):
        first = name.split("/")[1] if name.count("/") >= 1 else ""
        return first not in skip and not name.endswith(".part")

    # a file is written in place (no rename: only this job writes it, and it is read once whole, by its stage-out)
    spool = tarball.Spool(dest, memory_limit)
    try:
        out = tarball.Writer(spool)
        out.add_tree(job_dir, top, keep)
        for entry in extra_files:
            path, offset, end = (tuple(entry) + (None,))[:3] if isinstance(entry, tuple) else (entry, 0, None)
            if os.path.isfile(path):
                out.add_file(path, f"{top}/{os.path.basename(path)}", offset, end, mode=0o644)
        out.close()
        spool.close(out.size, out.adler32)
    except OSError as exc:
        spool.discard()  # never a part of a tarball left to pass for a whole one
        raise PilotError(errors.LOGFILECREATIONFAILURE, f"log tarball {os.path.basename(dest)}: {exc}") from None
    return spool
