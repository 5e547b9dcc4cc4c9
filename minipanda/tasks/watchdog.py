"""The watchdog duty: jobs whose pilot went silent are failed, with the reason, so the retry module can act.

==========================  ===========================================================  ====  =================
job state                   failed when                                                  code  diag starts with
==========================  ===========================================================  ====  =================
sent, to a known pilot      its pilot (the pilotID its getJob sent) has not been heard   100   lost heartbeat
                            from, on any of its jobs, for the queue's lost-heartbeat
                            timeout (below)
sent                        no update ``watchdog.sent_timeout`` s after dispatch (30 m)  102   no reply
                            and, when its pilot is known, that pilot silent as long
starting, running, ...      no heartbeat for the queue's ``pilot_lost_heartbeat_timeout``  100   lost heartbeat
                            (queuedata), else ``watchdog.heartbeat_timeout`` (2 h)
holding                     held ``watchdog.holding_timeout`` s (3 h)                   103   holding too long
==========================  ===========================================================  ====  =================

A job sent to a pilot may stay ``sent`` while that pilot lives: a job without inputs (or with a quick stage-in)
reports nothing until its payload has run ``pilot_running_delay`` s, and a pilot that took several jobs in one
getJob holds the later ones while it runs the first. So a ``sent`` job is judged by its pilot, not by itself: a
pilot is heard from when a job is dispatched to it or one of its jobs gets an update from it (``heartbeat_time``;
the server's own changes, a kill, this watchdog, a worker reported ended, do not count). A pilot silent for the
lost-heartbeat timeout is gone (killed, its node lost, its batch job ended), as a ``starting`` job's pilot is; one
still talking about another job keeps the job, however long it holds it. The pilot keeps its side (pilot.jobreports):
a job whose next report would come later than that timeout after the last one (or its getJob) reports
``starting`` before its payload, and a job not reported within it is not run. A job whose pilot is unknown
(acquired by a harvester in push mode, or by a pilot3 getJob, which sends no pilotID) keeps the plain ``no
reply`` rule; a harvester reporting the job's worker ended fails it at once (minipanda.workers.harvesters, pilot
error 1008).

Codes go to supErrorCode (error source ``sup`` for retry rules). Each change is conditional on the job still
being stale in the same UPDATE (for a ``sent`` job: its pilot still silent), so a report arriving meanwhile wins.
After the sweep, tasks whose jobs are all over are completed (see :mod:`minipanda.tasks.settle`).
"""
import datetime
import json
import logging

from minipanda.core import models, states
from minipanda.core.db import database
from minipanda.core.states import ACTIVE_JOB_STATES, FINAL_JOB_STATES, JobStatus
from minipanda.tasks import settle
from peewee import SQL, fn

log = logging.getLogger(__name__)
LOST_HEARTBEAT, NO_REPLY, HOLDING_TOO_LONG = 100, 102, 103
HEARTBEAT_STATES = (JobStatus.STARTING.value, JobStatus.RUNNING.value, JobStatus.MERGING.value,
                    JobStatus.TRANSFERRING.value)
# where a job stands once a pilot has reported on it (or taken it): its heartbeats are in these states
_ACTIVE = sorted(s.value for s in ACTIVE_JOB_STATES)
_FINAL = sorted(s.value for s in FINAL_JOB_STATES)


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


def pilot_silent_since(cutoff):
    """The condition "the pilot of this job (Job.pilot_id) has not been heard from since ``cutoff``": none of its
    jobs has a heartbeat_time since then, which its getJob (the dispatch) and each of its updates set, and no change
    made by the server itself does (a kill, this watchdog, a worker reported ended). Two sub-selects on the (status,
    state_changed_time) index: the jobs in flight, and the jobs that ended since ``cutoff`` (a job's last report
    never comes after its last state change, so a final job heard from since then also changed state since)."""
    Job = models.Job
    Heard = Job.alias("heard")
    in_flight = Heard.select(SQL("1")).where(Heard.status.in_(_ACTIVE), Heard.heartbeat_time >= cutoff,
                                             Heard.pilot_id == Job.pilot_id)
    ended = Heard.select(SQL("1")).where(Heard.status.in_(_FINAL), Heard.state_changed_time >= cutoff,
                                         Heard.heartbeat_time >= cutoff, Heard.pilot_id == Job.pilot_id)
    return ~fn.EXISTS(in_flight) & ~fn.EXISTS(ended)


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
    if stale.exists():  # most sweeps: none, and the pilots' silence is not looked up (peewee renders it slowly)
        # a job its pilot may still hold is no "no reply" while that pilot talks about its other jobs (module doc)
        stale = stale.where(Job.pilot_id.is_null() | pilot_silent_since(sent_cutoff))
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
    """Fail running-type jobs whose last heartbeat is older than their queue's timeout, and sent jobs whose pilot
    has been silent that long."""
    Job = models.Job
    default = settings.get("watchdog.heartbeat_timeout")
    timeouts = queue_heartbeat_timeouts(default)
    shortest = min([default] + list(timeouts.values()))
    earliest = now - datetime.timedelta(seconds=shortest)
    sent = JobStatus.SENT.value
    # one query finds both kinds: a sent job is a suspect only when a pilot took it (its heartbeat_time is then
    # its dispatch's) and it has heard nothing from it since
    suspects = (Job.select(Job.computing_site, Job.status)
                .where(Job.status.in_(HEARTBEAT_STATES + (sent,)), Job.heartbeat_time < earliest,
                       (Job.status != sent) | Job.pilot_id.is_null(False))
                .distinct().tuples())
    failed = 0
    for site, status in list(suspects):
        limit = timeouts.get(site, default)
        cutoff = now - datetime.timedelta(seconds=limit)
        ids = Job.select(Job.panda_id).where(Job.status == status, Job.computing_site == site,
                                             Job.heartbeat_time < cutoff)
        if status != sent:
            failed += _fail(ids, status, LOST_HEARTBEAT, f"lost heartbeat: no update from the pilot for more than "
                                                         f"{limit:g} s (queue {site})", now)
            continue
        # the pilot is gone as a lost starting job's is: silent on all of its jobs (module doc)
        ids = ids.where(Job.pilot_id.is_null(False), pilot_silent_since(cutoff))
        failed += _fail(ids, sent, LOST_HEARTBEAT, f"lost heartbeat: sent to a pilot that has not been heard from, "
                                                   f"on any of its jobs, for more than {limit:g} s (queue {site})", now)
    return failed
