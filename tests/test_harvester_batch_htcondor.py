"""harvester.batch.htcondor with the real htcondor2 bindings where no daemon is needed: the Submit description as
the bindings render it, and the real ClassAd parser and evaluator for recorded job ads.

No schedd can run here, so the one stand-in is ``StandInSchedd``: an object with the bindings' ``Schedd`` method
signatures (checked below against htcondor2.Schedd itself) that keeps job ads parsed from
tests/data/batch/htcondor_*.ads and answers constraints by evaluating them with classad2, as a schedd does.
"""
import inspect

import classad2
import htcondor2
import pytest

from batchhelp import SchedulerTransport, recorded, worker
from harvester.batch import HTCondorBatch, plugin_for
from harvester.batch.base import FATAL, OK, RETRY, BatchError
from queueconfig import Queue

QUEUE = Queue.model_validate({"name": "CONDOR_TEST", "batch": {
    "system": "htcondor", "account": "group_atlas.prod", "held_timeout": 3600,
    "extra_directives": ['requirements = (OpSys == "LINUX")', "+ProjectName = \"ATLAS\""],
    "skip_directives": ["log ="], "environment": {"SITE": "it's \"q\" $(id) `id` $ENV(HOME)"}}})
NOW = 1717164517
UNSET = object()


class StandInSchedd:
    """The schedd's stand-in (see the module docstring); records each call."""

    def __init__(self, live=(), history=(), fail=None):
        self.live, self.past, self.fail, self.calls, self.next_cluster = list(live), list(history), fail, [], 601

    def _call(self, *call):
        self.calls.append(call)
        if self.fail:
            raise htcondor2.HTCondorException(self.fail)

    def submit(self, description, count=0, spool=False, itemdata=UNSET, queue=None):
        self._call("submit", str(description), count)
        cluster, self.next_cluster = self.next_cluster, self.next_cluster + 1
        ad = classad2.ClassAd({"ClusterId": cluster, "ProcId": 0, "JobStatus": 1})
        for key in description.keys():  # +Attr / MY.Attr become job attributes, as condor_submit makes them
            if key.startswith("MY."):
                ad[key[3:]] = classad2.ExprTree(description[key]).eval()
        self.live.append(ad)
        return type("Result", (), {"cluster": lambda self: cluster})()

    def query(self, constraint="True", projection=[], callback=None, limit=-1, opts=htcondor2.QueryOpt.Default):
        self._call("query", str(constraint))
        return [ad for ad in self.live if classad2.ExprTree(str(constraint)).eval(ad) is True]

    def history(self, constraint=None, projection=[], match=-1, since=None):
        self._call("history", str(constraint), match)
        found = [ad for ad in self.past if classad2.ExprTree(str(constraint)).eval(ad) is True]
        return found[:match] if match >= 0 else found

    def act(self, action, job_spec, reason=None):
        self._call("act", action, list(job_spec), reason)
        hit = [ad for ad in self.live if f"{ad['ClusterId']}.{ad['ProcId']}" in job_spec]
        for ad in hit:
            ad["JobStatus"] = 3
        return classad2.ClassAd({"TotalSuccess": len(hit), "TotalNotFound": len(job_spec) - len(hit),
                                 "TotalError": 0, "TotalPermissionDenied": 0})


def ads(name):
    return list(classad2.parseAds(recorded(name), classad2.ParserType.Old))


def plugin_with(schedd, queue=QUEUE):
    plugin = HTCondorBatch(queue, SchedulerTransport())
    plugin.schedd_class, plugin.clock = lambda location=None: schedd, lambda: NOW
    return plugin


def test_the_stand_in_has_the_bindings_signatures():
    for method in ("submit", "query", "history", "act"):
        real = inspect.signature(getattr(htcondor2.Schedd, method)).parameters
        assert list(inspect.signature(getattr(StandInSchedd, method)).parameters) == list(real), method


def decode_environment(text):
    """HTCondor's quoted environment syntax read back (the inverse of the rules the plugin writes by)."""
    assert text[0] == text[-1] == '"'
    body, pairs, i = text[1:-1].replace('""', '"'), {}, 0
    while i < len(body):
        name, _, rest = body[i:].partition("='")
        value, j = "", 0
        while not (rest[j] == "'" and rest[j + 1:j + 2] != "'"):
            value, j = value + rest[j], j + (2 if rest[j:j + 2] == "''" else 1)
        pairs[name.strip()] = value
        i += len(name) + 2 + j + 1
    return pairs


