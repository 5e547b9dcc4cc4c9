"""The server's queue table and the queuedata (PanDA schedconfig shape) it serves to pilots.

Without a queue configuration file, a queue is registered with default queuedata the first time a job names it,
so a one-VM testbed works without any configuration. Once a file is loaded (``minipanda serve --queues FILE``),
the file is the only source of queues: the table mirrors it, and jobs naming any other queue are refused.
"""
import json
import logging

from minipanda.core import counts as live_counts, models, policy, states
from minipanda.core.db import database
from minipanda.errors import UnknownQueue

log = logging.getLogger(__name__)
CONFIG_VERSION_KEY = "queue_config_version"
CONFIG_SOURCE_KEY = "queue_config_source"


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


def config_in_force():
    """(version id, source file) of the loaded queue configuration, or None when queues are registered on demand."""
    rows = {r.key: r.value for r in models.Config.select().where(
        models.Config.key.in_([CONFIG_VERSION_KEY, CONFIG_SOURCE_KEY]))}
    return (rows[CONFIG_VERSION_KEY], rows.get(CONFIG_SOURCE_KEY, "")) if CONFIG_VERSION_KEY in rows else None


def ensure_queues(names):
    """Register each named queue that the server does not know yet, with default queuedata.

    With a queue configuration in force, nothing is registered: an unknown queue raises UnknownQueue instead.
    """
    known = {q.name for q in models.Queue.select(models.Queue.name).where(models.Queue.name.in_(list(names)))}
    configured = config_in_force()
    if configured:
        unknown = sorted(set(names) - known)
        if unknown:
            available = ", ".join(q.name for q in models.Queue.select(models.Queue.name)
                                  .where(models.Queue.status != "offline").order_by(models.Queue.name))
            raise UnknownQueue(f"computingSite: queue {', '.join(unknown)} is not in the queue configuration "
                               f"{configured[1]} (version {configured[0]}); known queues: {available or 'none'}")
        return
    now = states.utcnow()
    for name in sorted(set(names) - known):
        models.Queue.insert(name=name, site=name, status="online", queuedata=json.dumps(default_queuedata(name)),
                            modification_time=now).on_conflict_ignore().execute()


_parsed = {}  # queuedata JSON text -> dict: parsed once, not on every getJob


def _queue_row(name):
    """(status, queuedata dict) of a queue, or None: one hand-written primary-key query (every getJob asks)."""
    db = models.Queue._meta.database
    row = db.execute_sql('SELECT "status", "queuedata" FROM "queue" WHERE "name" = %s' % db.param,
                         (name,)).fetchone()
    if row is None:
        return None
    data = _parsed.get(row[1])
    if data is None:
        if len(_parsed) > 1000:
            _parsed.clear()
        data = _parsed[row[1]] = json.loads(row[1] or "{}")
    return row[0], data


def queuedata(name):
    """The queuedata dict of one queue, or None when the server does not know it."""
    row = models.Queue.get_or_none(models.Queue.name == name)
    return json.loads(row.queuedata) if row else None


def all_queuedata():
    """{queue name: queuedata} for every known queue (PanDA's full schedconfig shape)."""
    return {row.name: json.loads(row.queuedata) for row in models.Queue.select().order_by(models.Queue.name)}


def _corecount(data):
    """The cores a pilot of a queue (its queuedata) offers, used when the pilot does not say."""
    try:
        return int(data.get("corecount") or 1) if data else None
    except (TypeError, ValueError):
        return None


def apply_config(config, queuedata_of, now=None):
    """Mirror a loaded queue configuration into the queue table, in one transaction.

    Queues in the file are inserted or updated; queues no longer in it are set offline (their jobs stay, and are
    dispatched again if the queue comes back). Returns (added, updated, removed) queue names.
    """
    now = now or states.utcnow()
    with database.atomic():
        existing = {q.name: q for q in models.Queue.select()}
        added, updated = [], []
        for name, queue in config.queues.items():
            row = {"site": queue.site or name, "status": queue.status, "modification_time": now,
                   "queuedata": json.dumps(queuedata_of(queue), sort_keys=True)}
            if name in existing:
                models.Queue.update(row).where(models.Queue.name == name).execute()
                updated.append(name)
            else:
                models.Queue.insert(name=name, **row).execute()
                added.append(name)
        removed = sorted(set(existing) - set(config.queues))
        for name in removed:
            data = json.loads(existing[name].queuedata or "{}")
            data.update(status="offline", state="OFFLINE", removed_from_config=True)
            models.Queue.update(status="offline", queuedata=json.dumps(data, sort_keys=True),
                                modification_time=now).where(models.Queue.name == name).execute()
        for key, value in ((CONFIG_VERSION_KEY, config.version_id), (CONFIG_SOURCE_KEY, str(config.source))):
            if models.Config.update(value=value).where(models.Config.key == key).execute() == 0:
                models.Config.insert(key=key, value=value).execute()
    if removed:
        log.warning("queues %s are no longer in %s: set offline", ", ".join(removed), config.source)
    return added, updated, removed


def queue_list():
    """Every known queue with its status, queuedata, waiting and running jobs and, when it is not online, why."""
    counts = {}
    for site, by_state in live_counts.jobs_by_queue(statuses=["activated", "defined", "sent", "starting",
                                                              "running"]).items():
        counts[site] = {"waiting": sum(n for s, n in by_state.items() if s in ("activated", "defined")),
                        "running": sum(n for s, n in by_state.items() if s not in ("activated", "defined"))}
    configured = config_in_force()
    out = []
    for q in models.Queue.select().order_by(models.Queue.name):
        data = json.loads(q.queuedata)
        out.append({"name": q.name, "site": q.site, "status": q.status, "modificationTime": q.modification_time,
                    "queuedata": data, **counts.get(q.name, {"waiting": 0, "running": 0}),
                    "why": _why_not_online(q.status, data, configured)})
    return out


def _why_not_online(status, data, configured):
    if status == "online":
        return ""
    if data.get("removed_from_config"):
        return f"no longer in the queue configuration {configured[1] if configured else ''}".rstrip()
    if status == "test":
        return "status test in the queue configuration: only test jobs are dispatched"
    return f"status {status} in the queue configuration" if configured else f"status {status}"


def dispatch_rules(name):
    """(status, allowed labels or None) of a queue, or None when the queue is unknown."""
    row = _queue_row(name)
    if row is None:
        return None
    return row[0], policy.queue_job_labels(row[1].get("prodsourcelabels"))


def served_labels(name):
    """(status, job labels its pilots may get, or None for any) of a queue, as dispatch applies them.

    An unknown queue is online and takes any label (queues are registered on demand); a queue under test runs
    test jobs only, whatever labels it normally takes. getJob and harvester's queue demand both read this.
    """
    rules = dispatch_rules(name)
    return policy.served_labels(*(rules if rules else ("online", None)))


def offer_rules(name):
    """(:func:`served_labels`, the cores its pilots offer when they do not say) of a queue from ONE read of its
    row: a getJob needs both (each read a statement that lets go of the GIL and waits to win it back)."""
    row = _queue_row(name)
    rules = (row[0], policy.queue_job_labels(row[1].get("prodsourcelabels"))) if row else ("online", None)
    return policy.served_labels(*rules), _corecount(row[1] if row else None)
