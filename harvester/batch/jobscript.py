"""What the script-based batch plugins (Slurm, PBS, LSF; HTCondor for its script) share: the job script, the
checks on values that reach a scheduler, and the submit, status and cancel steps around the class's commands.

The script is a header of directive lines (``#SBATCH``/``#PBS``/``#BSUB``; none for HTCondor, whose options go
into the submit description), then the environment, ``cd`` to the access point, the queue's setup lines, and the
pilot, each value quoted. A value that goes into a directive is checked against a short list of characters instead
of quoted, because each scheduler parses its directive lines by its own rules; and no line of the script body may
start with the directive prefix, so nothing after the header can be read as a directive.

A subclass sets its commands, ``prefix``, ``job_id_regexp`` (a ``job_id`` group found in the submit command's
output), the patterns that sort the scheduler's messages, and writes :meth:`ScriptBatch.header_lines`,
:meth:`ScriptBatch.parse_status` and ``find``. A scheduler whose status command forgets ended jobs names a
``history_command`` (Slurm's sacct) and writes :meth:`ScriptBatch.parse_history`: the ids the status command no
longer lists are asked of it in ONE more call.
"""
import math
import re
import shlex

from harvester.batch.base import FATAL, OK, RETRY, BatchError, BatchSystem, CancelResult, QueryResult, SubmitResult
from harvester.batch.launch import pilot_lines

NEVER = re.compile(r"(?!)")
_BODY = """{header}# harvester worker {worker_id} of queue {queue}
{exports}cd {access_point} || exit 1
{setup}{pilots}"""


