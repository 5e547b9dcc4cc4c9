"""What a worker runs: the pilot zipapp (built once per version) and the pilot's command line and environment.

A queue runs our pilot by default. ``pilot.command`` (an argv list) replaces it with any program, e.g. PanDA's
pilot3; its placeholders and those of ``pilot.environment`` are filled by :func:`queueconfig.placeholders.expand`,
which substitutes the known names and nothing else. The values harvester fills in are its own (paths it made, the
queue's validated name, numbers), never text from a job.
"""
import functools
import logging
import os
import sys
import threading

import pilot
from harvester.handoff import zipcache
from pilot import queuedata, zipapp
from queueconfig import allocation

log = logging.getLogger(__name__)
_build_lock = threading.Lock()
TOKEN_FILE = "pilot.token"
QUEUEDATA_FILE = "queuedata.json"
ZIPAPP_FILE = "pilot.pyz"
STORAGEDATA_FILE = "ddmendpoints.json"  # pilot3's --storagedata-url (harvester.messenger writes it)
REMOTE_ZIPAPP_DIR = ".pilot"  # in the workers directory on the submit host: the zipapp each access point copies
WALLTIME_MARGIN_S = 60  # the pilot stops asking for jobs this long before the batch system would kill it


@functools.lru_cache(maxsize=1)
def _source_digest():
    """The digest of the pilot's sources (pilot.zipapp.digest): an edited checkout gets a new zipapp without a
    version bump."""
    if not os.path.isdir(zipapp.package_dir()):  # running from a zipapp: the version says it all
        return None
    return zipapp.digest()


def zipapp_path(home):
    """The pilot zipapp of this version under ``home``: on first use copied from the builds this user keeps
    (harvester.handoff.zipcache), else built and kept there; once per version and sources, not per worker."""
    digest = _source_digest()
    path = os.path.join(home, "pilot", f"pilot-{pilot.__version__}-{digest[:16] if digest else 'z'}.pyz")
    with _build_lock:
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if digest and zipcache.take(digest, path):
                log.info("copied the pilot zipapp %s from the cache %s", path, zipcache.directory())
            else:
                zipapp.build(path)
                log.info("built the pilot zipapp %s", path)
                if digest:
                    zipcache.keep(digest, path)
    return path


def build_ahead(home):
    """Build (or copy from the cache) the zipapp now (harvester's start, on a thread of its own) rather than in the
    first submission, which would wait the ~0.1 s compiling the pilot takes; a failure is logged here and met again
    by the submission."""
    try:
        zipapp_path(home)
    except Exception as exc:  # noqa: BLE001 - the submitter builds it (and reports the error) when it needs it
        log.warning("building the pilot zipapp ahead failed: %s", exc)


def job_label(queue):
    """The prodSourceLabel our pilot asks for: what its queue serves (unified when both production and user)."""
    return queuedata.job_label(list(queue.prodSourceLabels))


def file_mode(queue):
    """True when the pilot must not talk to the server at all: a push queue whose nodes have no network."""
    return queue.mode == "push" and queue.wnconnectivity == "none"


def per_worker(queue):
    """Pilots one new worker of ``queue`` runs (on all its nodes; always 1 for OneToOne)."""
    return allocation.pilots_per_worker(queue)


def worker_walltime(queue):
    """Walltime asked of the batch system for one worker, s."""
    return queue.batch.walltime or queue.pilot.lifetime + 600


def handoff_dirs(access_point, n_pilots):
    """The handoff directory of each pilot of a worker: the access point itself for one pilot, ``pilot-1`` ...
    ``pilot-N`` inside it when several run side by side (each reads and writes its own job file, heartbeats and
    outbox). The zipapp and the token stay in the access point, shared."""
    if n_pilots <= 1:
        return [access_point]
    return [os.path.join(access_point, f"pilot-{index}") for index in range(1, n_pilots + 1)]


def placeholders(queue, access_point, server_url, walltime, handoff_dir=None):
    handoff_dir = handoff_dir or access_point
    return {"access_point": handoff_dir, "queue": queue.name,
            "queuedata": os.path.join(handoff_dir, QUEUEDATA_FILE),
            "storagedata": os.path.join(handoff_dir, STORAGEDATA_FILE), "walltime": str(walltime),
            "server": "" if file_mode(queue) else server_url,
            "token_file": "" if file_mode(queue) else os.path.join(access_point, TOKEN_FILE)}


def command(queue, access_point, server_url, walltime, python=None, handoff_dir=None):
    """The argv one pilot of the worker runs; ``handoff_dir`` is its own directory when the worker runs several
    (the ``{access_point}`` placeholder names it), otherwise the access point."""
    values = placeholders(queue, access_point, server_url, walltime, handoff_dir)
    if queue.pilot.command:
        from queueconfig.placeholders import expand

        return tuple(expand(part, values) for part in queue.pilot.command)
    lifetime = max(60, walltime - WALLTIME_MARGIN_S)
    workdir = values["access_point"]
    argv = [python or sys.executable, os.path.join(access_point, ZIPAPP_FILE), "-q", queue.name,
            "-a", workdir, "--harvester-workdir", workdir, "--queuedata", values["queuedata"],
            "-l", str(lifetime), "-j", job_label(queue)]
    if not queue.batch.file_transfer:  # with HTCondor's file transfer the log comes back as the job's stderr
        argv.append("--quiet")
    if file_mode(queue):
        argv += ["-z", "--harvester-submit-mode", "PUSH"]
    else:
        argv += ["--url", server_url, "--token-file", values["token_file"],
                 "--harvester-submit-mode", "PUSH" if queue.mode == "push" else "PULL"]
    return tuple(argv) + tuple(queue.pilot.extra_args)


def environment(queue, access_point, server_url, walltime, harvester_id, worker_id, handoff_dir=None):
    """Environment variables of the job script: harvester's ids for the pilot, then the queue's own; for one of
    several pilots, ``handoff_dir`` is its directory (HARVESTER_WORKDIR and the placeholders name it)."""
    values = placeholders(queue, access_point, server_url, walltime, handoff_dir)
    env = {"HARVESTER_ID": harvester_id, "HARVESTER_WORKER_ID": str(worker_id),
           "HARVESTER_WORKDIR": values["access_point"]}
    if queue.pilot.environment:
        from queueconfig.placeholders import expand

        env.update({name: expand(value, values) for name, value in queue.pilot.environment.items()})
    return env
