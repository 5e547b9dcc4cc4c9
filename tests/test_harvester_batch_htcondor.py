"""harvester.batch.htcondor against a real schedd: the one-host pool of tests/condorhelp.py (Debian 13's HTCondor
23.9) reached through the htcondor2 bindings of this host, as a harvester reaches a site's schedd.

What a one-host pool cannot show stays with ``StandInSchedd`` at the end: a schedd that answers with a malformed job
ad. It has the bindings' ``Schedd`` method signatures (checked against htcondor2.Schedd itself) and answers
constraints by evaluating them with classad2, as a schedd does.
"""
import inspect
import json
import os
import subprocess
import sys

import classad2
import htcondor2
import pytest

from batchhelp import SchedulerTransport, worker
from conftest import eventually
from harvester.batch import HTCondorBatch, plugin_for
from harvester.batch.base import FATAL, OK, RETRY
from harvester.transport import LocalTransport
from queueconfig import Queue

UNSET = object()


def condor_queue(name, **batch):
    return Queue.model_validate({"name": name, "batch": {"system": "htcondor", **batch}})


class Counting:
    """A real :class:`htcondor2.Schedd` whose calls are counted (the plugin's one-call-per-cycle contract)."""

    def __init__(self, schedd, calls):
        self.schedd, self.calls = schedd, calls

    def __getattr__(self, name):
        method = getattr(self.schedd, name)

        def counted(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)
        return counted


@pytest.fixture
def local_pool(condor_pool):
    """The pool as this process's local one: its client configuration read by the bindings for the test."""
    before = os.environ.get("CONDOR_CONFIG")
    os.environ["CONDOR_CONFIG"] = condor_pool.client_config
    htcondor2.reload_config()
    yield condor_pool
    if before is None:
        del os.environ["CONDOR_CONFIG"]
    else:
        os.environ["CONDOR_CONFIG"] = before
    htcondor2.reload_config()


def plugin_of(queue, calls=None):
    plugin = plugin_for(queue, LocalTransport(), None)
    if calls is not None:
        real = plugin.schedd_class
        plugin.schedd_class = lambda *location: Counting(real(*location), calls)
    return plugin


def spec(queue, base, worker_id, command, environment=None, **changes):
    """A worker whose job script runs ``command`` (a shell line) in its access point under ``base``."""
    return worker(queue, worker_id, environment=environment or {"MP_TEST": "1"},
                  access_point=os.path.join(str(base), queue.name, str(worker_id)),
                  argv=("/bin/sh", "-c", command), cores=1, memory_mb=100, **changes)


def submitted(plugin, specs):
    for one in specs:
        plugin.write_script(one)
    results = plugin.submit(specs)
    assert [r.status for r in results] == [OK] * len(specs), [r.message for r in results]
    return [r.batch_id for r in results]


def settled(plugin, ids, final=("finished", "failed", "cancelled")):
    """The status of ``ids`` once every one is final (the pool runs them meanwhile)."""
    def done():
        result = plugin.status(ids)
        return result if result.status == OK and all(
            b in result.states and result.states[b].state in final for b in ids) else None
    result = eventually(done, timeout=180)
    assert result, plugin.status(ids)
    return result.states


@pytest.mark.htcondor
def test_one_transaction_for_every_worker_one_query_one_history(local_pool, tmp_path):
    queue = condor_queue("CONDOR_PLUGIN", account="group_atlas.prod", extra_directives=['+ProjectName = "ATLAS"'])
    calls = []
    plugin = plugin_of(queue, calls)
    hostile = {"A": "x y", "B": "", "C": "'; +Owner = \"root\"", "D": '"$(HOME)" $x$', "E": "`id`"}
    specs = [spec(queue, tmp_path, 41, "env", hostile), spec(queue, tmp_path, 42, "exit 3"),
             spec(queue, tmp_path, 43, "sleep 2; kill -9 $$")]
    ids = submitted(plugin, specs)
    assert calls == ["submit"]  # one transaction: one cluster, a proc per worker, in the workers' order
    cluster = ids[0].split(".")[0]
    assert ids == [f"{cluster}.0", f"{cluster}.1", f"{cluster}.2"]
    ad = htcondor2.Schedd().query(f"ClusterId == {cluster} && ProcId == 0", [
        "MinipandaWorker", "MinipandaAccessPoint", "RequestCpus", "AcctGroup", "ProjectName", "Owner"])[0]
    assert (ad["MinipandaWorker"], ad["MinipandaAccessPoint"]) == (41, specs[0].access_point)
    assert (ad["RequestCpus"], ad["AcctGroup"], ad["ProjectName"], ad["Owner"]) == (1, "group_atlas.prod", "ATLAS", "pilot")
    calls.clear()
    states = settled(plugin, ids)
    assert (states[ids[0]].state, states[ids[0]].exit_code) == ("finished", 0)
    assert (states[ids[1]].state, states[ids[1]].exit_code) == ("failed", 3)
    assert states[ids[2]].state == "failed" and "killed by signal 9" in states[ids[2]].diag
    calls.clear()
    plugin.status(ids)  # they left the queue: one query finds none, one history finds all three
    assert calls == ["query", "history"]
    # the first one alone, though a later proc of its cluster left the queue after it (the history is read newest
    # first, as far as the number of jobs asked for)
    assert plugin.status(ids[:1]).states[ids[0]].state == "finished"
    assert "Job terminated of its own accord" in open(os.path.join(specs[0].access_point, "job.log")).read()
    printed = open(os.path.join(specs[0].access_point, "job.out")).read().splitlines()
    assert all(f"{name}={value}" in printed for name, value in hostile.items())  # as meant, none expanded
    assert f"CONDOR_JOB_ID={ids[0]}" in printed  # the batch id the pilot reports


