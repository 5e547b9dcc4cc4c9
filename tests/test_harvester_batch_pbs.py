"""harvester.batch.pbs against recorded OpenPBS outputs (tests/data/batch/README.md says where each format comes
from): the #PBS header, hostile values, qsub parsing and errors, every native state from one qstat call, qdel."""
import os
import subprocess

import pytest

from batchhelp import SchedulerTransport, directives, every_line_with, recorded, worker
from harvester.batch import PBSBatch, plugin_for
from harvester.batch.base import FATAL, OK, RETRY, BatchError
from queueconfig import Queue

QUEUE = Queue.model_validate({"name": "PBS_TEST", "batch": {
    "system": "pbs", "partition": "workq", "account": "atlas", "extra_directives": ["-l place=scatter"],
    "skip_directives": ["-r "], "environment": {"SITE_NOTE": "it's \"quoted\" $(touch /tmp/x) `id` #PBS -q evil"},
    "setup": ["module load python/3.11"]}})
HOSTILE = {"A": "'; rm -rf / #", "B": "$(touch /tmp/pwned)", "C": "`id`", "D": '"$HOME"', "E": "#PBS -q evil"}


@pytest.fixture
def transport():
    return SchedulerTransport()


def test_header_from_the_queue_config(transport):
    script = PBSBatch(QUEUE, transport).render(worker(QUEUE))
    assert directives(script, "#PBS") == [
        "#PBS -N harvester-PBS_TEST-11", "#PBS -q workq", "#PBS -A atlas", "#PBS -l select=1:ncpus=8:mem=16000mb",
        "#PBS -l walltime=01:10:00", "#PBS -o /scratch/harvester/workers/PBS_TEST/11/job.out",
        "#PBS -e /scratch/harvester/workers/PBS_TEST/11/job.err", "#PBS -l place=scatter"]  # '-r n' skipped
    assert "module load python/3.11\nexec python3 /opt/pilot.pyz --queue PBS_TEST\n" in script


