"""harvester.batch.slurm on canned scheduler output (the formats of Slurm 22.05, recorded from a real slurmctld):
the script from the queue config with every value quoted, sbatch answers and errors, the squeue/sacct parsers,
ONE status command for many workers, bulk scancel, find() after a crash. Real daemons: test_harvester_slurm_live."""
import shlex
import subprocess

import pytest

from harvester.batch import plugin_for
from harvester.batch.base import FATAL, OK, RETRY, BatchError, WorkerSpec
from harvester.batch.slurm import parse_sacct, parse_squeue
from harvester.transport import CommandResult
from queueconfig import Queue

# squeue --noheader --states=all --Format=JobID:|,State:|,exit_code:|,NodeList:|,Reason:|
SQUEUE = """\
11|COMPLETED|0|node1|None|
12|FAILED|768|node1|NonZeroExitCode|
13|PENDING|0||Resources|
14|RUNNING|0|node2|None|
15|TIMEOUT|0|node1|TimeLimit|
16|CANCELLED|15|node1|None|
17|FAILED|20992|node1|NonZeroExitCode|
18|OUT_OF_MEMORY|0|node1|OutOfMemory|
19|NODE_FAIL|0|node3|NodeDown|
20|PREEMPTED|0|node1|None|
21|BOOT_FAIL|0|node1|None|
22|DEADLINE|0||DeadLine|
"""
# sacct --noheader --parsable2 --allocations --format=JobID,State,ExitCode,NodeList,Reason
SACCT = """\
31|COMPLETED|0:0|node1|None
31.batch|COMPLETED|0:0|node1|
32|CANCELLED by 0|0:15|node1|None
33|TIMEOUT|0:0|node2|TimeLimit
34|FAILED|82:0|node1|NonZeroExitCode
"""


class FakeTransport:
    """Records each argv and answers from a list of canned results (returncode, stdout, stderr)."""

    def __init__(self, *answers):
        self.answers, self.calls, self.files = list(answers), [], {}

    def run(self, argv, timeout=None, input=None, env=None, cwd=None):
        self.calls.append(list(argv))
        rc, out, err = self.answers.pop(0) if self.answers else (0, "", "")
        return CommandResult(rc, out, err, argv=tuple(argv))

    def makedirs(self, path, mode=0o755):
        pass

    def write_file(self, path, data, mode=0o644):
        self.files[path] = data


def make_queue(**batch):
    return Queue.model_validate({"name": "HPC_Q", "batch": {"system": "slurm", **batch},
                                 "pilot": {"lifetime": 3000}})


def make_worker(queue=None, worker_id=7, access_point="/scratch/panda/workers/7", env=None, argv=None):
    return WorkerSpec(worker_id=worker_id, queue=queue or make_queue(), access_point=access_point,
                      argv=tuple(argv or ("python3", f"{access_point}/pilot.pyz", "-q", "HPC_Q", "-l", "3540")),
                      environment=env or {"HARVESTER_WORKER_ID": str(worker_id)}, cores=4, memory_mb=8000,
                      walltime_s=3601)


def plugin(*answers, queue=None):
    return plugin_for(queue or make_queue(), FakeTransport(*answers), None)


def test_script_from_the_queue_config():
    queue = make_queue(partition="grid", account="atlas-prod", qos="normal", extra_directives=["--exclusive"],
                       skip_directives=["--mem"], setup=["module load python/3.11"], environment={"SITE": "X Y"})
    script = plugin(queue=queue).render(make_worker(queue))
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header == ["#SBATCH --job-name=harvester-HPC_Q-7", "#SBATCH --comment=/scratch/panda/workers/7",
                      "#SBATCH --chdir=/scratch/panda/workers/7",
                      "#SBATCH --output=/scratch/panda/workers/7/slurm-%j.out",
                      "#SBATCH --error=/scratch/panda/workers/7/slurm-%j.err", "#SBATCH --nodes=1",
                      "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=4", "#SBATCH --time=0-01:01:00",
                      "#SBATCH --partition=grid", "#SBATCH --account=atlas-prod", "#SBATCH --qos=normal",
                      "#SBATCH --exclusive"]  # --mem skipped; walltime 3601 s rounded up to whole minutes
    assert script.startswith("#!/bin/sh\n#SBATCH")
    assert "export SITE='X Y'\nexport HARVESTER_WORKER_ID=7\nmodule load python/3.11\n" in script
    assert script.rstrip().endswith("exec python3 /scratch/panda/workers/7/pilot.pyz -q HPC_Q -l 3540")


