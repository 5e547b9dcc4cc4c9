"""harvester.batch.lsf against recorded IBM Spectrum LSF outputs (tests/data/batch/README.md says where each format
comes from): the #BSUB header, hostile values, bsub on stdin, every native state from one bjobs call, bkill."""
import pytest

from batchhelp import SchedulerTransport, directives, every_line_with, recorded, worker
from harvester.batch import LSFBatch, plugin_for
from harvester.batch.base import FATAL, OK, RETRY, BatchError
from queueconfig import Queue

QUEUE = Queue.model_validate({"name": "LSF_TEST", "batch": {
    "system": "lsf", "partition": "normal", "account": "atlas", "extra_directives": ["-x"],
    "skip_directives": ["-M"], "environment": {"NOTE": "it's $(id) `id` \"#BSUB -q evil\""}}})
HOSTILE = {"A": "'; bkill 0 #", "B": "$(touch /tmp/pwned)", "C": "`id`", "D": "#BSUB -q evil"}


@pytest.fixture
def transport():
    return SchedulerTransport()


def test_header_from_the_queue_config(transport):
    script = LSFBatch(QUEUE, transport).render(worker(QUEUE, environment=HOSTILE))
    assert directives(script, "#BSUB") == [
        "#BSUB -J harvester-LSF_TEST-11", "#BSUB -q normal", "#BSUB -P atlas", "#BSUB -n 8", "#BSUB -R span[hosts=1]",
        "#BSUB -W 70", "#BSUB -cwd /scratch/harvester/workers/LSF_TEST/11",
        "#BSUB -o /scratch/harvester/workers/LSF_TEST/11/job.out",
        "#BSUB -e /scratch/harvester/workers/LSF_TEST/11/job.err", "#BSUB -x"]  # -M skipped
    # LSF may scan the whole file: no line below the header starts with #BSUB, whatever the values hold
    assert every_line_with(script, "#BSUB") == directives(script, "#BSUB")
    assert "export B='$(touch /tmp/pwned)'\n" in script and "export C='`id`'\n" in script


def test_walltime_rounds_up_and_one_core_needs_no_span(transport):
    header = directives(LSFBatch(QUEUE, transport).render(worker(QUEUE, cores=1, walltime_s=61)), "#BSUB")
    assert "#BSUB -W 2" in header and "#BSUB -n 1" in header and "#BSUB -R span[hosts=1]" not in header


@pytest.mark.parametrize("environment, setup, account", [
    ({"X": "a\n#BSUB -q evil"}, (), "atlas"), ({}, ("  #BSUB -q evil",), "atlas"), ({}, (), "at las"),
    ({}, (), "`id`")])
def test_values_that_would_become_directives_are_refused(transport, environment, setup, account):
    queue = QUEUE.model_copy(update={"batch": QUEUE.batch.model_copy(update={"setup": setup, "account": account})})
    with pytest.raises(BatchError) as caught:
        LSFBatch(queue, transport).render(worker(queue, environment=environment))
    assert caught.value.status == FATAL


def test_submit_sends_the_written_script_on_stdin(transport):
    transport.answer("bsub", stdout=recorded("lsf_bsub.out"))
    plugin, spec = LSFBatch(QUEUE, transport), worker(QUEUE)
    plugin.write_script(spec)
    [result] = plugin.submit([spec])
    assert (result.status, result.batch_id) == (OK, "81231")
    [(argv, stdin)] = transport.calls
    assert argv == ("bsub",) and stdin == transport.stored[plugin.script_path(spec)]


def test_a_submission_error_reaches_the_worker(transport):
    plugin, spec = LSFBatch(QUEUE, transport), worker(QUEUE)
    [missing] = plugin.submit([spec])
    assert missing.status == FATAL and "no job script" in missing.message and not transport.calls
    plugin.write_script(spec)
    transport.answer("bsub", 255, stderr=recorded("lsf_bsub_no_queue.err"))
    transport.answer("bsub", 255, stderr=recorded("lsf_bjobs_down.err"))
    no_queue, down = plugin.submit([spec])[0], plugin.submit([spec])[0]
    assert no_queue.status == FATAL and "normalx: No such queue. Job not submitted." in no_queue.message
    assert down.status == RETRY and "LSF is down" in down.message


