"""The one-VM testbed (``minipanda testbed``): a whole PanDA-style system on this machine, in one command, with a demo task.

One process runs the server (granian in-process, on a thread; embedded SQLite) and harvester (its agents on threads); pilots
are local batch workers that harvester starts as detached processes. The home is fresh: a queue configuration
written for this machine (cores, memory), a demo dataset whose files are put in the server's file store, and a
demo task whose jobs read their input over HTTP and upload their output there. A progress bar (rich) runs until
every job has ended, then a summary, the outputs' place and the monitor URL are printed.

Stopping: Ctrl-C or SIGTERM stops harvester, then every pilot it started (SIGTERM to the process group named in the
local batch plugin's spool records, SIGKILL after a grace), then the server, then any process still below this one:
this process is a child subreaper (Linux), so pilots, payloads and helpers that lost their parent are re-parented
here and cannot outlive it. Exit code 0 only when every job of the demo task finished; 1 otherwise; 130 after
Ctrl-C/SIGTERM.

This package is the one place that runs the server and harvester in one process: ``minipanda`` and ``harvester``
never import each other, and ``minipanda testbed`` hands its arguments over to :mod:`testbed.cli`.
Modules: ``cli`` (options), ``bed`` (the run: server and harvester on threads, following the task, the stop),
``config`` (the home, the log file, the queue and the settings), ``demo`` (the demo task's inputs, payload and
progress), ``processes`` (the pilots and every process below this one: found, collected, stopped), ``summary``
(summary.json and the closing lines), ``progress`` (the bar and the plain lines).
"""