class ScriptBatch(BatchSystem):
    """Base of the plugins that submit a job script through scheduler commands."""

    prefix = ""
    """The directive marker (``#SBATCH``); empty when the scheduler reads no directives from the script."""
    submit_command = status_command = cancel_command = ()
    history_command = ()
    """The command that still knows the ended jobs the status command forgot; empty when the status command keeps
    them (PBS ``-x``, LSF ``-a``)."""
    history_disabled = NEVER
    """What the history command says on stderr when the site keeps no history: it is not asked again."""
    job_id_regexp = re.compile(r"^(?P<job_id>\d+)$", re.MULTILINE)
    """Finds the new job's id (group ``job_id``) in the submit command's stdout."""
    batch_id = re.compile(r"\d+")
    """The form of a batch id; any other id given to status or cancel never reaches a command line."""
    fatal_errors = NEVER
    """Submission errors no retry can cure (unknown queue, bad resource request)."""
    gone_errors = NEVER
    """Messages saying a job is unknown or already ended."""
    job_line = re.compile(r"(?P<job_id>\S+)\s*$")
    """How a line of the cancel command's output names its job (group ``job_id``)."""
    cancel_accepted = NEVER
    """Lines of the cancel command's output that mean it was done."""
    word_punctuation = "_.,+@/=-"  # no blank, quote, $, `, ;, %, : (LSF expands %J, PBS splits host:path)
    """What a directive value may hold besides letters and digits."""
    stdout_name, stderr_name = "job.out", "job.err"

    def __init__(self, queue, transport, spool=None):
        super().__init__(queue, transport, spool)
        self.history_kept = None  # None: not known yet; False once the history command said the site keeps none

    # ---- the job script -----------------------------------------------------------------------------------------
    def header_lines(self, worker):
        """The generated directives of ``worker`` (without the prefix), before skip/extra directives apply."""
        return []

    def header(self, worker):
        """Directive lines: generated ones not matched by ``batch.skip_directives``, then the extra ones."""
        batch = self.queue.batch
        if not self.prefix:
            return []
        kept = [o for o in self.header_lines(worker) if not any(o.startswith(s) for s in batch.skip_directives)]
        for line in batch.extra_directives:
            self.one_line(line, "batch.extra_directives entry")
        return [f"{self.prefix} {option}" for option in (*kept, *batch.extra_directives)]

    def render(self, worker):
        setup = [self.one_line(line, "batch.setup line") for line in self.queue.batch.setup]
        for line in setup:
            if self.prefix and line.lstrip().startswith(self.prefix):
                raise BatchError(f"queue {self.queue.name}: batch.setup line {line!r} would be read as a "
                                 f"{self.prefix} directive; put scheduler options in batch.extra_directives", FATAL)
        header = "".join(line + "\n" for line in ["#!/bin/sh", *self.header(worker)])
        return _BODY.format(header=header, worker_id=worker.worker_id, queue=self.queue.name,
                            exports=self.exports(worker), access_point=shlex.quote(worker.access_point),
                            setup="".join(s + "\n" for s in setup),
                            pilots=pilot_lines(worker, self.script_path(worker)))

    def checked(self, value, what):
        """``value`` as text when it may stand in a directive unquoted; a fatal :class:`BatchError` otherwise."""
        text = str(value)
        if not re.fullmatch(f"[A-Za-z0-9{re.escape(self.word_punctuation)}]+", text) or text.startswith("-"):
            raise BatchError(f"{what} {text!r} cannot go into a {self.prefix or self.name} directive: only letters, "
                             f"digits and {' '.join(self.word_punctuation)} are allowed there (and no leading -)",
                             FATAL)
        return text

    def one_line(self, text, what):
        if "\n" in text or "\r" in text or "\0" in text:
            raise BatchError(f"{what} {text!r} holds a line break; it would change the script", FATAL)
        return text

    def job_name(self, worker_id):
        """The scheduler's job name of a worker: how ``find()`` looks it up after a crash."""
        return f"harvester-{self.queue.name}-{worker_id}"

    def output_path(self, worker):
        return f"{worker.access_point.rstrip('/')}/{self.stdout_name}"

    def error_path(self, worker):
        return f"{worker.access_point.rstrip('/')}/{self.stderr_name}"

    # ---- submit --------------------------------------------------------------------------------------------------
    def submit(self, workers):
        return [self.submit_one(worker) for worker in workers]

    def submit_argv(self, worker):
        """The submit command of ``worker`` and its stdin (None: the script is named on the command line)."""
        return [*self.submit_command, self.script_path(worker)], None

    def submit_one(self, worker):
        """Run the submit command, take the job id from its output; the scheduler's words when it refused."""
        try:
            argv, stdin = self.submit_argv(worker)
        except BatchError as exc:
            return SubmitResult(worker.worker_id, exc.status, message=str(exc))
        result = self.run(argv, input=stdin)
        match = self.job_id_regexp.search(result.stdout) if result.ok else None
        if match:
            return SubmitResult(worker.worker_id, OK, match["job_id"], f"{argv[0]}: {result.stdout.strip()}")
        unsure = result.timed_out or result.lost or result.ok  # the answer is lost, perhaps not the submission
        found = self.find_quietly(worker.access_point) if unsure else None
        if found:
            return SubmitResult(worker.worker_id, OK, found, f"job {found}, found after {argv[0]}'s answer was "
                                                             f"lost: {result.describe()}")
        if result.ok:
            message = f"{argv[0]} printed no job id (none matches {self.job_id_regexp.pattern}): {result.describe()}"
        else:
            message = f"{argv[0]} failed: {result.describe()}"
        hopeless = result.returncode in (126, 127) or self.fatal_errors.search(f"{result.stdout}\n{result.stderr}")
        return SubmitResult(worker.worker_id, FATAL if hopeless else RETRY, message=message)

    def find_quietly(self, access_point):
        try:
            return self.find(access_point)
        except BatchError:
            return None

    # ---- status ---------------------------------------------------------------------------------------------------
    def valid_ids(self, batch_ids):
        """The distinct ids of ``batch_ids`` that have the form of this scheduler's ids, in order."""
        return [b for b in dict.fromkeys(str(b) for b in batch_ids) if self.batch_id.fullmatch(b)]

    def id_args(self, ids):
        """How the status and history commands are given the ids: one argument each."""
        return list(ids)

    def parse_status(self, stdout):
        """``{job id: BatchStatus}`` from the status command's output; ValueError when it cannot be read."""
        raise NotImplementedError

    def parse_history(self, stdout):
        """``{job id: BatchStatus}`` from the history command's output."""
        raise NotImplementedError

    def pick(self, states, ids):
        """The states of ``ids`` among those parsed (a scheduler may spell an id longer than it was given)."""
        return {batch_id: states[batch_id] for batch_id in ids if batch_id in states}

    def status(self, batch_ids):
        """ONE status command for all ``batch_ids`` (:meth:`listed`), then ONE history command for the ids it no
        longer lists (:meth:`from_history`)."""
        ids = self.valid_ids(batch_ids)
        if not ids:
            return QueryResult(OK)
        result = self.listed(ids)
        left = [i for i in ids if i not in result.states]
        if result.status != OK or not left or not self.history_command or self.history_kept is False:
            return result
        return self.from_history(result, left)

    def listed(self, ids):
        """The states of the jobs the status command lists (a failing command is a retry, never "all gone")."""
        argv = [*self.status_command, *self.id_args(ids)]
        result = self.run(argv)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        unexplained = [line for line in lines if not self.gone_errors.search(line)]
        said_gone = self.gone_errors.search(f"{result.stdout}\n{result.stderr}")
        if result.timed_out or not result.ok and (unexplained or not said_gone):
            return QueryResult(RETRY, message=f"{argv[0]} failed: {result.describe()}")  # never "all jobs gone"
        try:
            states = self.parse_status(result.stdout)
        except ValueError as exc:
            return QueryResult(RETRY, message=f"{argv[0]} output cannot be read ({exc}): {result.describe()}")
        return QueryResult(OK, self.pick(states, ids))

    def from_history(self, result, left):
        """``result`` with the states the history command knows of the ids ``left``; a failing history command is
        a retry (never "gone"), one saying the site keeps no history leaves them unknown, now and from then on."""
        found = self.run([*self.history_command, *self.id_args(left)])
        if self.history_disabled.search(found.stderr):
            self.history_kept = False
        elif not found.ok:
            return QueryResult(RETRY, message=f"{self.history_command[0]} failed: {found.describe()}")
        else:
            self.history_kept = True
            result.states.update({i: s for i, s in self.parse_history(found.stdout).items() if i in left})
        return result

    # ---- cancel ---------------------------------------------------------------------------------------------------
    def cancel(self, batch_ids):
        ids = self.valid_ids(batch_ids)
        results = {str(b): (OK, f"not a {self.name} job id") for b in batch_ids if str(b) not in ids}
        if not ids:
            return CancelResult(results)
        result = self.run([*self.cancel_command, *ids])
        said = {}
        for line in f"{result.stdout}\n{result.stderr}".splitlines():
            match = self.job_line.search(line)
            if match and match["job_id"] in ids:
                said.setdefault(match["job_id"], []).append(line.strip())
        command = self.cancel_command[0]
        for batch_id in ids:
            lines = said.get(batch_id)
            if lines:
                gone = all(self.gone_errors.search(line) for line in lines)
                done = gone or all(self.cancel_accepted.search(line) for line in lines)
                results[batch_id] = (OK if done else RETRY, ("already ended: " if gone else "") + "; ".join(lines))
            elif result.ok or said and not result.timed_out:  # it answered job by job, and not for this one
                results[batch_id] = (OK, f"{command} accepted")
            else:
                results[batch_id] = (RETRY, f"{command} failed: {result.describe()}")
        return CancelResult(results)


def minutes(seconds):
    """Whole minutes, rounded up: a scheduler must never grant less walltime than the pilot was told."""
    return max(1, math.ceil(seconds / 60))


def hms(seconds):
    """``HH:MM:SS``."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def days_hms(seconds):
    """``D-HH:MM:SS`` rounded up to whole minutes."""
    total = minutes(seconds)
    return f"{total // 1440}-{total // 60 % 24:02d}:{total % 60:02d}:00"