@pytest.mark.htcondor
def test_find_recovers_a_submission_live_and_after_it_left(local_pool, tmp_path):
    queue = condor_queue("CONDOR_FIND")
    plugin = plugin_of(queue)
    one = spec(queue, tmp_path, 7, "sleep 3")
    [batch_id] = submitted(plugin, [one])
    assert plugin.find(one.access_point) == batch_id  # live
    settled(plugin, [batch_id])
    assert plugin.find(one.access_point) == batch_id  # from the history
    assert plugin.find(one.access_point + "/other") is None
    assert plugin.find('/x" || true || "') is None  # quoted: no constraint injection


@pytest.mark.htcondor
def test_cancel_is_one_remove_and_the_job_ends_cancelled(local_pool, tmp_path):
    queue = condor_queue("CONDOR_CANCEL")
    calls = []
    plugin = plugin_of(queue, calls)
    ids = submitted(plugin, [spec(queue, tmp_path, n, "sleep 300") for n in (1, 2)])
    calls.clear()
    result = plugin.cancel([*ids, "999999.0", "junk"])
    assert calls == ["act"] and {b: s for b, (s, _) in result.results.items()} == dict.fromkeys(
        [*ids, "999999.0", "junk"], OK)
    states = settled(plugin, ids)
    assert {states[b].state for b in ids} == {"cancelled"}
    calls.clear()
    assert "999999.0" not in plugin.status([ids[0], "999999.0"]).states  # unknown: neither live nor in the history
    assert calls == ["query", "history", "query", "history"]  # asked once more, as a job leaving the queue can be
    assert "JobStatus 3 (removed)" in states[ids[0]].diag


@pytest.mark.htcondor
def test_file_transfer_that_cannot_spool_leaves_no_job_behind(local_pool, tmp_path):
    """The inputs go to the schedd after the transaction: when one cannot be read (here the pilot's token is
    missing), the schedd removes the jobs just queued, and every worker of the transaction is retried."""
    queue = condor_queue("CONDOR_SPOOL", file_transfer=True)
    plugin = plugin_of(queue)
    workers = [spec(queue, tmp_path, n, "exit 0") for n in (1, 2)]
    for one in workers:
        plugin.write_script(one)
        for name in ("pilot.pyz", "queuedata.json") + (("pilot.token",) if one.worker_id == 1 else ()):
            (tmp_path / queue.name / str(one.worker_id) / name).write_text("x")
    results = plugin.submit(workers)
    assert [r.status for r in results] == [RETRY, RETRY] and "pilot.token" in results[1].message
    jobs = local_pool.jobs(f'regexp("^{tmp_path}/", MinipandaAccessPoint)', ("ClusterId", "ProcId", "JobStatus"))
    assert eventually(lambda: all(job["JobStatus"] == "3" for job in local_pool.jobs(
        f'regexp("^{tmp_path}/", MinipandaAccessPoint)', ("ClusterId", "ProcId", "JobStatus")).values()))
    assert len(jobs) == 2  # queued, then removed: none waits for input that will not come


REMOTE = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from batchhelp import worker
from harvester.batch import plugin_for
from harvester.transport import LocalTransport
from queueconfig import Queue