def test_submit_description_as_the_bindings_render_it():
    hostile = {"A": "x y", "B": "", "C": "'; +Owner = \"root\"", "D": '"$(HOME)" $x$', "E": "`id`"}
    description = plugin_with(StandInSchedd()).description(worker(QUEUE, environment=hostile))
    text = str(description)
    assert text.splitlines()[-1] == "queue" and text.count("queue") == 1
    for line in ["executable = /scratch/harvester/workers/CONDOR_TEST/11/job.sh", "request_cpus = 8",
                 "request_memory = 16000", "initialdir = /scratch/harvester/workers/CONDOR_TEST/11",
                 "MY.MinipandaAccessPoint = \"/scratch/harvester/workers/CONDOR_TEST/11\"", "MY.MaxRuntime = 4200",
                 "periodic_remove = JobStatus == 2 && time() - EnteredCurrentStatus > 4200",
                 "accounting_group = group_atlas.prod", 'requirements = (OpSys == "LINUX")',
                 'MY.ProjectName = "ATLAS"', "batch_name = harvester-CONDOR_TEST-11"]:
        assert line in text.splitlines(), line
    assert "log = " not in text and "arguments" not in text  # skipped; the script takes no arguments
    again = htcondor2.Submit(text)  # what the schedd gets back is what was meant, once the macros are expanded
    assert decode_environment(again.expand("environment")) == {**QUEUE.batch.environment, **hostile}


@pytest.mark.parametrize("environment", [{"X": "a\nqueue 100"}, {"X": "pa$$word"}, {"X": "$(dollar)"}])
def test_values_the_submit_language_cannot_hold_are_refused(environment):
    schedd = StandInSchedd()
    [result] = plugin_with(schedd).submit([worker(QUEUE, environment=environment)])
    assert result.status == FATAL and not schedd.calls


def test_submit_gives_cluster_dot_proc():
    schedd = StandInSchedd()
    results = plugin_with(schedd).submit([worker(QUEUE, 41), worker(QUEUE, 42)])
    assert [(r.status, r.batch_id) for r in results] == [(OK, "601.0"), (OK, "602.0")]
    assert [call[2] for call in schedd.calls] == [1, 1]  # one job per description
    assert schedd.live[1]["MinipandaAccessPoint"] == "/scratch/harvester/workers/CONDOR_TEST/42"


def test_a_refused_submission_reaches_the_worker():
    [result] = plugin_with(StandInSchedd(fail="Failed to connect to schedd")).submit([worker(QUEUE)])
    assert result.status == RETRY and "Failed to connect to schedd" in result.message


EXPECTED = {  # batch id -> (worker state, exit code, words in the diag)
    "501.0": ("submitted", None, "JobStatus 1 (idle)"), "502.0": ("running", None, "JobStatus 2"),
    "503.0": ("submitted", None, "over cgroup memory limit"), "505.0": ("running", None, "transferring output"),
    "506.0": ("idle", None, "suspended"), "507.0": ("cancelled", None, "via condor_rm"),
    "504.0": ("failed", None, "held for 14517 s (limit 3600 s) and removed"),
    "490.0": ("finished", 0, "exit code 0"), "491.0": ("failed", 82, "exit code 82"),
    "492.0": ("failed", None, "killed by signal 9"), "493.0": ("failed", None, "walltime exceeded"),
    "494.0": ("failed", 1, "exit code 1")}


def test_every_job_status_from_one_query_and_one_history():
    schedd = StandInSchedd(ads("htcondor_queue.ads"), ads("htcondor_history.ads"))
    ids = [*EXPECTED, "999.0"]
    result = plugin_with(schedd).status(ids)
    assert [call[0] for call in schedd.calls] == ["query", "history", "act"]
    assert schedd.calls[0][1] == "member(ClusterId, {490, 491, 492, 493, 494, 501, 502, 503, 504, 505, 506, 507, " \
                                 "999})"
    assert schedd.calls[1][1:] == ("member(ClusterId, {490, 491, 492, 493, 494, 999})", 6)  # only those that left
    assert schedd.calls[2] == ("act", htcondor2.JobAction.Remove, ["504.0"], "held longer than 3600 s")
    assert result.status == OK and set(result.states) == set(EXPECTED)  # 999.0: unknown, absent
    for batch_id, (state, exit_code, words) in EXPECTED.items():
        native = result.states[batch_id]
        assert (native.state, native.exit_code) == (state, exit_code), batch_id
        assert words in native.diag, (batch_id, native.diag)
    assert "Permission denied" in result.states["504.0"].diag  # the hold reason is the worker's diag
    assert [b for b, s in result.states.items() if s.walltime_exceeded] == ["493.0"]  # our periodic_remove


