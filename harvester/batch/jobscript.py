"""What the script-based batch plugins (PBS, LSF, HTCondor) share: the job script and the checks on the values
that reach a scheduler.

The script is a header of directive lines (``#PBS``/``#BSUB``; none for HTCondor, whose options go into the
submit description), then the environment, the queue's setup lines, and the pilot, each value quoted. A value
that goes into a directive is checked against a short list of characters instead of quoted, because each
scheduler parses its directive lines by its own rules; and no line of the script body may start with the
directive prefix, so nothing after the header can be read as a directive.
"""
import math
import re
import shlex

from harvester.batch.base import FATAL, RETRY, BatchError, BatchSystem, SubmitResult
from harvester.batch.launch import pilot_lines

_SAFE = re.compile(r"[A-Za-z0-9_.,+@/=-]+")  # no blank, quote, $, `, ;, %, : (LSF expands %J, PBS splits host:)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BODY = """{header}# harvester worker {worker_id} of queue {queue}
{exports}cd {access_point} || exit 1
{setup}{pilots}"""


class ScriptBatch(BatchSystem):
    """Base of the plugins that submit a job script: the script, the header lines and the command runner.

    Subclasses set ``prefix`` (the directive marker) and implement :meth:`options` (the generated directives).
    """

    prefix = ""
    stdout_name, stderr_name = "job.out", "job.err"
    timeout = 300  # s a scheduler command may take when the queue does not say (transport.command_timeout)
    fatal_errors = ()  # scheduler messages that no retry can cure (unknown queue, bad resource request)
    queue = None  # the queue served, set by plugin_for (status and cancel get no worker to read it from)

    def options(self, worker):
        """The generated directives of ``worker`` (without the prefix), before skip/extra directives apply."""
        return []

    def header(self, worker):
        """Directive lines: generated ones not matched by ``batch.skip_directives``, then the extra ones."""
        batch = worker.queue.batch
        kept = [o for o in self.options(worker) if not any(o.startswith(s) for s in batch.skip_directives)]
        return [f"{self.prefix} {option}" for option in (*kept, *batch.extra_directives)]

    def render(self, worker):
        exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in worker_environment(worker))
        setup = [line for line in worker.queue.batch.setup]
        for line in setup:
            if self.prefix and line.lstrip().startswith(self.prefix):
                raise BatchError(f"queue {worker.queue.name}: batch.setup line {line!r} would be read as a "
                                 f"{self.prefix} directive; put scheduler options in batch.extra_directives", FATAL)
        header = "".join(line + "\n" for line in ["#!/bin/sh", *self.header(worker)])
        return _BODY.format(header=header, worker_id=worker.worker_id, queue=worker.queue.name, exports=exports,
                            access_point=shlex.quote(worker.access_point), setup="".join(s + "\n" for s in setup),
                            pilots=pilot_lines(worker))

    def job_name(self, worker):
        """The scheduler's job name of ``worker``: how find() looks a worker up after a crash."""
        return f"harvester-{worker.worker_id}"

    def output_path(self, worker):
        return f"{worker.access_point.rstrip('/')}/{self.stdout_name}"

    def error_path(self, worker):
        return f"{worker.access_point.rstrip('/')}/{self.stderr_name}"

    def run(self, argv, input=None):
        """Run one scheduler command through the transport, with the queue's command timeout."""
        timeout = self.queue.transport.command_timeout if self.queue is not None else self.timeout
        return self.transport.run(list(argv), timeout=timeout, input=input)

    def submit_failed(self, worker, result, what):
        """The :class:`SubmitResult` of a refused submission: the scheduler's words become the worker's diag."""
        text = f"{result.stdout}\n{result.stderr}"
        hopeless = result.returncode in (126, 127) or any(e.lower() in text.lower() for e in self.fatal_errors)
        return SubmitResult(worker.worker_id, FATAL if hopeless else RETRY, message=f"{what}: {result.describe()}")


def safe(value, what):
    """``value`` as text when it may stand in a directive unquoted; a fatal :class:`BatchError` otherwise."""
    text = str(value)
    if not _SAFE.fullmatch(text) or text.startswith("-"):
        raise BatchError(f"{what} {text!r} cannot be written into a batch directive: only letters, digits and "
                         "_ . , + @ / = - are allowed (and no leading -)", FATAL)
    return text


def minutes(seconds):
    """Whole minutes, rounded up: a scheduler must never grant less walltime than the pilot was told."""
    return max(1, math.ceil(seconds / 60))


def hms(seconds):
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def worker_environment(worker):
    """(name, value) pairs: the queue's batch.environment, then the worker's own (harvester's ids, pilot.environment);
    a newline or NUL in a value is refused: it would start a new script line."""
    merged = {**worker.queue.batch.environment, **worker.environment}
    pairs = [(name, str(value)) for name, value in merged.items()]
    bad = [n for n, v in pairs if not _ENV_NAME.fullmatch(n) or any(c in v for c in "\0\n\r")]
    if bad:
        raise BatchError(f"worker {worker.worker_id}: environment variables {bad} cannot be set (a name is "
                         "letters, digits and _; a value is one line without NUL)", FATAL)
    return pairs
