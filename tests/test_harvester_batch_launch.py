"""Several pilots in one batch job (pilot.per_worker): the script block that starts them, each in its own
directory, forwards a stop signal, waits for all and exits with one code; rendered by the Slurm (srun steps),
local and script plugins. The block is run by a real sh here; the Slurm steps run on a real Slurm in
test_harvester_slurm_live.py."""
import os
import shlex
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


def spec(tmp_path, codes, q=None, script=None):
    """A worker of one pilot per exit code: each pilot is sh printing its HARVESTER_WORKDIR, touching its
    directory and exiting with its code (or running ``script``)."""
    q = q or queue()
    base = tmp_path / "worker"
    pilots = []
    for index, code in enumerate(codes, 1):
        directory = base / f"pilot-{index} {HOSTILE_DIR}"
        directory.mkdir(parents=True)
        body = script or 'echo "$HARVESTER_PILOT $HARVESTER_WORKDIR $1"; touch "$HARVESTER_WORKDIR/ran"; exit "$2"'
        pilots.append(PilotLaunch(str(directory), ("sh", "-c", body, "pilot", f"arg '{index}' $(x)", str(code))))
    return WorkerSpec(worker_id=5, queue=q, access_point=str(base), argv=(), environment={}, cores=6,
                      memory_mb=6000, walltime_s=3600, pilots=tuple(pilots))


def run_block(tmp_path, worker, **kwargs):
    path = tmp_path / "block.sh"
    path.write_text(pilot_lines(worker))
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60, **kwargs)


@pytest.mark.parametrize("codes, expected", [
    ((0, 0, 0), 0),
    ((0, NO_JOB, NO_JOB), 0),  # some pilots found no job: the worker did its work
    ((NO_JOB, NO_JOB, NO_JOB), NO_JOB),  # none found a job: the monitor ends it finished, "found no job"
    ((0, 3, 0), 3),  # a failed pilot fails the worker, whatever the others did
    ((NO_JOB, 0, 137), 137),
])
def test_every_pilot_runs_in_its_own_directory_and_the_job_exits_with_one_code(tmp_path, codes, expected):
    worker = spec(tmp_path, codes)
    result = run_block(tmp_path, worker)
    assert result.returncode == expected, result.stderr
    for index, pilot in enumerate(worker.pilots, 1):
        assert os.path.exists(os.path.join(pilot.directory, "ran"))
        with open(os.path.join(pilot.directory, "pilot.out")) as out:  # its output in its own directory
            assert out.read() == f"{index} {pilot.directory} arg '{index}' $(x)\n"
    assert not (tmp_path / "pwned").exists()


def test_a_stop_signal_to_the_job_script_reaches_every_pilot(tmp_path):
    """A scheduler that signals only the script's process (HTCondor, a TERM to the batch shell): the script
    forwards it; each pilot exits 143 after its trap ran, and the job says so."""
    body = ('trap \'echo stopped > "$HARVESTER_WORKDIR/stopped"; exit 143\' TERM; touch "$HARVESTER_WORKDIR/up"; '
            'while :; do sleep 0.1; done')
    worker = spec(tmp_path, (0, 0, 0), script=body)
    path = tmp_path / "block.sh"
    path.write_text(pilot_lines(worker))
    proc = subprocess.Popen(["sh", str(path)], cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not all(os.path.exists(os.path.join(p.directory, "up")) for p in worker.pilots):
            assert time.monotonic() < deadline, "pilots did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # the script only, not its process group
        assert proc.wait(30) == 143
        assert all(os.path.exists(os.path.join(p.directory, "stopped")) for p in worker.pilots)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_slurm_asks_one_task_per_pilot_and_starts_each_as_an_srun_step(tmp_path):
    q = queue("slurm")
    worker = spec(tmp_path, (0, 0, 0), q=q)
    script = plugin_for(q, SchedulerTransport(), None).render(worker)
    header = directives(script, "#SBATCH")
    assert "#SBATCH --ntasks=3" in header and "#SBATCH --cpus-per-task=2" in header
    assert "#SBATCH --mem=6000M" in header
    launches = [shlex.split(line) for line in script.splitlines() if "srun" in line and line.endswith("&")]
    assert len(launches) == 3
    for index, (argv, pilot) in enumerate(zip(launches, worker.pilots), 1):
        assert argv[:8] == [f"HARVESTER_WORKDIR={pilot.directory}", f"HARVESTER_PILOT={index}", "srun",
                            "--nodes=1", "--ntasks=1", "--cpus-per-task=2", "--mem=2000M", "--exact"]
        assert argv[argv.index("--exact") + 2:argv.index("</dev/null")] == list(pilot.argv)


def test_slurm_steps_leave_out_the_memory_a_site_forbids(tmp_path):
    q = queue("slurm", skip_directives=["--mem"])
    script = plugin_for(q, SchedulerTransport(), None).render(spec(tmp_path, (0, 0, 0), q=q))
    assert "--mem" not in script


@pytest.mark.parametrize("system", ["local", "pbs", "lsf", "htcondor"])
def test_the_other_plugins_start_the_pilots_as_processes_of_the_job_script(tmp_path, system):
    extra = {"partition": "q"} if system in ("pbs", "lsf") else {}
    q = queue(system, **extra)
    worker = spec(tmp_path, (0, 0, 0), q=q)
    script = plugin_for(q, SchedulerTransport(), str(tmp_path / "spool")).render(worker)
    assert pilot_lines(worker) in script and "srun" not in script
    assert "exec " not in script.replace("exec sh -c", "")


def test_one_pilot_is_still_execed(tmp_path):
    q = Queue.model_validate({"name": "ONE", "batch": {"system": "slurm"}})
    worker = WorkerSpec(worker_id=1, queue=q, access_point="/w/1", argv=("pilot", "-a", "/w/1"), environment={},
                        cores=1, memory_mb=100, walltime_s=600)
    assert pilot_lines(worker) == "exec pilot -a /w/1\n"
    assert "srun" not in plugin_for(q, SchedulerTransport(), None).render(worker)