queue = Queue.model_validate(json.loads(sys.argv[2]))
plugin = plugin_for(queue, LocalTransport(), None)
located, real = [], plugin.collector_class
plugin.collector_class = lambda pool: (located.append(pool), real(pool))[1]
one = worker(queue, 2, access_point=sys.argv[3], argv=("/bin/sh", "-c", "exit 0"), cores=1, memory_mb=100)
plugin.write_script(one)
[result] = plugin.submit([one])
state = None
while result.status == "ok" and state not in ("finished", "failed", "cancelled"):
    time.sleep(0.5)
    answer = plugin.status([result.batch_id])
    state = answer.states[result.batch_id].state if result.batch_id in answer.states else None
print(json.dumps({"status": result.status, "message": result.message, "state": state, "located": located}))
"""


@pytest.mark.htcondor
def test_a_remote_schedd_with_an_idtoken(condor_pool, tmp_path):
    """A harvester host without any HTCondor configuration: the schedd is located once through the pool's
    collector, IDTOKENS only with the queue's token file. A wrong, missing or loose token file is an error naming
    queue, schedd and method, and nothing is submitted. Each case in a fresh process: the bindings keep one
    security session per schedd and process, so a process that already authenticated would not ask again."""
    (tmp_path / "empty_config").write_text("")
    good, bad, loose = tmp_path / "good.token", tmp_path / "bad.token", tmp_path / "loose.token"
    good.write_text(condor_pool.token() + "\n")
    bad.write_text(condor_pool.token()[:-8] + "AAAAAAAA\n")
    loose.write_text(condor_pool.token() + "\n")
    for path, mode in ((good, 0o600), (bad, 0o600), (loose, 0o644)):
        path.chmod(mode)
    schedd = condor_pool.schedd_name()

    def remote(name, token_file):
        queue = {"name": name, "batch": {"system": "htcondor", "pool": condor_pool.collector, "schedd": schedd,
                                         "token_file": str(token_file)}}
        access_point = str(tmp_path / name)
        done = subprocess.run([sys.executable, "-c", REMOTE, os.path.dirname(__file__), json.dumps(queue),
                               access_point], capture_output=True, text=True, timeout=240,
                              env={**os.environ, "CONDOR_CONFIG": str(tmp_path / "empty_config")})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout), condor_pool.jobs(f'MinipandaAccessPoint == "{access_point}"')

    answer, jobs = remote("CONDOR_REMOTE", good)
    assert (answer["status"], answer["state"]) == (OK, "finished") and len(jobs) == 1, answer
    assert answer["located"] == [condor_pool.collector]  # located once, then reused
    for name, token_file, words in (("CONDOR_BAD", bad, "IDTOKENS authentication with token file"),
                                    ("CONDOR_NONE", tmp_path / "none.token", "No such file"),
                                    ("CONDOR_LOOSE", loose, "readable by others")):
        answer, jobs = remote(name, token_file)
        assert answer["status"] == RETRY and words in answer["message"], answer
        assert f"queue {name}" in answer["message"] and f"schedd {schedd}" in answer["message"]
        assert str(token_file) in answer["message"]
        assert not jobs  # nothing half-submitted


# ---- what a one-host pool cannot show: a stand-in schedd -----------------------------------------------------------
class StandInSchedd:
    """A schedd's stand-in (see the module docstring) that answers every query with ``ads``."""

    def __init__(self, ads):
        self.ads, self.calls = list(ads), []

    def submit(self, description, count=0, spool=False, itemdata=UNSET, queue=None):
        raise AssertionError("not used")

    def query(self, constraint="True", projection=[], callback=None, limit=-1, opts=htcondor2.QueryOpt.Default):
        self.calls.append("query")
        return [ad for ad in self.ads if classad2.ExprTree(str(constraint)).eval(ad) is True]

    def history(self, constraint=None, projection=[], match=-1, since=None):
        self.calls.append("history")
        return []

    def act(self, action, job_spec, reason=None):
        raise AssertionError("not used")


def test_the_stand_in_has_the_bindings_signatures():
    for method in ("submit", "query", "history", "act"):
        real = inspect.signature(getattr(htcondor2.Schedd, method)).parameters
        assert list(inspect.signature(getattr(StandInSchedd, method)).parameters) == list(real), method


@pytest.mark.parametrize("ad, why", [
    ({"ClusterId": 501, "ProcId": "zero", "JobStatus": 2}, "ProcId"),
    ({"ClusterId": 501, "JobStatus": 2}, "ProcId"),
    ({"ClusterId": 501, "ProcId": 0, "JobStatus": "running"}, "JobStatus"),
])
def test_a_malformed_job_ad_is_no_answer_not_a_vanished_job(ad, why):
    """A job ad without a usable id or status tells nothing about the job: the query is retried, so no worker is
    failed as vanished."""
    schedd = StandInSchedd([classad2.ClassAd(ad)])
    plugin = HTCondorBatch(condor_queue("CONDOR_STANDIN"), SchedulerTransport())
    plugin.schedd_class = lambda *location: schedd
    result = plugin.status(["501.0"])
    assert result.status == RETRY and why in result.message and not result.states