def test_hostile_values_cannot_change_the_script(transport, tmp_path):
    spec = worker(QUEUE, environment=HOSTILE, access_point=str(tmp_path),
                  argv=("sh", "-c", 'for v in A B C D E SITE_NOTE; do eval "printf \'%s\\n\' \\"\\$$v\\""; done'))
    script = PBSBatch(QUEUE, transport).render(spec)
    assert every_line_with(script, "#PBS") == directives(script, "#PBS")  # no directive below the header
    assert len(directives(script, "#PBS")) == 8
    spec_script = tmp_path / "job.sh"
    spec_script.write_text(script.replace("module load python/3.11\n", ""))
    out = subprocess.run(["sh", str(spec_script)], capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == [*HOSTILE.values(), QUEUE.batch.environment["SITE_NOTE"]]
    assert not os.path.exists("/tmp/pwned")


@pytest.mark.parametrize("environment, setup, partition", [
    ({"X": "line\n#PBS -q evil"}, (), "workq"),  # a newline would start a line of its own
    ({}, ("#PBS -q evil",), "workq"),  # a setup line read as a directive
    ({}, (), "workq -q evil"),  # a value with a blank (queueconfig refuses it too: the plugin checks again)
    ({}, (), "$(id)"),
])
def test_values_that_would_become_directives_are_refused(transport, environment, setup, partition):
    batch = QUEUE.batch.model_copy(update={"setup": setup, "partition": partition})
    queue = QUEUE.model_copy(update={"batch": batch})
    with pytest.raises(BatchError) as caught:
        PBSBatch(queue, transport).render(worker(queue, environment=environment))
    assert caught.value.status == FATAL


def test_submit_parses_the_job_id(transport):
    transport.answer("qsub", stdout=recorded("pbs_qsub.out"))
    spec = worker(QUEUE)
    [result] = PBSBatch(QUEUE, transport).submit([spec])
    assert (result.status, result.batch_id) == (OK, "4211.pbs01")
    assert transport.calls == [(("qsub", "/scratch/harvester/workers/PBS_TEST/11/job.sh"), None)]


def test_a_submission_error_reaches_the_worker(transport):
    transport.answer("qsub", 170, stderr=recorded("pbs_qsub_unknown_queue.err"))
    transport.answer("qsub", 15, stderr="qsub: cannot connect to server pbs01 (errno=15010)")
    transport.answer("qsub", 0, stdout="garbage\n")
    plugin = PBSBatch(QUEUE, transport)
    unknown_queue, down, garbage = (plugin.submit([worker(QUEUE)])[0] for _ in range(3))
    assert unknown_queue.status == FATAL and "qsub: Unknown queue" in unknown_queue.message
    assert down.status == RETRY and "cannot connect to server" in down.message
    assert garbage.status == RETRY and "garbage" in garbage.message


EXPECTED = {  # batch id -> (worker state, exit code, words in the diag)
    "4211.pbs01": ("submitted", None, "Insufficient amount of resource"), "4212.pbs01": ("submitted", None, "held"),
    "4213.pbs01": ("submitted", None, "waiting"), "4214.pbs01": ("running", None, "Job run at"),
    "4215.pbs01": ("running", None, "exiting"), "4216.pbs01": ("finished", 0, "exit status 0"),
    "4217.pbs01": ("failed", 271, "killed by signal 15"), "4218.pbs01": ("failed", -29, "walltime limit"),
    "4219.pbs01": ("failed", 82, "exit status 82"), "4220.pbs01": ("cancelled", None, "deleted before it ran"),
    "4221[1].pbs01": ("failed", 1, "state X"), "4222[].pbs01": ("running", None, "array begun"),
    "4223.pbs01": ("idle", None, "suspended"), "4224.pbs01": ("submitted", None, "being moved")}


def test_every_native_state_in_one_call(transport):
    transport.answer("qstat", 153, stdout=recorded("pbs_qstat.json"), stderr=recorded("pbs_qstat_unknown.err"))
    ids = [*EXPECTED, "4299.pbs01", "4300.pbs01"]
    result = PBSBatch(QUEUE, transport).status(ids)
    assert transport.commands("qstat") == [("qstat", "-f", "-F", "json", "-x", *ids)]
    assert result.status == OK and set(result.states) == set(EXPECTED)  # unknown ids are simply absent
    for batch_id, (state, exit_code, words) in EXPECTED.items():
        native = result.states[batch_id]
        assert (native.state, native.exit_code) == (state, exit_code), batch_id
        assert words in native.diag, (batch_id, native.diag)
    assert result.states["4218.pbs01"].native == "F" and result.states["4214.pbs01"].native == "R"
    assert [b for b, s in result.states.items() if s.walltime_exceeded] == ["4218.pbs01"]  # -29, not the payload


def test_a_short_id_matches_the_servers_longer_name(transport):
    transport.answer("qstat", stdout=recorded("pbs_qstat.json"))
    assert PBSBatch(QUEUE, transport).status(["4216"]).states["4216"].state == "finished"


def test_an_unreachable_server_is_not_all_jobs_gone(transport):
    transport.answer("qstat", 255, stdout=recorded("pbs_qstat_down.json"), stderr=recorded("pbs_qstat_down.err"))
    transport.answer("qstat", 0, stdout="qstat: not json")
    plugin = PBSBatch(QUEUE, transport)
    down, garbage = plugin.status(["4211.pbs01"]), plugin.status(["4211.pbs01"])
    assert down.status == RETRY and "cannot connect to server" in down.message
    assert garbage.status == RETRY and not garbage.states
    assert PBSBatch(QUEUE, transport).status([]).status == OK and len(transport.calls) == 2  # no ids, no command


def test_an_unknown_id_beside_another_error_is_not_all_jobs_gone(transport):
    """Only a failure whose every message says 'unknown job' is an answer; any other message makes it a retry."""
    transport.answer("qstat", 153, stdout=recorded("pbs_qstat.json"),
                     stderr=recorded("pbs_qstat_unknown.err") + "qstat: Server pbs01 is being shut down\n")
    result = PBSBatch(QUEUE, transport).status(["4211.pbs01", "4299.pbs01"])
    assert result.status == RETRY and "being shut down" in result.message and not result.states


def test_cancel_in_one_call(transport):
    transport.answer("qdel", 153, stderr=recorded("pbs_qdel.err"))
    result = PBSBatch(QUEUE, transport).cancel(["4211.pbs01", "4216.pbs01", "4299.pbs01"])
    assert transport.commands("qdel") == [("qdel", "4211.pbs01", "4216.pbs01", "4299.pbs01")]
    assert {b: s for b, (s, _) in result.results.items()} == {"4211.pbs01": OK, "4216.pbs01": OK,
                                                              "4299.pbs01": OK}
    assert "Job has finished" in result.results["4216.pbs01"][1]


def test_cancel_retries_when_qdel_fails(transport):
    transport.answer("qdel", 255, stderr=recorded("pbs_qstat_down.err"))
    result = PBSBatch(QUEUE, transport).cancel(["4211.pbs01"])
    assert result.results["4211.pbs01"][0] == RETRY and "cannot connect" in result.results["4211.pbs01"][1]


def test_find_by_job_name_and_output_path(transport):
    transport.answer("qselect", stdout="4211.pbs01\n4212.pbs01\n").answer("qselect", stdout="")
    transport.answer("qstat", stdout=recorded("pbs_qstat.json"))
    plugin = PBSBatch(QUEUE, transport)
    assert plugin.find("/scratch/harvester/workers/PBS_TEST/11") == "4211.pbs01"
    assert transport.commands("qselect") == [("qselect", "-x", "-N", "harvester-PBS_TEST-11")]
    assert plugin.find("/scratch/harvester/workers/PBS_TEST/11") is None  # no job of that name
    transport.answer("qselect", 255, stderr="qselect: cannot connect to server pbs01")
    transport.answers["qselect"] = transport.answers["qselect"][-1:]
    with pytest.raises(BatchError):  # "not found" would give the worker up: only say it when qselect answered
        plugin.find("/scratch/harvester/workers/PBS_TEST/11")


def test_plugin_for_gives_the_queue_to_the_plugin(transport):
    plugin = plugin_for(QUEUE, transport, "/spool")
    assert isinstance(plugin, PBSBatch) and plugin.queue is QUEUE
