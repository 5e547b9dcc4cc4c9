"""harvester.batch.slurm against Slurm 22.05 outputs recorded from a real slurmctld (tests/data/batch/README.md says
how each was made): the #SBATCH header from the queue config with every value checked or quoted, sbatch answers and
errors, every native state from ONE squeue call (TIMEOUT kept apart), sacct for the ids squeue forgot, bulk scancel,
find() after a crash; and harvester discover. Real daemons: test_harvester_slurm_live."""
import subprocess

import pytest

from batchhelp import SchedulerTransport, directives, every_line_with, recorded, worker
from harvester.batch import SlurmBatch, plugin_for
from harvester.batch.base import FATAL, OK, RETRY, BatchError, WorkerSpec
from harvester.batch.slurm import STATES, native_state, parse_sacct
from harvester.transport import CommandResult
from queueconfig import Queue

AP = "/scratch/harvester/workers/SLURM_TEST/11"


class FakeTransport:
    """Records each argv and answers from a list of canned results (returncode, stdout, stderr)."""

    def __init__(self, *answers):
        self.answers, self.calls, self.files = list(answers), [], {}

    def run(self, argv, timeout=None, input=None, env=None, cwd=None):
        self.calls.append(list(argv))
        rc, out, err = self.answers.pop(0) if self.answers else (0, "", "")
        return CommandResult(rc, out, err, argv=tuple(argv))


def make_queue(**batch):
    return Queue.model_validate({"name": "SLURM_TEST", "batch": {"system": "slurm", **batch},
                                 "pilot": {"lifetime": 3000}})


QUEUE = make_queue()


@pytest.fixture
def transport():
    return SchedulerTransport()


def test_header_from_the_queue_config(transport):
    queue = make_queue(partition="grid", account="atlas-prod", qos="normal", extra_directives=["--exclusive"],
                       skip_directives=["--mem"], setup=["module load python/3.11"], environment={"SITE": "X Y"})
    script = plugin_for(queue, transport, None).render(worker(queue, cores=4, walltime_s=3601,
                                                              environment={"HARVESTER_WORKER_ID": "11"}))
    assert directives(script, "#SBATCH") == [
        "#SBATCH --job-name=harvester-SLURM_TEST-11", f"#SBATCH --comment={AP}", f"#SBATCH --chdir={AP}",
        f"#SBATCH --output={AP}/slurm-%j.out", f"#SBATCH --error={AP}/slurm-%j.err", "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=4", "#SBATCH --time=0-01:01:00",
        "#SBATCH --signal=B:USR1@60", "#SBATCH --partition=grid",
        "#SBATCH --account=atlas-prod", "#SBATCH --qos=normal",
        "#SBATCH --exclusive"]  # --mem skipped; walltime 3601 s rounded up to whole minutes
    assert script.startswith("#!/bin/sh\n#SBATCH")
    assert f"export SITE='X Y'\nexport HARVESTER_WORKER_ID=11\ncd {AP} || exit 1\nmodule load python/3.11\n" in script
    assert script.rstrip().endswith("exec python3 /opt/pilot.pyz --queue SLURM_TEST")


def test_walltime_asked_is_what_the_pilot_is_told(transport):
    from harvester.handoff import pilots

    queue = make_queue(walltime=7200)
    walltime = pilots.worker_walltime(queue)
    argv = pilots.command(queue, "/w/1", "http://127.0.0.1:1", walltime)
    script = SlurmBatch(queue, transport).render(WorkerSpec(1, "/w/1", argv, {}, 1, 100, walltime))
    assert "#SBATCH --time=0-02:00:00" in directives(script, "#SBATCH")
    assert argv[argv.index("-l") + 1] == str(walltime - pilots.WALLTIME_MARGIN_S)


HOSTILE = ["'; touch pwned; '", "$(touch pwned)", "`touch pwned`", '"; touch pwned ; "', "\\'\\\"",
           "#SBATCH --partition=evil", "a b\tc"]