def test_a_held_job_whose_removal_fails_stays_followed():
    class RefusingRemove(StandInSchedd):
        def act(self, action, job_spec, reason=None):
            self.calls.append(("act", action, list(job_spec), reason))
            raise htcondor2.HTCondorException("Permission denied")

    result = plugin_with(RefusingRemove(ads("htcondor_queue.ads"))).status(["504.0"])
    assert result.states["504.0"].state == "submitted" and "removal failed: Permission denied" in \
        result.states["504.0"].diag


def test_a_failing_schedd_is_not_all_jobs_gone():
    result = plugin_with(StandInSchedd(fail="SECMAN:2007:Failed to end classad message.")).status(["501.0"])
    assert result.status == RETRY and "SECMAN" in result.message and not result.states


def test_cancel_in_one_call():
    schedd = StandInSchedd(ads("htcondor_queue.ads"))
    result = plugin_with(schedd).cancel(["501.0", "502.0", "999.0", "junk"])
    assert schedd.calls == [("act", htcondor2.JobAction.Remove, ["501.0", "502.0", "999.0"],
                             "cancelled by harvester")]
    assert {b: s for b, (s, _) in result.results.items()} == {"501.0": OK, "502.0": OK, "999.0": OK, "junk": OK}
    failing = plugin_with(StandInSchedd(fail="Connection refused")).cancel(["501.0"])
    assert failing.results["501.0"][0] == RETRY


def test_find_by_access_point_live_then_in_history():
    schedd = StandInSchedd(ads("htcondor_queue.ads"), ads("htcondor_history.ads"))
    plugin = plugin_with(schedd)
    assert plugin.find("/scratch/harvester/workers/CONDOR_TEST/42") == "502.0"
    assert plugin.find("/scratch/harvester/workers/CONDOR_TEST/31") == "491.0"
    assert plugin.find('/scratch/x" || true || "') is None  # quoted: no constraint injection
    with pytest.raises(BatchError):
        plugin_with(StandInSchedd(fail="Connection refused")).find("/scratch/harvester/workers/CONDOR_TEST/42")


def test_a_remote_schedd_is_located_once_through_the_collector():
    located, schedd = [], StandInSchedd(ads("htcondor_queue.ads"))
    location = classad2.ClassAd({"Name": "schedd01.example.org", "MyAddress": "<10.0.0.5:9618>"})

    class StandInCollector:
        def __init__(self, pool=None, security=None):
            self.pool = pool

        def locate(self, daemon_type, name=None):
            located.append((self.pool, daemon_type, name))
            return location

    queue = QUEUE.model_copy(update={"batch": QUEUE.batch.model_copy(
        update={"schedd": "schedd01.example.org", "pool": "cm.example.org:9618"})})
    plugin = plugin_with(schedd, queue)
    plugin.collector_class = StandInCollector
    plugin.schedd_class = lambda location=None: (located.append(location), schedd)[1]
    plugin.status(["501.0"])
    plugin.status(["502.0"])
    assert located == [("cm.example.org:9618", htcondor2.DaemonType.Schedd, "schedd01.example.org"), location,
                       location]


def test_plugin_for_gives_the_queue_to_the_plugin():
    plugin = plugin_for(QUEUE, SchedulerTransport(), "/spool")
    assert isinstance(plugin, HTCondorBatch) and plugin.queue is QUEUE
    assert plugin.transport is not None and plugin.queue.batch.held_timeout == 3600


def test_the_job_script_holds_no_submit_commands():
    """HTCondor reads its options from the submit description: none may end up as a line of the shell script."""
    script = plugin_with(StandInSchedd()).render(worker(QUEUE))
    lines = script.splitlines()
    assert lines[:2] == ["#!/bin/sh", "# harvester worker 11 of queue CONDOR_TEST"]
    assert not any("requirements" in line or "ProjectName" in line for line in lines)
