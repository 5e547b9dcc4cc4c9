"""Several pilots in one batch job (pilot.per_worker): the script block that starts them, each in its own
directory with its own environment, forwards a stop signal, waits for all and exits with one code; rendered by
every plugin. The block is run here by the real shells a batch node has (dash's sh and bash, which collect
children differently); on a real Slurm in test_harvester_slurm_live.py."""
import contextlib
import os
import shutil
import signal
import subprocess
import time

import pytest

from batchhelp import SchedulerTransport, directives
from harvester.batch import plugin_for
from harvester.batch.base import PilotLaunch, WorkerSpec
from harvester.batch.launch import NO_JOB, pilot_lines
from queueconfig import Queue

HOSTILE_DIR = "it's $(touch pwned) `x` \"y\""


def queue(system="local", **batch):
    return Queue.model_validate({"name": "MULTI", "batch": {"system": system, **batch},
                                 "pilot": {"lifetime": 3000, "per_worker": 3}})


def spec(tmp_path, codes, script=None):
    """A worker of one pilot per exit code: each pilot is sh printing its HARVESTER_WORKDIR, touching its
    directory and exiting with its code (or running ``script``)."""
    base = tmp_path / "worker"
    pilots = []
    for index, code in enumerate(codes, 1):
        directory = base / f"pilot-{index} {HOSTILE_DIR}"
        directory.mkdir(parents=True)
        body = script or 'echo "$HARVESTER_PILOT $HARVESTER_WORKDIR $1"; touch "$HARVESTER_WORKDIR/ran"; exit "$2"'
        pilots.append(PilotLaunch(str(directory), ("sh", "-c", body, "pilot", f"arg '{index}' $(x)", str(code)),
                                  {"HARVESTER_WORKDIR": str(directory), "HARVESTER_PILOT": str(index)}))
    return WorkerSpec(worker_id=5, access_point=str(base), argv=(), environment={}, cores=6,
                      memory_mb=6000, walltime_s=3600, pilots=tuple(pilots))


SHELLS = [["sh"]] + ([["bash", "--posix"]] if shutil.which("bash") else [])  # bash --posix: /bin/sh on RHEL


