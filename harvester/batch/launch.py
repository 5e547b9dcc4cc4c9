"""The end of every job script: how the worker's pilot(s) start.

One pilot is ``exec``-ed, so its exit code is the job's and the scheduler's signals reach it. Several pilots
(``pilot.per_worker``: one pilot per core slot) start side by side as processes of the job script, each in its own
handoff directory with its own environment and output there. The scheduler's stop signal reaches them with the
script's process group (or Slurm's step), and the script forwards every stop signal the pilot knows (TERM, INT,
HUP, QUIT, USR1, XCPU) to them as well, for schedulers that signal the script alone (HTCondor; Slurm's
``--signal=B:...``); a pilot counts a stop delivered twice within 2 s as one. The script looks at its pilots every
second and collects each once it has ended, writing its exit code to ``pilot.exit`` in its directory (harvester's
monitor then knows that pilot is gone), and exits with one code the monitor understands: 0 when each pilot exited 0
or found no job (82) and at least one ran, 82 when none found a job, otherwise the last other exit code. Every value
is quoted.

Slurm ``srun`` steps are not used: srun answers a SIGTERM (which Slurm sends to every process of the batch step on
``scancel`` and at the time limit) with a SIGKILL to its tasks, so the pilots could not stop warmly and report.
"""
import shlex

NO_JOB = 82  # a pilot's exit code when the server had no job for it (pilot3's and ours)
STOP_SIGNALS = ("TERM", "INT", "HUP", "QUIT", "USR1", "XCPU")  # the pilot's warm-stop signals
PILOT_STDOUT, PILOT_STDERR, PILOT_EXIT = "pilot.out", "pilot.err", "pilot.exit"
# After a stop signal ($signals > 0) no further pilot starts. A pilot is waited for only once it is gone (kill -0
# fails: the shell collected it while sleeping, keeping its status): a trapped signal never interrupts a blocking
# wait, whose status bash would lose (it answers -1 or 127).
_HEAD = f"""signals=0 pids="" left=0 status={NO_JOB}
ended() {{  # $1 the exit code of a pilot, $2 its exit file
  printf '%s\\n' "$1" > "$2"
  case $1 in
    0) if [ "$status" = {NO_JOB} ]; then status=0; fi ;;
    {NO_JOB}) ;;
    *) status=$1 ;;
  esac
}}
"""
_TRAP = """trap 'signals=$((signals+1)); [ -n "$pids" ] && kill -s {sig} $pids 2>/dev/null' {sig}"""
_LAUNCH = ('if [ "$signals" = 0 ]; then {env}{command} </dev/null >{out} 2>{err} & p{index}=$!; '
           'pids="$pids $!"; left=$((left+1)); fi')
_AFTER_LAUNCH = """[ "$signals" = 0 ] || kill -s TERM $pids 2>/dev/null  # a stop that came while pilots were starting
while [ "$left" -gt 0 ]; do
"""
_COLLECT = ('  if [ -n "$p{index}" ] && ! kill -0 "$p{index}" 2>/dev/null; then '
            'wait "$p{index}"; ended "$?" {exit_file}; p{index}=; left=$((left-1)); fi')
_TAIL = """  if [ "$left" -gt 0 ]; then sleep 1; fi
done
[ -n "$pids" ] || status=143
exit "$status"
"""


def pilot_lines(worker):
    """The script lines that run ``worker``'s pilot(s) (a :class:`harvester.batch.base.WorkerSpec`)."""
    if not worker.pilots:
        return f"exec {shlex.join(worker.argv)}\n"
    lines = [_HEAD + "\n".join(_TRAP.format(sig=sig) for sig in STOP_SIGNALS)]
    for index, pilot in enumerate(worker.pilots, 1):
        env = "".join(f"{name}={shlex.quote(str(value))} " for name, value in pilot.environment.items())
        out, err = (shlex.quote(path(pilot, name)) for name in (PILOT_STDOUT, PILOT_STDERR))
        lines.append(_LAUNCH.format(env=env, command=shlex.join(pilot.argv), out=out, err=err, index=index))
    collect = [_COLLECT.format(index=index, exit_file=shlex.quote(path(pilot, PILOT_EXIT)))
               for index, pilot in enumerate(worker.pilots, 1)]
    return "\n".join(lines) + "\n" + _AFTER_LAUNCH + "\n".join(collect) + "\n" + _TAIL


def path(pilot, name):
    return f"{pilot.directory.rstrip('/')}/{name}"