def test_an_access_point_the_submit_language_cannot_hold_is_refused_before_any_call():
    queue = condor_queue("CONDOR_REFUSED")
    plugin = plugin_for(queue, SchedulerTransport(), None)
    plugin.schedd_class = lambda *location: pytest.fail("no schedd call for workers that cannot be described")
    results = plugin.submit([worker(queue, n, access_point=path) for n, path in
                             enumerate(['/w/x" y', "/w/$(HOME)", "/w/a b", "/w/x\nqueue 9"])])
    assert [r.status for r in results] == [FATAL] * 4


def test_each_call_sets_the_queues_methods_and_token_and_puts_the_configuration_back(tmp_path):
    """The bindings' configuration is one per process: a call sees its queue's methods and a private copy of its
    token (mode 0600, following the file when it changes), and the process's values are back after it."""
    token = tmp_path / "condor.token"
    token.write_text("first-token\n")
    token.chmod(0o600)
    seen = []

    class Observing(StandInSchedd):
        def query(self, constraint="True", projection=[], callback=None, limit=-1, opts=htcondor2.QueryOpt.Default):
            directory = htcondor2.param["SEC_TOKEN_DIRECTORY"]
            [name] = os.listdir(directory)
            path = os.path.join(directory, name)
            seen.append((htcondor2.param["SEC_CLIENT_AUTHENTICATION_METHODS"], open(path).read(),
                         oct(os.stat(path).st_mode & 0o777), oct(os.stat(directory).st_mode & 0o777)))
            return []

    queue = condor_queue("CONDOR_PARAM", pool="cm.example.org:9618", schedd="s", token_file=str(token))
    plugin = HTCondorBatch(queue, SchedulerTransport())
    plugin.collector_class = lambda pool: type("C", (), {"locate": lambda self, kind, name: {"Name": name}})()
    plugin.schedd_class = lambda *location: Observing([])
    before = {name: htcondor2.param.get(name) for name in ("SEC_TOKEN_DIRECTORY", "SEC_CLIENT_AUTHENTICATION_METHODS")}
    htcondor2.param["SEC_CLIENT_AUTHENTICATION_METHODS"] = "FS,SSL"  # the host's own choice
    try:
        plugin.status(["1.0"])
        token.write_text("second-token\n")
        plugin.status(["1.0"])
        assert list(dict.fromkeys(seen)) == [("IDTOKENS", "first-token", "0o600", "0o700"),
                                             ("IDTOKENS", "second-token", "0o600", "0o700")]
        assert htcondor2.param["SEC_CLIENT_AUTHENTICATION_METHODS"] == "FS,SSL"
        assert htcondor2.param.get("SEC_TOKEN_DIRECTORY") == before["SEC_TOKEN_DIRECTORY"]
    finally:
        if before["SEC_CLIENT_AUTHENTICATION_METHODS"] is None:
            del htcondor2.param["SEC_CLIENT_AUTHENTICATION_METHODS"]
        else:
            htcondor2.param["SEC_CLIENT_AUTHENTICATION_METHODS"] = before["SEC_CLIENT_AUTHENTICATION_METHODS"]


def test_a_remote_schedd_is_located_once_and_again_after_a_failed_call():
    """The collector is asked where the schedd is once, not at every call; a call that fails may mean the schedd
    moved, so the next call locates it again (and the failure names the queue and the schedd)."""
    located, failing = [], []

    class Failing(StandInSchedd):
        def query(self, constraint="True", projection=[], callback=None, limit=-1, opts=htcondor2.QueryOpt.Default):
            if failing:
                raise htcondor2.HTCondorException(failing.pop())
            return []

    queue = condor_queue("CONDOR_MOVED", pool="cm.example.org:9618", schedd="s1")
    plugin = HTCondorBatch(queue, SchedulerTransport())
    plugin.collector_class = lambda pool: type("C", (), {"locate": lambda self, kind, name: (
        located.append(name), {"Name": name})[1]})()
    plugin.schedd_class = lambda *location: Failing([])
    assert [plugin.status(["7.0"]).status for _ in range(2)] == [OK, OK]
    assert located == ["s1"]
    failing.append("connection refused")
    failed = plugin.status(["7.0"])
    assert failed.status == RETRY
    assert "CONDOR_MOVED" in failed.message and "s1" in failed.message and "connection refused" in failed.message
    assert plugin.status(["7.0"]).status == OK and located == ["s1", "s1"]  # located again, once
