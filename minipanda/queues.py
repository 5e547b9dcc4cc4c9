"""The server's queue table and the queuedata (PanDA schedconfig shape) it serves to pilots.

Until a queue configuration file is loaded, a queue is registered with default queuedata the first time a job
names it, so a one-VM testbed works without any configuration.
"""
import json

from minipanda import models, states


def default_queuedata(name):
    """Queuedata with the keys pilot3 cannot start without and sane single-core defaults."""
    return {
        "name": name, "nickname": name, "siteid": name, "panda_resource": name, "atlas_site": name,
        "site": name, "state": "ACTIVE", "status": "online", "type": "unified", "pilot_manager": "minipanda",
        "corecount": 1, "maxrss": 2000, "minrss": 0, "maxtime": 86400, "maxwdir": 10000, "maxinputsize": 10000,
        "timefloor": 0, "catchall": "", "container_type": "", "container_options": "",
        "copytools": {"mv": {}}, "acopytools": {"pr": ["mv"], "pw": ["mv"], "pl": ["mv"]},
        "astorages": {}, "direct_access_lan": False, "direct_access_wan": False, "is_cvmfs": False,
        "maxwdir_unit": "MB", "params": {},
    }


def ensure_queues(names):
    """Register each named queue that the server does not know yet, with default queuedata."""
    known = {q.name for q in models.Queue.select(models.Queue.name).where(models.Queue.name.in_(list(names)))}
    now = states.utcnow()
    for name in sorted(set(names) - known):
        models.Queue.insert(name=name, site=name, status="online", queuedata=json.dumps(default_queuedata(name)),
                            modification_time=now).on_conflict_ignore().execute()


def queuedata(name):
    """The queuedata dict of one queue, or None when the server does not know it."""
    row = models.Queue.get_or_none(models.Queue.name == name)
    return json.loads(row.queuedata) if row else None


def all_queuedata():
    """{queue name: queuedata} for every known queue (PanDA's full schedconfig shape)."""
    return {row.name: json.loads(row.queuedata) for row in models.Queue.select().order_by(models.Queue.name)}


def queue_corecount(name):
    """The cores a pilot of this queue offers, used when the pilot does not say."""
    data = queuedata(name)
    try:
        return int(data.get("corecount") or 1) if data else None
    except (TypeError, ValueError):
        return None
