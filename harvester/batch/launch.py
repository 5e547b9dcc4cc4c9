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

A worker of several nodes (``resources.nodes_per_worker``, Slurm) starts ONE launcher per node with ``srun``: the
job script runs itself again as each task of that step (``job.sh node``), and each node's task runs the block above
for its own pilots (chosen by ``SLURM_NODEID``). The batch shell forwards every stop signal to srun as USR1, never
as TERM: srun answers a TERM by asking slurmctld to SIGKILL the step (its tasks would die before they report),
while USR1 it passes on to every task, and each node's launcher passes it to its pilots (USR1 is a warm stop for
them). On ``scancel`` and at the time limit Slurm signals every process of every step itself (TERM, then KILL after
``KillWait``); srun's SIGKILL request then comes too late to matter, slurmctld already ending the job. Slurm's
``--signal=B:USR1@60`` warns the batch shell before the time limit. When the step has ended, the script reads every
pilot's ``pilot.exit`` (on the shared file system) and exits with one code, as for one node.
"""
import dataclasses
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


def pilot_lines(worker, script_path=None):
    """The script lines that run ``worker``'s pilot(s) (a :class:`harvester.batch.base.WorkerSpec`); a worker of
    several nodes needs ``script_path``, the job script that each node runs again."""
    if worker.nodes > 1 and worker.pilots:
        return node_lines(worker, script_path)
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


_NODE_HEAD = """if [ "${1-}" = node ]; then  # one task of the srun step below: this node's pilots
case "${SLURM_NODEID-}" in
"""
_NODE_TAIL = """*) echo "harvester: no pilots for node ${SLURM_NODEID-unknown} (SLURM_NODEID)" >&2; exit 1 ;;
esac
fi
"""
_STEP_TRAP = """trap 'signals=$((signals+1)); [ -n "$step" ] && kill -s USR1 "$step" 2>/dev/null' {sig}"""
_STEP = """signals=0 step= step_status=0
{traps}
if [ "$signals" = 0 ]; then {srun} </dev/null & step=$!; fi
[ "$signals" = 0 ] || [ -z "$step" ] || kill -s USR1 "$step" 2>/dev/null
while [ -n "$step" ] && kill -0 "$step" 2>/dev/null; do sleep 1; done
if [ -n "$step" ]; then wait "$step"; step_status=$?; fi
status={no_job} counted=0
for exit_file in {exit_files}; do
  if [ -f "$exit_file" ]; then code=$(cat "$exit_file"); elif [ "$step_status" != 0 ]; then code=$step_status; else continue; fi
  counted=1
  case $code in
    0) if [ "$status" = {no_job} ]; then status=0; fi ;;
    {no_job}) ;;
    *) status=$code ;;
  esac
done
[ "$counted" = 1 ] || status=143
exit "$status"
"""


def node_lines(worker, script_path):
    """The script lines that run a worker of several nodes: each node's pilots (when the script runs as a task of
    the srun step, ``job.sh node``), then the step itself (in the batch shell)."""
    per_node = len(worker.pilots) // worker.nodes
    cases = []
    for node in range(worker.nodes):
        mine = worker.pilots[node * per_node:(node + 1) * per_node]
        block = pilot_lines(dataclasses.replace(worker, pilots=mine, nodes=1))
        cases.append(f"{node})\n{block};;\n")
    srun = ["srun", f"--nodes={worker.nodes}", f"--ntasks={worker.nodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=0", "/bin/sh", script_path, "node"]
    exit_files = " ".join(shlex.quote(path(pilot, PILOT_EXIT)) for pilot in worker.pilots)
    step = _STEP.format(traps="\n".join(_STEP_TRAP.format(sig=sig) for sig in STOP_SIGNALS), srun=shlex.join(srun),
                        exit_files=exit_files, no_job=NO_JOB)
    return _NODE_HEAD + "".join(cases) + _NODE_TAIL + step
