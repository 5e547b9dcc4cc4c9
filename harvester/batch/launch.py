"""The end of every job script: how the worker's pilot(s) start.

One pilot is ``exec``-ed, so its exit code is the job's and the scheduler's signals reach it. Several pilots
(``pilot.per_worker``: one pilot per core slot) start side by side as processes of the job script, each in its own
handoff directory with its own environment and output there. The scheduler's stop signal reaches them with the
script's process group (or Slurm's step), and the script forwards SIGTERM/SIGINT/SIGHUP to them as well, for
schedulers that signal the script alone (a pilot counts the same stop twice within 2 s as one). The script waits for
every pilot and exits with one code the monitor understands: 0 when each pilot exited 0 or found no job (82) and at
least one ran, 82 when none found a job, otherwise the last other exit code. Every value is quoted.

Slurm ``srun`` steps are not used: srun answers a SIGTERM (which Slurm sends to every process of the batch step on
``scancel`` and at the time limit) with a SIGKILL to its tasks, so the pilots could not stop warmly and report.
"""
import shlex

NO_JOB = 82  # a pilot's exit code when the server had no job for it (pilot3's and ours)
# a signal bumps $signals; pilots not started yet are then never started
_TRAP = """signals=0 pids=""
trap 'signals=$((signals+1)); [ -n "$pids" ] && kill -s TERM $pids 2>/dev/null' TERM INT HUP"""
_LAUNCH = '[ "$signals" = 0 ] && {{ {env}{command} </dev/null >{out} 2>{err} & pids="$pids $!"; }}'
# Each pilot is waited for only once it is gone (kill -0 fails: the shell collected it while sleeping, keeping its
# status): a trapped signal never interrupts a blocking wait, whose status bash would lose (it answers -1 or 127).
_WAIT = f"""status={NO_JOB}
for pid in $pids; do
  while kill -0 "$pid" 2>/dev/null; do sleep 1; done
  wait "$pid"; rc=$?
  case $rc in
    0) if [ "$status" = {NO_JOB} ]; then status=0; fi ;;
    {NO_JOB}) ;;
    *) status=$rc ;;
  esac
done
[ -n "$pids" ] || status=143
exit "$status"
"""
PILOT_STDOUT, PILOT_STDERR = "pilot.out", "pilot.err"


def pilot_lines(worker):
    """The script lines that run ``worker``'s pilot(s) (a :class:`harvester.batch.base.WorkerSpec`)."""
    if not worker.pilots:
        return f"exec {shlex.join(worker.argv)}\n"
    lines = [_TRAP]
    for pilot in worker.pilots:
        env = "".join(f"{name}={shlex.quote(str(value))} " for name, value in pilot.environment.items())
        out, err = (shlex.quote(f"{pilot.directory.rstrip('/')}/{name}") for name in (PILOT_STDOUT, PILOT_STDERR))
        lines.append(_LAUNCH.format(env=env, command=shlex.join(pilot.argv), out=out, err=err))
    return "\n".join(lines) + "\n" + _WAIT
