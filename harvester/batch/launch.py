"""The end of every job script: how the worker's pilot(s) start.

One pilot is ``exec``-ed, so its exit code is the job's and the scheduler's signals reach it. Several pilots
(``pilot.per_worker``) start side by side, each in its own handoff directory with its output there, optionally
through a per-pilot launcher (Slurm: an ``srun`` step); the script forwards SIGTERM/SIGINT/SIGHUP to them, waits for
every one, and exits with one code the monitor understands: 0 when each pilot exited 0 or found no job (82) and at
least one ran, 82 when none found a job, otherwise the last other exit code. Every value is quoted.
"""
import shlex

NO_JOB = 82  # a pilot's exit code when the server had no job for it (pilot3's and ours)
_TRAP = "trap 'kill -s TERM $pids 2>/dev/null' TERM INT HUP"  # set before the first pilot starts
_WAIT = f"""status={NO_JOB}
for pid in $pids; do
  while :; do  # a trapped signal interrupts wait: wait again until that pilot has really ended
    wait "$pid"; rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  case $rc in
    0) if [ "$status" = {NO_JOB} ]; then status=0; fi ;;
    {NO_JOB}) ;;
    *) status=$rc ;;
  esac
done
exit "$status"
"""
PILOT_STDOUT, PILOT_STDERR = "pilot.out", "pilot.err"


def pilot_lines(worker, launcher=None):
    """The script lines that run ``worker``'s pilot(s).

    Args:
        worker: a :class:`harvester.batch.base.WorkerSpec`.
        launcher: for several pilots, ``launcher(worker, index)`` returns the argv put before pilot ``index``'s
            command (1-based), e.g. an ``srun`` step; None starts each as a plain background process.
    """
    if not worker.pilots:
        return f"exec {shlex.join(worker.argv)}\n"
    lines = ['pids=""', _TRAP]
    for index, pilot in enumerate(worker.pilots, 1):
        argv = [*(launcher(worker, index) if launcher else ()), *pilot.argv]
        out, err = (shlex.quote(f"{pilot.directory.rstrip('/')}/{name}") for name in (PILOT_STDOUT, PILOT_STDERR))
        lines.append(f"HARVESTER_WORKDIR={shlex.quote(pilot.directory)} HARVESTER_PILOT={index} "
                     f"{shlex.join(argv)} </dev/null >{out} 2>{err} &")
        lines.append('pids="$pids $!"')
    return "\n".join(lines) + "\n" + _WAIT


def per_pilot(worker):
    """(cores, memory MB) of each pilot of a worker running several."""
    count = max(1, len(worker.pilots))
    return max(1, worker.cores // count), worker.memory_mb // count

