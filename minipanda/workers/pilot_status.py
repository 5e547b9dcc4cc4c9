"""What a pilot says about the batch job it runs in (``updateWorkerPilotStatus``): that it started or finished.

Only ``pilot_status``, the node and the start or end time are written; everything else about the worker is
harvester's to report (:mod:`minipanda.workers.harvesters`). A worker harvester has not reported yet is created.
"""
from minipanda.core import models, states
from minipanda.core.db import database

PILOT_STATUSES = ("started", "finished")


def record(harvester_id, worker_id, status, site, node, now=None):
    """Store a pilot's ``started`` or ``finished`` for worker (harvester_id, worker_id)."""
    now = now or states.utcnow()
    times = {"start_time": now} if status == "started" else {"end_time": now}
    row = {"harvester_id": harvester_id, "worker_id": worker_id, "pilot_status": status, "computing_site": site,
           "node": node, "modification_time": now, **times}
    Worker = models.Worker
    with database.atomic():
        changed = {k: v for k, v in row.items() if v is not None and k not in ("harvester_id", "worker_id")}
        updated = Worker.update(changed).where(Worker.harvester_id == harvester_id,
                                               Worker.worker_id == worker_id).execute()
        if not updated:
            Worker.insert(row).on_conflict_ignore().execute()