def run_block(tmp_path, worker, shell=("sh",)):
    path = tmp_path / "block.sh"
    path.write_text(pilot_lines(worker))
    return subprocess.run([*shell, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60)


@pytest.mark.parametrize("codes, expected", [
    ((0, 0, 0), 0),
    ((0, NO_JOB, NO_JOB), 0),  # some pilots found no job: the worker did its work
    ((NO_JOB, NO_JOB, NO_JOB), NO_JOB),  # none found a job: the monitor ends it finished, "found no job"
    ((0, 3, 0), 3),  # a failed pilot fails the worker, whatever the others did
    ((NO_JOB, 0, 137), 137),
])
@pytest.mark.parametrize("shell", SHELLS, ids=["sh", "bash"][:len(SHELLS)])
def test_every_pilot_runs_in_its_own_directory_and_the_job_exits_with_one_code(tmp_path, codes, expected, shell):
    worker = spec(tmp_path, codes)
    result = run_block(tmp_path, worker, shell)
    assert result.returncode == expected, result.stderr
    for index, pilot in enumerate(worker.pilots, 1):
        assert os.path.exists(os.path.join(pilot.directory, "ran"))
        with open(os.path.join(pilot.directory, "pilot.out")) as out:  # its output in its own directory
            assert out.read() == f"{index} {pilot.directory} arg '{index}' $(x)\n"
    assert not (tmp_path / "pwned").exists()


@contextlib.contextmanager
def running_block(tmp_path, worker, shell=("sh",)):
    """The worker's block running in a session of its own; killed with its pilots if the test leaves it running."""
    path = tmp_path / "block.sh"
    path.write_text(pilot_lines(worker))
    proc = subprocess.Popen([*shell, str(path)], cwd=tmp_path, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def started(worker, name="up"):
    deadline = time.monotonic() + 30
    while not all(os.path.exists(os.path.join(p.directory, name)) for p in worker.pilots):
        assert time.monotonic() < deadline, "pilots did not start"
        time.sleep(0.05)


STOPPABLE = ('for sig in TERM USR1; do trap "echo $sig > \\"\\$HARVESTER_WORKDIR/stopped\\"; exit $2" $sig; done; '
             'touch "$HARVESTER_WORKDIR/up"; '
             'while :; do sleep 1 & wait $!; done')  # wait: the trap runs at once, the pilot ends at once


@pytest.mark.parametrize("shell", SHELLS, ids=["sh", "bash"][:len(SHELLS)])
@pytest.mark.parametrize("codes, expected", [((143, 143, 143), 143), ((0, 0, 0), 0), ((0, 3, 0), 3)])
def test_a_stop_signal_to_the_job_script_reaches_every_pilot(tmp_path, shell, codes, expected):
    """A scheduler that signals only the script's process (HTCondor, a TERM to the batch shell): the script
    forwards it; each pilot stops warmly with its own exit code, and the job's code is built from those codes,
    not from the interrupted wait (bash collects a child inside the trap)."""
    worker = spec(tmp_path, codes, script=STOPPABLE)
    with running_block(tmp_path, worker, shell) as proc:
        started(worker)
        proc.send_signal(signal.SIGTERM)  # the script only, not its process group
        assert proc.wait(30) == expected
        assert all(os.path.exists(os.path.join(p.directory, "stopped")) for p in worker.pilots)


@pytest.mark.parametrize("shell", SHELLS, ids=["sh", "bash"][:len(SHELLS)])
def test_every_stop_signal_of_the_pilot_is_forwarded_as_itself(tmp_path, shell):
    """Slurm's --signal=B:USR1@N signals the batch shell alone: the pilots get USR1 (a warm stop for them), not
    a TERM, and none is left behind."""
    worker = spec(tmp_path, (0, 0), script=STOPPABLE)
    with running_block(tmp_path, worker, shell) as proc:
        started(worker)
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(30) == 0
        for pilot in worker.pilots:
            with open(os.path.join(pilot.directory, "stopped")) as handle:
                assert handle.read().strip() == "USR1"


def test_each_pilot_s_end_is_written_in_its_directory_as_it_happens(tmp_path):
    """pilot.exit appears in a pilot's directory when that pilot ends, while its siblings still run: how the
    monitor tells an ended pilot (killed, out of memory: no kill_worker file) from one still waiting for a job."""
    release = tmp_path / "release"
    body = ('touch "$HARVESTER_WORKDIR/up"; [ "$2" = 3 ] && exit 3; '
            f'while [ ! -e {release} ]; do sleep 0.1; done; exit "$2"')
    worker = spec(tmp_path, (3, 0), script=body)
    with running_block(tmp_path, worker) as proc:
        first, second = (os.path.join(p.directory, "pilot.exit") for p in worker.pilots)
        deadline = time.monotonic() + 30
        while not os.path.exists(first):
            assert time.monotonic() < deadline and proc.poll() is None, "pilot-1's end was not written"
            time.sleep(0.05)
        assert not os.path.exists(second) and proc.poll() is None
        with open(first) as handle:
            assert handle.read() == "3\n"
        release.touch()
        assert proc.wait(30) == 3
        with open(second) as handle:
            assert handle.read() == "0\n"


@pytest.mark.parametrize("shell", SHELLS, ids=["sh", "bash"][:len(SHELLS)])
def test_a_stop_to_the_process_group_is_one_stop_for_each_pilot(tmp_path, shell):
    """The usual case (local plugin, Slurm, PBS): the scheduler signals every process of the job, and the script
    forwards the signal too; the pilots are not left running, the job ends with their code."""
    worker = spec(tmp_path, (0, 0), script=STOPPABLE)
    with running_block(tmp_path, worker, shell) as proc:
        started(worker)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0


def test_slurm_asks_one_task_with_every_pilot_s_cores(tmp_path):
    q = queue("slurm")
    worker = spec(tmp_path, (0, 0, 0))
    script = plugin_for(q, SchedulerTransport(), None).render(worker)
    header = directives(script, "#SBATCH")
    assert {"#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=6000M"} <= set(header)
    assert script.endswith(pilot_lines(worker)) and "srun" not in script


@pytest.mark.parametrize("system", ["local", "pbs", "lsf", "htcondor"])
def test_every_plugin_starts_the_pilots_as_processes_of_the_job_script(tmp_path, system):
    extra = {"partition": "q"} if system in ("pbs", "lsf") else {}
    q = queue(system, **extra)
    worker = spec(tmp_path, (0, 0, 0))
    script = plugin_for(q, SchedulerTransport(), str(tmp_path / "spool")).render(worker)
    assert pilot_lines(worker) in script and "srun" not in script
    assert "exec " not in script.replace("exec sh -c", "")


def test_one_pilot_is_still_execed(tmp_path):
    q = Queue.model_validate({"name": "ONE", "batch": {"system": "slurm"}})
    worker = WorkerSpec(worker_id=1, access_point="/w/1", argv=("pilot", "-a", "/w/1"), environment={},
                        cores=1, memory_mb=100, walltime_s=600)
    assert pilot_lines(worker) == "exec pilot -a /w/1\n"
    assert "srun" not in plugin_for(q, SchedulerTransport(), None).render(worker)