def test_walltime_asked_is_what_the_pilot_is_told():
    from harvester import pilots

    queue = make_queue(walltime=7200)
    walltime = pilots.worker_walltime(queue)
    argv = pilots.command(queue, "/w/1", "http://127.0.0.1:1", walltime)
    script = plugin(queue=queue).render(WorkerSpec(1, queue, "/w/1", argv, {}, 1, 100, walltime))
    assert "#SBATCH --time=0-02:00:00" in script
    assert argv[argv.index("-l") + 1] == str(walltime - pilots.WALLTIME_MARGIN_S)


HOSTILE = ["'; touch pwned; '", "$(touch pwned)", "`touch pwned`", '"; touch pwned ; "', "\\'\\\"",
           "#SBATCH --partition=evil", "a b\tc"]
BREAKS = ["a\n#SBATCH --partition=evil", "x\n\nexit 0", "a\rb", "nul\0"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_cannot_change_the_script(value, tmp_path):
    worker = make_worker(env={"JOB_PARAM": value}, argv=("printf", "%s", value))
    script = plugin().render(worker)
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header == [line for line in plugin().render(make_worker()).splitlines() if line.startswith("#SBATCH")]
    body = script.split("# harvester worker 7 of queue HPC_Q\n", 1)[1]
    # run the body with sh: the value arrives literally, in the environment and as the argument
    path = tmp_path / "body.sh"
    path.write_text(body.replace("exec printf", 'printf "%s|" "$JOB_PARAM"; exec printf'))
    result = subprocess.run(["sh", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == f"{value}|{value}"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("value", BREAKS)
def test_a_line_break_in_a_value_is_refused(value):
    for worker in (make_worker(env={"JOB_PARAM": value}), make_worker(argv=("printf", "%s", value))):
        with pytest.raises(BatchError, match="line break") as caught:
            plugin().render(worker)
        assert caught.value.status == FATAL


@pytest.mark.parametrize("access_point", ["/w/a b", "/w/$(x)", "/w/a\n#SBATCH --qos=evil", "/w/`x`", "/w/'q'"])
def test_an_unsafe_header_value_is_refused_not_pasted(access_point):
    with pytest.raises(BatchError, match="cannot go into an #SBATCH line|line break") as caught:
        plugin().render(make_worker(access_point=access_point))
    assert caught.value.status == FATAL


def test_a_setup_line_may_not_pose_as_a_directive():
    queue = make_queue(setup=["#SBATCH --partition=evil"])
    with pytest.raises(BatchError, match="extra_directives"):
        plugin(queue=queue).render(make_worker(queue))


def test_submit_takes_the_id_from_parsable_output():
    batch = plugin((0, "4242\n", ""), (0, "4243;cluster2\n", ""))
    results = batch.submit([make_worker(worker_id=1, access_point="/w/1"), make_worker(worker_id=2,
                                                                                        access_point="/w/2")])
    assert [(r.status, r.batch_id) for r in results] == [(OK, "4242"), (OK, "4243")]
    assert batch.transport.calls == [["sbatch", "--parsable", "/w/1/job.sh"], ["sbatch", "--parsable", "/w/2/job.sh"]]


@pytest.mark.parametrize("rc,err,status", [
    (1, "sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid "
        "partition name specified\n", FATAL),
    (1, "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     FATAL),
    (1, "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some "
        "limit)", FATAL),
    (1, "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)", RETRY),
    (1, "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's "
        "size and/or time limits)", RETRY),
    (255, "ssh 127.0.0.1:22: connection lost while the command ran", RETRY),
    (127, "sh: 1: sbatch: not found", FATAL),
])
def test_an_sbatch_error_reaches_the_diag(rc, err, status):
    [result] = plugin((rc, "", err)).submit([make_worker()])
    assert result.status == status and result.batch_id is None
    assert err.splitlines()[-1][:60] in result.message and "sbatch failed" in result.message


def test_a_lost_sbatch_answer_is_looked_up_before_a_retry():
    lost = (255, "", "ssh root@login:22: connection lost while the command ran")
    [result] = plugin(lost, (0, "77|/w/7|/w/7|\n", "")).submit([make_worker(access_point="/w/7")])
    assert (result.status, result.batch_id) == (OK, "77") and "found by its comment" in result.message
    [result] = plugin(lost, (0, "", "")).submit([make_worker(access_point="/w/7")])
    assert result.status == RETRY and "connection lost" in result.message


def test_squeue_states_reasons_and_exit_codes():
    states = parse_squeue(SQUEUE)
    assert {k: v.state for k, v in states.items()} == {
        "11": "finished", "12": "failed", "13": "submitted", "14": "running", "15": "failed", "16": "cancelled",
        "17": "failed", "18": "failed", "19": "failed", "20": "failed", "21": "failed", "22": "failed"}
    assert states["12"].exit_code == 3 and "NonZeroExitCode" in states["12"].diag
    assert states["17"].exit_code == 82  # 82 << 8: the pilot found no job (the monitor counts it finished)
    assert states["15"].diag == "Slurm job 15 TIMEOUT (TimeLimit), exit code 0 on node1"
    assert states["16"].exit_code == 128 + 15
    assert states["13"].diag == "Slurm job 13 PENDING (Resources)" and states["13"].exit_code is None
    assert "NodeDown" in states["19"].diag


def test_sacct_states_skip_steps():
    states = parse_sacct(SACCT)
    assert sorted(states) == ["31", "32", "33", "34"]
    assert (states["32"].state, states["32"].exit_code) == ("cancelled", 143)
    assert states["33"].state == "failed" and "TimeLimit" in states["33"].diag
    assert states["34"].exit_code == 82


def test_one_status_command_for_a_thousand_workers():
    ids = [str(1000 + i) for i in range(1000)]
    out = "".join(f"{i}|RUNNING|0|node1|None|\n" for i in ids)
    batch = plugin((0, out, ""))
    result = batch.status(ids)
    assert result.status == OK and len(result.states) == 1000
    assert len(batch.transport.calls) == 1
    call = batch.transport.calls[0]
    assert call[:3] == ["squeue", "--noheader", "--states=all"] and call[-1] == "--jobs=" + ",".join(ids)


def test_jobs_that_left_squeue_are_asked_of_sacct_once():
    batch = plugin((0, "11|RUNNING|0|n|None|\n", ""), (0, SACCT, ""))
    result = batch.status(["11", "31", "34", "99"])
    assert set(result.states) == {"11", "31", "34"}  # 99: unknown to both, so absent
    assert [c[0] for c in batch.transport.calls] == ["squeue", "sacct"]
    assert batch.transport.calls[1][-1] == "--jobs=31,34,99"


def test_without_accounting_sacct_is_asked_once_only():
    batch = plugin((1, "", "slurm_load_jobs error: Invalid job id specified\n"),
                   (1, "", "Slurm accounting storage is disabled\n"), (0, "", ""), (0, "", ""))
    assert batch.status(["5"]).states == {}
    assert batch.accounting is False
    assert batch.status(["6", "7"]).states == {}
    assert [c[0] for c in batch.transport.calls] == ["squeue", "sacct", "squeue"]


def test_a_failing_squeue_is_a_retry_with_the_evidence():
    result = plugin((1, "", "squeue: error: Unable to contact slurm controller (connect failure)")).status(["5"])
    assert result.status == RETRY and "Unable to contact slurm controller" in result.message


def test_bulk_scancel():
    batch = plugin((0, "", ""))
    assert batch.cancel(["5", "6"]).results == {"5": (OK, "scancel sent"), "6": (OK, "scancel sent")}
    assert batch.transport.calls == [["scancel", "5", "6"]]
    batch = plugin((1, "", "scancel: error: Kill job error on job id 6: Invalid job id specified\n"
                           "scancel: error: Kill job error on job id 7: Access/permission denied\n"))
    results = batch.cancel(["5", "6", "7"]).results
    assert results["5"] == (OK, "scancel sent") and results["6"] == (OK, "already ended")
    assert results["7"][0] == RETRY and "permission denied" in results["7"][1]
    assert plugin((255, "", "ssh: connection lost")).cancel(["5"]).results["5"][0] == RETRY


def test_find_matches_comment_or_working_directory():
    out = "40|/w/1|/w/1|\n41|/home/x|other|\n42|/w/2|/w/2|\n"
    assert plugin((0, out, "")).find("/w/2") == "42"
    assert plugin((0, out, "")).find("/w/3") is None
    batch = plugin((0, out, ""))
    batch.find("/w/1")
    assert batch.transport.calls[0][:4] == ["squeue", "--noheader", "--states=all", "--me"]
    with pytest.raises(BatchError):
        plugin((1, "", "squeue: error: Unable to contact slurm controller")).find("/w/1")


def test_commands_are_argv_lists_quoted_once_for_ssh():
    from harvester.ssh import command_line

    line = command_line(["sbatch", "--parsable", "/w/a b/job.sh"], env={"X": "$(no)"}, cwd="/w/a b")
    words = shlex.split(line)
    assert words[:3] == ["exec", "sh", "-c"] and words[4:] == ["sh", "/w/a b", "X=$(no)", "sbatch", "--parsable",
                                                               "/w/a b/job.sh"]


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
