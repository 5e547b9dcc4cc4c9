"""One HTCondor queue's jobs at its schedd, many in ONE call each: their ads (ONE query of the live jobs, then ONE
history query for exactly those that left), their removal (cancels, and jobs held longer than
``batch.held_timeout``), the output of completed jobs fetched back (file transfer), and the job of an access point.
Each function is given the schedd of one :meth:`~harvester.batch.condor_schedd.ScheddAccess.call`; what the jobs'
ads mean is :func:`harvester.batch.htcondor.native_state`'s.
"""
import re

import classad2
import htcondor2

from harvester.batch.base import RETRY, BatchError, BatchStatus
from harvester.batch.condor_schedd import ERRORS

PROJECTION = ["ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason",
              "HoldReasonCode", "EnteredCurrentStatus", "RemoveReason"]
SPOOLING_INPUT = 16  # HoldReasonCode of a job waiting for its spooled input: a hold that ends by itself
JOB_ID = re.compile(r"(\d+)\.(\d+)")
"""An HTCondor job id, ``cluster.proc``."""


def ads(schedd, ids):
    """(live ads, all ads) of ``ids`` by id, each in the order of ``ids``: ONE query of the live jobs, ONE history
    query for those that left; a job leaving the queue can be in neither for a moment, so those found in neither are
    asked once more."""
    live, found = _ads(schedd, ids)
    if len(found) < len(ids):
        again, more = _ads(schedd, [b for b in ids if b not in found])
        live.update(again)
        found.update(more)
    return {b: live[b] for b in ids if b in live}, {b: found[b] for b in ids if b in found}


def _ads(schedd, ids):
    live = {b: ad for b, ad in _by_id(schedd.query(_member(ids), PROJECTION)).items() if b in ids}
    left = [b for b in ids if b not in live]
    past = _by_id(schedd.history(_exactly(left), PROJECTION, match=len(left))) if left else {}
    return live, {**past, **live}


def remove(schedd, ids, reason):
    """Remove jobs in ONE call: the schedd's totals (it answers with totals only), and those of them that say it
    refused (errors, permission denied)."""
    answer = schedd.act(htcondor2.JobAction.Remove, ids, reason=reason)
    counts = {k: v for k, v in answer.items() if k.startswith("Total")}
    return counts, {k: v for k, v in counts.items() if k in ("TotalError", "TotalPermissionDenied") and v}


def remove_overdue(schedd, live, states, limit, now):
    """Jobs held longer than ``limit`` s (not those waiting for their spooled input): removed in one call, failed
    with the hold reason; {id: BatchStatus} of them."""
    overdue = [b for b, ad in live.items() if ad.get("JobStatus") == 5 and ad.get("HoldReasonCode") !=
               SPOOLING_INPUT and now - ad.get("EnteredCurrentStatus", now) > limit]
    if not overdue:
        return {}
    try:
        _, refused = remove(schedd, overdue, f"held longer than {limit} s")
        if refused:
            raise BatchError(f"the schedd refused: {refused}")
    except (*ERRORS, BatchError) as exc:  # still held: removed at a later cycle
        return {b: BatchStatus("submitted", f"{states[b].diag}; removal failed: {exc}") for b in overdue}
    return {b: BatchStatus("failed", f"held for {int(now - live[b]['EnteredCurrentStatus'])} s (limit {limit} s) "
                                     f"and removed; {states[b].diag}") for b in overdue}


def retrieve(schedd, live, states):
    """File transfer: a completed job waits in the queue until its output is fetched; fetch the output of every
    such job (one call) before its end is reported. A fetch that fails leaves the job running for now; {id:
    BatchStatus} of those."""
    ended = [b for b, ad in live.items() if ad.get("JobStatus") == 4]
    if not ended:
        return {}
    try:
        schedd.retrieve(ended)
    except ERRORS as exc:
        return {b: BatchStatus("running", f"{states[b].diag}; its output could not be fetched yet: {exc}")
                for b in ended}
    return {}


def find(schedd, access_point):
    """The id of the job submitted for ``access_point`` (its MinipandaAccessPoint attribute), live or in the
    history, or None."""
    constraint = f"MinipandaAccessPoint == {classad2.quote(access_point)}"
    found = schedd.query(constraint, ["ClusterId", "ProcId"]) or schedd.history(constraint, ["ClusterId", "ProcId"],
                                                                                 match=1)
    return next(iter(_by_id(found)), None)


def _member(ids):
    """The jobs of the clusters of ``ids`` (every proc of each: the live query filters)."""
    return "member(ClusterId, {" + ", ".join(sorted({JOB_ID.fullmatch(b)[1] for b in ids}, key=int)) + "})"


def _exactly(ids):
    """Exactly the jobs ``ids``: the history is read newest first and stops after as many matches as ids, so a
    constraint matching other procs of their clusters could stop before it reached them."""
    procs = {}
    for batch_id in ids:
        cluster, proc = JOB_ID.fullmatch(batch_id).groups()
        procs.setdefault(int(cluster), set()).add(int(proc))
    return " || ".join(f"ClusterId == {cluster} && member(ProcId, {{{', '.join(map(str, sorted(found)))}}})"
                       for cluster, found in sorted(procs.items()))


def _by_id(ads):
    """{"cluster.proc": ad}; an ad without integer ids or status is no answer about any job."""
    found = {}
    for ad in ads:
        keys = ("ClusterId", "ProcId", "JobStatus") if "JobStatus" in ad else ("ClusterId", "ProcId")
        bad = [key for key in keys if not isinstance(ad.get(key), int) or isinstance(ad.get(key), bool)]
        if bad:
            raise BatchError(f"the schedd answered with a malformed job ad ({', '.join(bad)} not an integer): "
                             f"{ad}"[:1000], RETRY)
        found[f"{ad['ClusterId']}.{ad['ProcId']}"] = ad
    return found