BREAKS = ["a\n#SBATCH --partition=evil", "x\n\nexit 0", "a\rb", "nul\0"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_cannot_change_the_script(value, transport, tmp_path):
    plugin = SlurmBatch(QUEUE, transport)
    spec = worker(QUEUE, access_point=str(tmp_path), environment={"JOB_PARAM": value}, argv=("printf", "%s", value))
    script = plugin.render(spec)
    assert directives(script, "#SBATCH") == directives(plugin.render(worker(QUEUE, access_point=str(tmp_path))),
                                                       "#SBATCH")
    assert every_line_with(script, "#SBATCH") == directives(script, "#SBATCH")
    # run it with sh: the value arrives literally, in the environment and as the argument
    path = tmp_path / "job.sh"
    path.write_text(script.replace("exec printf", 'printf "%s|" "$JOB_PARAM"; exec printf'))
    result = subprocess.run(["sh", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == f"{value}|{value}"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("value", BREAKS)
def test_a_line_break_in_a_value_is_refused(value, transport):
    for spec in (worker(QUEUE, environment={"JOB_PARAM": value}), worker(QUEUE, argv=("printf", "%s", value))):
        with pytest.raises(BatchError, match="line break") as caught:
            SlurmBatch(QUEUE, transport).render(spec)
        assert caught.value.status == FATAL


@pytest.mark.parametrize("access_point", ["/w/a b", "/w/$(x)", "/w/a\n#SBATCH --qos=evil", "/w/`x`", "/w/'q'"])
def test_an_unsafe_header_value_is_refused_not_pasted(access_point, transport):
    with pytest.raises(BatchError, match="cannot go into a #SBATCH directive|line break") as caught:
        SlurmBatch(QUEUE, transport).render(worker(QUEUE, access_point=access_point))
    assert caught.value.status == FATAL


@pytest.mark.parametrize("batch", [{"setup": ["#SBATCH --partition=evil"]}, {"setup": ["ok\n#SBATCH -p x"]},
                                   {"extra_directives": ["--exclusive\n#SBATCH -p x"]}, {"qos": "a b"}])
def test_queue_values_that_would_become_directives_are_refused(batch, transport):
    queue = QUEUE.model_copy(update={"batch": QUEUE.batch.model_copy(update=batch)})  # past queueconfig's checks
    with pytest.raises(BatchError, match="extra_directives|line break|cannot go into") as caught:
        SlurmBatch(queue, transport).render(worker(queue))
    assert caught.value.status == FATAL


def test_submit_takes_the_id_from_parsable_output(transport):
    transport.answer("sbatch", stdout=recorded("slurm_sbatch.out")).answer("sbatch", stdout="4243;cluster2\n")
    results = SlurmBatch(QUEUE, transport).submit([worker(QUEUE, 1, access_point="/w/1"),
                                                   worker(QUEUE, 2, access_point="/w/2")])
    assert [(r.status, r.batch_id) for r in results] == [(OK, "1"), (OK, "4243")]
    assert transport.commands("sbatch") == [("sbatch", "--parsable", "/w/1/job.sh"),
                                            ("sbatch", "--parsable", "/w/2/job.sh")]


@pytest.mark.parametrize("rc,err,status", [
    (1, recorded("slurm_sbatch_invalid_partition.err"), FATAL),
    (1, "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     FATAL),
    (1, "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some "
        "limit)", FATAL),
    (1, recorded("slurm_sbatch_down.err"), RETRY),
    (1, "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's "
        "size and/or time limits)", RETRY),
    (255, "ssh 127.0.0.1:22: cannot connect: Connection refused", RETRY),
    (127, "sh: 1: sbatch: not found", FATAL),
])
def test_an_sbatch_error_reaches_the_diag(rc, err, status, transport):
    transport.answer("sbatch", rc, stderr=err)
    [result] = SlurmBatch(QUEUE, transport).submit([worker(QUEUE)])
    assert result.status == status and result.batch_id is None
    assert err.strip().splitlines()[-1][:60] in result.message and "sbatch failed" in result.message
    assert f"exit status {rc}" in result.message and "'sbatch --parsable" in result.message  # the evidence
    assert not transport.commands("squeue")  # an answer that came is believed: no lookup


def test_a_lost_sbatch_answer_is_looked_up_before_a_retry(transport):
    transport.answer("sbatch", 255, stderr="ssh root@login:22: connection lost while the command ran", lost=True)
    transport.answer("squeue", stdout=f"77|{AP}|{AP}|\n").answer("squeue", stdout="")
    plugin = SlurmBatch(QUEUE, transport)
    [found] = plugin.submit([worker(QUEUE)])
    assert (found.status, found.batch_id) == (OK, "77") and "answer was lost" in found.message
    [result] = plugin.submit([worker(QUEUE)])
    assert result.status == RETRY and "connection lost" in result.message


def test_an_answer_without_a_job_id_quotes_the_regexp_and_the_output(transport):
    transport.answer("sbatch", stdout="Submitted batch job 12\n").answer("squeue", stdout="")
    [result] = SlurmBatch(QUEUE, transport).submit([worker(QUEUE)])
    assert result.status == RETRY and SlurmBatch.job_id_regexp.pattern in result.message
    assert "Submitted batch job 12" in result.message
    assert transport.commands("squeue")  # looked up first: perhaps it was submitted


EXPECTED = {  # the recorded squeue output: batch id -> (worker state, exit code, native, words in the diag)
    "1": ("finished", 0, "COMPLETED", "Slurm job 1 COMPLETED, exit code 0 on node1"),
    "2": ("failed", 3, "FAILED", "(NonZeroExitCode), exit code 3"),
    "3": ("failed", 82, "FAILED", "exit code 82"),  # the pilot found no job: the monitor counts it finished
    "4": ("failed", 143, "TIMEOUT", "Slurm job 4 TIMEOUT (TimeLimit), exit code 143 on node1"),
    "5": ("cancelled", 143, "CANCELLED", "CANCELLED, exit code 143"),
    "6": ("running", None, "RUNNING", "Slurm job 6 RUNNING on node1"),
    "7": ("submitted", None, "PENDING", "Slurm job 7 PENDING (JobHeldUser)"),
    "8": ("failed", 137, "FAILED", "(JobLaunchFailure), exit code 137"),
}


def test_every_recorded_state_from_one_squeue_call(transport):
    """One squeue for the states, and one more for the time used by the jobs it lists as ended (a value that is no
    duration stays unknown)."""
    transport.answer("squeue", stdout=recorded("slurm_squeue.out"))
    transport.answer("squeue", stdout="1|1:02|\n4|1-00:00:05|\n5|00:10:00|\n8|INVALID|\n6|5:00|\n")
    result = SlurmBatch(QUEUE, transport).status([*EXPECTED, "7", "junk", "-1"])
    assert transport.commands("squeue") == [(*SlurmBatch.status_command, "--jobs=1,2,3,4,5,6,7,8"),
                                            (*SlurmBatch.usage_command, "--jobs=1,2,3,4,5,8")]
    assert result.status == OK and set(result.states) == set(EXPECTED) and not transport.commands("sacct")
    assert {b: s.elapsed_s for b, s in result.states.items() if s.elapsed_s is not None} == {
        "1": 62.0, "4": 86405.0, "5": 600.0}
    assert result.states["1"].charge_source == "squeue TimeUsed"
    for batch_id, (state, exit_code, native, words) in EXPECTED.items():
        found = result.states[batch_id]
        assert (found.state, found.exit_code, found.native) == (state, exit_code, native), batch_id
        assert words in found.diag, (batch_id, found.diag)
    assert [b for b, s in result.states.items() if s.walltime_exceeded] == ["4"]  # TIMEOUT, not a payload failure


@pytest.mark.parametrize("native", sorted(STATES))
def test_every_native_state_has_a_worker_state(native):
    assert native_state("9", native, 1, "", "").state == STATES[native]
    assert native_state("9", "SOMETHING_NEW", 1, "", "").state == "failed"  # an unknown state is no success


def test_sacct_gives_the_elapsed_time_of_ended_jobs():
    states = parse_sacct("40|COMPLETED|0:0|node[1-2]|None|125\n41|RUNNING|0:0|node1|None|30\n")
    assert (states["40"].elapsed_s, states["40"].charge_source) == (125.0, "sacct ElapsedRaw")
    assert states["41"].elapsed_s is None  # still running: nothing charged yet


def test_a_failing_time_used_query_keeps_the_states(transport):
    transport.answer("squeue", stdout="1|COMPLETED|0|node1|None|\n").answer("squeue", 1, stderr="timeout")
    result = SlurmBatch(QUEUE, transport).status(["1"])
    assert result.status == OK and result.states["1"].state == "finished" and result.states["1"].elapsed_s is None


def test_sacct_states_skip_steps():
    states = parse_sacct(recorded("slurm_sacct.out"))
    assert sorted(states) == ["31", "32", "33", "34"]
    assert (states["32"].state, states["32"].exit_code) == ("cancelled", 143)
    assert states["33"].walltime_exceeded and "TimeLimit" in states["33"].diag
    assert states["34"].exit_code == 82


def test_one_status_command_for_a_thousand_workers(transport):
    ids = [str(1000 + i) for i in range(1000)]
    transport.answer("squeue", stdout="".join(f"{i}|RUNNING|0|node1|None|\n" for i in ids))
    result = SlurmBatch(QUEUE, transport).status(ids)
    assert result.status == OK and len(result.states) == 1000
    assert len(transport.calls) == 1 and transport.calls[0][0][-1] == "--jobs=" + ",".join(ids)


def test_jobs_that_left_squeue_are_asked_of_sacct_once(transport):
    transport.answer("squeue", stdout="11|RUNNING|0|n|None|\n").answer("sacct", stdout=recorded("slurm_sacct.out"))
    result = SlurmBatch(QUEUE, transport).status(["11", "31", "34", "99"])
    assert set(result.states) == {"11", "31", "34"}  # 99: unknown to both, so absent
    assert [argv[0] for argv, _ in transport.calls] == ["squeue", "sacct"]
    assert transport.calls[1][0][-1] == "--jobs=31,34,99"


def test_without_accounting_sacct_is_asked_once_only(transport):
    transport.answer("squeue", 1, stderr=recorded("slurm_squeue_unknown.err")).answer("squeue", stdout="")
    transport.answer("sacct", 1, stderr=recorded("slurm_sacct_disabled.err"))
    plugin = SlurmBatch(QUEUE, transport)
    assert plugin.status(["5"]).states == {} and plugin.history_kept is False
    assert plugin.status(["6", "7"]).states == {}
    assert [argv[0] for argv, _ in transport.calls] == ["squeue", "sacct", "squeue"]


def test_a_failing_squeue_or_sacct_is_a_retry_never_all_gone(transport):
    transport.answer("squeue", 1, stderr=recorded("slurm_squeue_down.err"))
    result = SlurmBatch(QUEUE, transport).status(["5"])
    assert result.status == RETRY and "Unable to contact slurm controller" in result.message
    transport.answer("squeue", stdout="").answer("sacct", 1, stderr="sacct: error: Problem talking to the database")
    transport.answers["squeue"].pop(0)
    result = SlurmBatch(QUEUE, transport).status(["5"])
    assert result.status == RETRY and "Problem talking to the database" in result.message and not result.states


def test_bulk_scancel(transport):
    transport.answer("scancel")  # recorded: unknown and ended ids get no line, exit status 0
    results = SlurmBatch(QUEUE, transport).cancel(["5", "6", "5", "junk"]).results
    assert transport.commands("scancel") == [("scancel", "5", "6")]  # one call; a malformed id never reaches it
    assert {b: s for b, (s, _) in results.items()} == {"5": OK, "6": OK, "junk": OK}


def test_scancel_errors_per_job(transport):
    transport.answer("scancel", 1, stderr="scancel: error: Kill job error on job id 6: Invalid job id specified\n"
                                          + recorded("slurm_scancel_denied.err"))
    results = SlurmBatch(QUEUE, transport).cancel(["5", "6", "7", "17"]).results
    assert results["5"][0] == OK and results["17"][0] == OK and results["6"][0] == OK
    assert results["6"][1].startswith("already ended")
    assert results["7"][0] == RETRY and "permission denied" in results["7"][1]


def test_a_lost_scancel_is_a_retry(transport):
    transport.answer("scancel", 255, stderr="ssh 127.0.0.1:22: connection lost while the command ran", lost=True)
    assert SlurmBatch(QUEUE, transport).cancel(["22"]).results["22"][0] == RETRY


def test_find_matches_comment_or_working_directory(transport):
    transport.answer("squeue", stdout=recorded("slurm_squeue_find.out"))
    plugin = SlurmBatch(QUEUE, transport)
    assert plugin.find("/scratch/harvester/workers/SLURM_TEST/2") == "42"
    assert plugin.find("/scratch/harvester/workers/SLURM_TEST/3") is None
    assert transport.calls[0][0] == SlurmBatch.find_command
    transport.answers["squeue"] = [(1, "", recorded("slurm_squeue_down.err"), False)]
    with pytest.raises(BatchError, match="Unable to contact"):
        plugin.find("/scratch/harvester/workers/SLURM_TEST/2")


def test_find_falls_back_on_the_output_file_of_a_job_squeue_forgot(transport):
    """A crash between sbatch and the record, restarted after the job ended and left squeue (MinJobAge): the
    ``slurm-<id>.out`` that its --output made in the access point names it, so it is adopted, not missed."""
    transport.answer("squeue", stdout=recorded("slurm_squeue_find.out"))
    transport.stored["/scratch/harvester/workers/SLURM_TEST/3/slurm-51.out"] = b"pilot output"
    transport.stored["/scratch/harvester/workers/SLURM_TEST/3/job.sh"] = b"#!/bin/sh"
    plugin = SlurmBatch(QUEUE, transport)
    assert plugin.find("/scratch/harvester/workers/SLURM_TEST/3") == "51"
    assert plugin.find("/scratch/harvester/workers/SLURM_TEST/4") is None


def test_plugin_for_gives_the_queue_to_the_plugin(transport):
    plugin = plugin_for(QUEUE, transport, None)
    assert isinstance(plugin, SlurmBatch) and plugin.queue is QUEUE and plugin.transport is transport


# scontrol show partition --oneliner / scontrol show node --oneliner (Slurm 22.05; a third partition set DOWN)
PARTITIONS = """\
PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=n[1-2] PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=16 TotalNodes=2 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=16,mem=32000M,node=2,billing=16
PartitionName=short AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=00:30:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=n1 PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=8 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=8,mem=16000M,node=1,billing=8
PartitionName=gpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=2-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=n2 PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=DOWN TotalCPUs=8 TotalNodes=1
"""
NODES = """\
NodeName=n1 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=8 CPUTot=8 CPULoad=2.70 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=10.0.0.1 NodeHostName=n1 Version=22.05.8 OS=Linux 6.1.0 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=16000 AllocMem=0 FreeMem=22392 Sockets=8 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,short  BootTime=2026-11-30T10:10:50 SlurmdStartTime=2026-11-30T10:54:34 LastBusyTime=2026-11-30T10:54:34 CfgTRES=cpu=8,mem=16000M,billing=8 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s
NodeName=n2 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=4 CPUTot=4 CPULoad=0.10 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=10.0.0.2 NodeHostName=n2 Version=22.05.8 OS=Linux 6.1.0 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=8000 AllocMem=0 FreeMem=7000 Sockets=4 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,gpu  BootTime=2026-11-30T10:10:50 SlurmdStartTime=2026-11-30T10:54:34 LastBusyTime=2026-11-30T10:54:34 CfgTRES=cpu=4,mem=8000M,billing=4 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s
"""


def test_slurm_time_limits():
    from harvester.discover import seconds

    assert [seconds(t) for t in ("UNLIMITED", "30", "00:30:00", "2-00:00:00", "1-02:03:04", "05:00")] == \
        [None, 1800, 1800, 172800, 93784, 300]


def test_discover_turns_partitions_into_queues():
    from harvester.discover import discover
    from queueconfig import loads
    import yaml

    transport = FakeTransport((0, "slurm-wlm 22.05.8\n", ""), (0, PARTITIONS, ""), (0, NODES, ""))
    section = {"type": "ssh", "host": "login.example.org", "user": "panda"}
    text = discover(transport, section, prefix="HPC_", workdir="/scratch/panda")
    assert [c[:3] for c in transport.calls] == [["sinfo", "--version"], ["scontrol", "show", "partition"],
                                                ["scontrol", "show", "node"]]
    queues = yaml.safe_load(text)["queues"]
    assert sorted(queues) == ["HPC_debug", "HPC_short"]  # gpu is DOWN
    debug, short = queues["HPC_debug"], queues["HPC_short"]
    assert debug["resources"]["corecount"] == 4 and debug["resources"]["maxrss"] == 8000  # the smallest node
    assert debug["limits"]["maxWorkers"] == 2 and "walltime" not in debug["batch"]
    assert short["batch"] == {"system": "slurm", "partition": "short", "walltime": 1800}
    assert short["pilot"]["lifetime"] == 1620 and short["resources"]["corecount"] == 8
    assert short["transport"] == {**section, "workdir": "/scratch/panda"} and short["status"] == "offline"
    config = loads(text, "discovered.yaml")
    assert not config.warnings and config.queues["HPC_short"].batch.partition == "short"