EXPECTED = {  # batch id -> (worker state, exit code, words in the diag)
    "81231": ("submitted", None, "New job is waiting for scheduling"),
    "81232": ("submitted", None, "suspended by user while pending"), "81233": ("running", None, "LSF state RUN"),
    "81234": ("idle", None, "suspended by its owner"), "81235": ("idle", None, "suspended by LSF"),
    "81236": ("finished", 0, "LSF state DONE"), "81237": ("failed", 140, "TERM_RUNLIMIT"),
    "81238": ("cancelled", None, "TERM_OWNER"), "81239": ("failed", 82, "exit code 82"),
    "81240": ("running", None, "unreachable"), "81241": ("failed", None, "ZOMBI")}


def test_every_native_state_in_one_call(transport):
    transport.answer("bjobs", 255, stdout=recorded("lsf_bjobs.json"), stderr="Job <81299> is not found\n")
    ids = [*EXPECTED, "81299"]
    result = LSFBatch(QUEUE, transport).status(ids)
    assert transport.commands("bjobs") == [
        ("bjobs", "-a", "-json", "-o", "jobid stat exit_code exit_reason pend_reason", *ids)]
    assert result.status == OK and set(result.states) == set(EXPECTED)  # the ERROR record is an unknown id
    for batch_id, (state, exit_code, words) in EXPECTED.items():
        native = result.states[batch_id]
        assert (native.state, native.exit_code) == (state, exit_code), batch_id
        assert words in native.diag, (batch_id, native.diag)
    assert result.states["81237"].native == "EXIT" and result.states["81233"].native == "RUN"
    assert [b for b, s in result.states.items() if s.walltime_exceeded] == ["81237"]  # TERM_RUNLIMIT


def test_lsf_down_is_not_all_jobs_gone(transport):
    transport.answer("bjobs", 255, stderr=recorded("lsf_bjobs_down.err"))
    result = LSFBatch(QUEUE, transport).status(["81231", "81233"])
    assert result.status == RETRY and "LSF is down" in result.message and not result.states


def test_cancel_in_one_call(transport):
    transport.answer("bkill", 255, stdout=recorded("lsf_bkill.out"), stderr=recorded("lsf_bkill.err"))
    result = LSFBatch(QUEUE, transport).cancel(["81231", "81236", "81299", "81233"])
    assert transport.commands("bkill") == [("bkill", "81231", "81236", "81299", "81233")]
    assert {b: s for b, (s, _) in result.results.items()} == {"81231": OK, "81236": OK, "81299": OK,
                                                              "81233": RETRY}
    assert result.results["81233"][1] == "Job <81233>: Operation not permitted"


def test_find_by_job_name_and_output_file(transport):
    transport.answer("bjobs", stdout=recorded("lsf_bjobs_find.json"))
    transport.answer("bjobs", 255, stderr=recorded("lsf_bjobs_find_none.err"))
    transport.answer("bjobs", 255, stderr=recorded("lsf_bjobs_down.err"))
    plugin = LSFBatch(QUEUE, transport)
    assert plugin.find("/scratch/harvester/workers/LSF_TEST/31") == "81242"  # not 80011: another output path
    assert transport.calls[0][0] == (*LSFBatch.find_command, "harvester-LSF_TEST-31")
    assert plugin.find("/scratch/harvester/workers/LSF_TEST/32") is None
    with pytest.raises(BatchError):
        plugin.find("/scratch/harvester/workers/LSF_TEST/33")


def test_plugin_for_gives_the_queue_to_the_plugin(transport):
    plugin = plugin_for(QUEUE, transport, "/spool")
    assert isinstance(plugin, LSFBatch) and plugin.queue is QUEUE
