"""The watchdog duty: jobs whose pilot went silent are failed, with the reason, so the retry module can act.

==========================  ===========================================================  ====  =================
job state                   failed when                                                  code  diag starts with
==========================  ===========================================================  ====  =================
sent                        no update ``watchdog.sent_timeout`` s after dispatch (30 m)  102   no reply
starting, running, ...      no heartbeat for the queue's ``pilot_lost_heartbeat_timeout``  100   lost heartbeat
                            (queuedata), else ``watchdog.heartbeat_timeout`` (2 h)
holding                     held ``watchdog.holding_timeout`` s (3 h)                   103   holding too long
==========================  ===========================================================  ====  =================

Codes go to supErrorCode (error source ``sup`` for retry rules). Each change is conditional on the job still
being stale in the same UPDATE, so a heartbeat arriving meanwhile wins. After the sweep, tasks whose jobs are all
over are completed (see :mod:`minipanda.tasks.settle`).
"""
import datetime
import json
import logging

from minipanda.core import models, states
from minipanda.core.db import database
from minipanda.core.states import JobStatus
from minipanda.tasks import settle

log = logging.getLogger(__name__)
LOST_HEARTBEAT, NO_REPLY, HOLDING_TOO_LONG = 100, 102, 103
HEARTBEAT_STATES = (JobStatus.STARTING.value, JobStatus.RUNNING.value, JobStatus.MERGING.value,
                    JobStatus.TRANSFERRING.value)


def _fail(ids, status, code, diag, now):
    """Fail jobs still in ``status`` and still matching ``ids`` (a sub-select with the staleness condition)."""
    Job = models.Job
    if not ids.exists():  # most sweeps: nothing stale, and no write transaction taken to find that out
        return 0
    with database.atomic():
        changed = states.change_job_status(ids, JobStatus.FAILED, diag, from_states=[status], now=now,
                                           fields={Job.sup_error_code: code, Job.sup_error_diag: diag})
    if changed:
        log.warning("watchdog: %d %s jobs failed: %s", len(changed), status, diag)
    return len(changed)


def queue_heartbeat_timeouts(default):
    """{queue: lost-heartbeat timeout in seconds} from queuedata, ``default`` where not set."""
    out = {}
    for queue in models.Queue.select(models.Queue.name, models.Queue.queuedata):
        try:
            value = json.loads(queue.queuedata or "{}").get("pilot_lost_heartbeat_timeout")
            out[queue.name] = float(value) if value else default
        except (TypeError, ValueError):
            out[queue.name] = default
    return out


def run(settings, now=None, wake=None):
    """One sweep; returns {"no_reply", "lost_heartbeat", "holding", "completed"} counts."""
    now = now or states.utcnow()
    Job = models.Job
    seconds = datetime.timedelta(seconds=1)
    out = {}
    sent_cutoff = now - settings.get("watchdog.sent_timeout") * seconds
    stale = Job.select(Job.panda_id).where(Job.status == JobStatus.SENT.value, Job.state_changed_time < sent_cutoff,
                                           (Job.heartbeat_time.is_null()) | (Job.heartbeat_time < sent_cutoff))
    out["no_reply"] = _fail(stale, JobStatus.SENT.value, NO_REPLY,
                            f"no reply: sent to a pilot more than {settings.get('watchdog.sent_timeout'):g} s ago "
                            "and never heard from", now)
    out["lost_heartbeat"] = lost_heartbeats(settings, now)
    hold_cutoff = now - settings.get("watchdog.holding_timeout") * seconds
    holding = Job.select(Job.panda_id).where(Job.status == JobStatus.HOLDING.value,
                                             Job.state_changed_time < hold_cutoff)
    out["holding"] = _fail(holding, JobStatus.HOLDING.value, HOLDING_TOO_LONG,
                           f"holding too long: more than {settings.get('watchdog.holding_timeout'):g} s", now)
    out["completed"] = settle.complete_tasks(now)
    if any(out.values()) and wake:  # the failed jobs go to the retry rules without waiting a period
        wake("settle")
    return out


def lost_heartbeats(settings, now):
    """Fail running-type jobs whose last heartbeat is older than their queue's timeout."""
    Job = models.Job
    default = settings.get("watchdog.heartbeat_timeout")
    timeouts = queue_heartbeat_timeouts(default)
    shortest = min([default] + list(timeouts.values()))
    earliest = now - datetime.timedelta(seconds=shortest)
    suspects = (Job.select(Job.computing_site, Job.status).where(Job.status.in_(HEARTBEAT_STATES),
                                                                 Job.heartbeat_time < earliest)
                .distinct().tuples())
    failed = 0
    for site, status in list(suspects):
        limit = timeouts.get(site, default)
        cutoff = now - datetime.timedelta(seconds=limit)
        ids = Job.select(Job.panda_id).where(Job.status == status, Job.computing_site == site,
                                             Job.heartbeat_time < cutoff)
        failed += _fail(ids, status, LOST_HEARTBEAT, f"lost heartbeat: no update from the pilot for more than "
                                                     f"{limit:g} s (queue {site})", now)
    return failed
