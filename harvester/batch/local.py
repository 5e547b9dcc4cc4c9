"""Local batch: each pilot is a detached process on the submit host, in a session of its own.

A worker's job script runs under ``setsid``, so it outlives harvester and a restarted harvester finds it again: its
batch id ``<pid>-<start>`` (start = the process start time in clock ticks since boot, /proc/<pid>/stat field 22)
names a spool record ``<spool>/<batch id>.json`` with the access point and the boot id, which tells a live pilot
from a later process that got the same pid. The script runs the pilot in a child and writes its exit status to
``job.exit`` in the access point, 128+N when signal N ended it (a shell outlives a SIGKILL of its child).

A harvester killed between the launch and the spool record leaves a job nobody recorded. :meth:`LocalBatch.find`
finds it again by its job script, whose path (in the access point) ends the argv of every process of the launch:
running, it is recorded then under its real ``<pid>-<start>``; ended (its ``job.out``, made by the launch, or its
``job.exit`` is there), it is recorded as ``0-<workerID>`` (pid unknown), so its exit status still decides how its
worker ends. Only a worker with no such process and no such file was never launched.
"""
import json
import logging
import re
import shlex
import time

from harvester.batch.base import (FATAL, OK, RETRY, BatchError, BatchStatus, BatchSystem, CancelResult,
                                  QueryResult, SubmitResult)
from harvester.batch.launch import pilot_lines
from harvester.transport import TransportError

log = logging.getLogger(__name__)
_BATCH_ID = re.compile(r"(\d+)-(\d+)")
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_BOOT_FILE = tuple(_BOOT_ID.rsplit("/", 1))  # as (root, path), for a batch of reads
# $1 stdout file, $2 stderr file, then the command; setsid does not fork (sh's background child is no group
# leader), so $! is the pid of the job script itself
_LAUNCH = 'out=$1 err=$2; shift 2; setsid "$@" </dev/null >>"$out" 2>>"$err" & echo $!'
_TERM = 'for g; do kill -s TERM -- "-$g" 2>/dev/null && echo "$g sent" || echo "$g gone"; done'
_KILL_LATER = 'sleep "$1"; shift; for g; do kill -s KILL -- "-$g" 2>/dev/null; done'
_SCRIPT = """#!/bin/sh
# harvester worker {worker_id} of queue {queue}. The pilot runs in a subshell so that this shell outlives it (also
# a SIGKILL) and can record its exit status for the local batch plugin.
(
cd {access_point} || exit 1
{exports}{setup}{pilots})
rc=$?
printf '%s\\n' "$rc" > {exit_temp} && mv -f {exit_temp} {exit_file}
exit "$rc"
"""


class LocalBatch(BatchSystem):
    """Pilots forked on the submit host; status from /proc and the spool, no subprocess per worker."""

    name = "local"
    launch_command = ("sh", "-c", _LAUNCH, "launch")
    exit_name, stdout_name, stderr_name = "job.exit", "job.out", "job.err"
    cancel_grace = 10  # s between SIGTERM (the pilot's warm stop) and SIGKILL of a cancelled worker's group
    session_wait = 60  # s a launched job script may take to lead its own session
    one_line_values = False  # no scheduler reads this script: a value may span lines (quoted)
    shell = "/bin/sh"  # runs the job script: the argv of a launched job is exactly (shell, script)

    def __init__(self, queue, transport, spool=None):
        super().__init__(queue, transport, spool)
        self.records, self.processes = Spool(transport, spool, self.run), Processes(transport, self.run)

    def render(self, worker):
        setup = "".join(line + "\n" for line in self.queue.batch.setup)
        exit_file = _join(worker.access_point, self.exit_name)
        return _SCRIPT.format(worker_id=worker.worker_id, queue=self.queue.name,
                              access_point=shlex.quote(worker.access_point), exports=self.exports(worker),
                              setup=setup, pilots=pilot_lines(worker), exit_file=shlex.quote(exit_file),
                              exit_temp=shlex.quote(exit_file + ".tmp"))

    def submit(self, workers):
        try:
            self.transport.makedirs(self.records.path(), 0o700)
            boot_id = self.processes.boot_id()
        except (TransportError, BatchError) as exc:
            status = exc.status if isinstance(exc, BatchError) else RETRY
            return [SubmitResult(worker.worker_id, status, message=str(exc)) for worker in workers]
        return [self._submit_one(worker, boot_id) for worker in workers]

    def _submit_one(self, worker, boot_id):
        ap, script = worker.access_point, self.script_path(worker)
        if not self.transport.exists(script):
            return SubmitResult(worker.worker_id, FATAL, message=f"no job script {script} (write_script() first)")
        result = self.run([*self.launch_command, _join(ap, self.stdout_name), _join(ap, self.stderr_name), self.shell,
                           script], cwd=ap)
        if not result.ok or not result.stdout.strip().isdigit():
            status = FATAL if result.returncode in (126, 127) else RETRY  # no sh or no directory: never better
            return SubmitResult(worker.worker_id, status, message=f"launch failed: {result.describe()}")
        pid = int(result.stdout.strip())
        start = self.processes.session_started(pid, self.session_wait)
        try:
            batch_id = self.records.write(pid, start, boot_id, worker.worker_id, worker.access_point)
        except TransportError as exc:  # untracked, it would run beside its retry: stop it
            self.processes.terminate([str(pid)], self.cancel_grace)
            return SubmitResult(worker.worker_id, RETRY, message=f"pid {pid} stopped: {exc}")
        return SubmitResult(worker.worker_id, OK, batch_id, f"pid {pid}")

    def status(self, batch_ids):
        """Every job's state from ONE batch of file reads through the transport (one round trip over SSH, two the
        first time the spool records are read): the boot id, each job's ``job.exit``, ``.cancelled`` mark and
        ``/proc/<pid>/stat``. ``job.exit`` is in the access point, where the pilot writes: it is read like any
        file from a pilot (never through a symlink, at most a few bytes)."""
        try:
            records = self.records.read(batch_ids)
            files = {batch_id: self._files(batch_id, record) for batch_id, record in records.items()}
            seen = _read_all(self.transport, [_BOOT_FILE, *(f for three in files.values() for f in three)])
        except (TransportError, BatchError) as exc:
            return QueryResult(RETRY, message=str(exc))
        boot_id = (seen.get(_BOOT_FILE) or b"").decode().strip()
        return QueryResult(OK, {batch_id: native_state(record, boot_id, *(seen.get(f) for f in files[batch_id]))
                                for batch_id, record in records.items()})

    def _files(self, batch_id, record):
        """(root, path) of the files that tell a job's state: its exit file, its cancel mark, its /proc entry."""
        parent, name = record["access_point"].rstrip("/").rsplit("/", 1)
        return ((parent or "/", f"{name}/{self.exit_name}"), (self.records.path(), f"{batch_id}.cancelled"),
                ("/proc", f"{record['pid']}/stat"))

    def cancel(self, batch_ids):
        records, boot_id, live = self.records.read(batch_ids), self.processes.boot_id(), {}
        results = {b: (OK, "unknown to the local batch system (already gone)") for b in batch_ids if b not in records}
        for batch_id, record in records.items():
            if self.processes.alive(record, boot_id):
                self.records.mark_cancelled(batch_id)  # before the signal: status never sees the end unmarked
                live[str(record["pid"])] = batch_id
            else:
                results[batch_id] = (OK, "already ended")
        if live:  # SIGTERM (the pilot's warm stop) now, SIGKILL after the grace
            signalled, sent = self.processes.terminate(list(live), self.cancel_grace)
            for group, batch_id in live.items():
                results[batch_id] = (RETRY, f"signalling failed: {sent.describe()}") if signalled is None else (
                    OK, "SIGTERM sent" if signalled[group] else "already ended")
        return CancelResult(results)

    def forget(self, batch_ids):
        self.records.forget(batch_ids)

    def find(self, access_point):
        """The batch id of the job launched for ``access_point``: its spool record; else (a harvester killed between
        the launch and the record) the job found in /proc or by the files its launch made, recorded now; None when
        it was never launched. A launch still under way is waited for (``session_wait``), then a BatchError."""
        found = self.records.find(access_point)
        if found or not self.records.folder:
            return found
        return adopt_unrecorded(self, access_point)


class Spool:
    """The local plugin's records, in its spool directory on the submit host: ``<batch id>.json`` (pid, start
    ticks, boot id, worker, access point) and ``<batch id>.cancelled``. A record never changes once written, so
    each is read once; :meth:`forget` removes both files and the cached copy."""

    def __init__(self, transport, folder, run):
        self.transport, self.folder, self.run = transport, folder, run
        self.known = {}  # batch id -> its record, as read

    def path(self, batch_id=None, suffix=".json"):
        if not self.folder:
            raise BatchError("the local batch plugin needs a spool directory for its pid records", FATAL)
        return self.folder if batch_id is None else _join(self.folder, batch_id + suffix)

    def write(self, pid, start, boot_id, worker_id, access_point, batch_id=None):
        """Record a launched job script; its batch id, by default ``<pid>-<start>``."""
        batch_id = batch_id or f"{pid}-{start}"
        record = {"pid": pid, "start": start, "boot_id": boot_id, "worker_id": worker_id,
                  "access_point": access_point, "submitted": time.time()}
        self.transport.write_file(self.path(batch_id), json.dumps(record), 0o600)
        return batch_id

    def read(self, batch_ids):
        """Records of the well-formed known ids (an unknown id is simply absent); those not read before in one
        call."""
        wanted = [b for b in dict.fromkeys(str(b) for b in batch_ids) if _BATCH_ID.fullmatch(b)]
        new = [b for b in wanted if b not in self.known]
        if new:
            [result] = self.transport.files([{"op": "read", "root": self.path(), "paths": [f"{b}.json" for b in new],
                                              "limit": 65536}])
            if not result.get("ok") and result.get("code") != "missing":
                raise BatchError(f"cannot read the spool records: {result.get('error')}")
            for name, got in (result.get("files") or {}).items():
                if "data" in got:
                    self.known[name[:-len(".json")]] = json.loads(got["data"])
        return {b: self.known[b] for b in wanted if b in self.known}

    def mark_cancelled(self, batch_id):
        self.transport.write_file(self.path(batch_id, ".cancelled"), str(time.time()), 0o600)

    def cancelled(self, batch_id):
        return self.transport.exists(self.path(batch_id, ".cancelled"))

    def forget(self, batch_ids):
        """Remove the records of ended jobs, in ONE command."""
        ids = [b for b in dict.fromkeys(str(b) for b in batch_ids) if _BATCH_ID.fullmatch(b)]
        for batch_id in ids:
            self.known.pop(batch_id, None)
        if ids and self.folder:
            paths = [self.path(b, suffix) for b in ids for suffix in (".json", ".cancelled")]
            result = self.run(["rm", "-f", "--", *paths])
            if not result.ok:
                raise BatchError(f"cannot remove spool records: {result.describe()}")

    def find(self, access_point):
        """The batch id whose record names ``access_point`` (a launch a crash left unrecorded), or None."""
        names = self.transport.listdir(self.path()) if self.folder else []
        ids = [name[:-len(".json")] for name in sorted(names) if name.endswith(".json")]
        return next((b for b, record in self.read(ids).items() if record.get("access_point") == access_point), None)


class Processes:
    """Processes on the submit host, seen through the transport: their state in /proc, signals by ``sh``."""

    def __init__(self, transport, run):
        self.transport, self.run = transport, run

    def boot_id(self):
        return (self.transport.read_file(_BOOT_ID) or b"").decode().strip()

    def session_started(self, pid, wait):
        """The start ticks of ``pid`` once it leads its own session (until then its group cannot be signalled);
        0 when it has already ended."""
        deadline = time.monotonic() + wait
        while True:
            state, session, start = _proc_stat(self.transport.read_file(f"/proc/{pid}/stat"))
            if session == pid or start is None or state == "Z" or time.monotonic() > deadline:
                return start or 0
            time.sleep(0.002)

    def launching(self, shell, script):
        """``{pid: (argv, state, session, start ticks)}`` of the processes whose argv ends with ``shell script``:
        the launch command, ``setsid`` and the job script itself (its subshell too), read through the transport in
        one batch."""
        pids = [name for name in self.transport.listdir("/proc") if name.isdigit()]
        if not pids:
            return {}
        [result] = self.transport.files([{"op": "read", "root": "/proc", "limit": 65536,
                                          "paths": [f"{pid}/{f}" for pid in pids for f in ("cmdline", "stat")]}])
        got = {path: entry.get("data") for path, entry in (result.get("files") or {}).items()}
        found = {}
        for pid in pids:
            argv = (got.get(f"{pid}/cmdline") or b"").split(b"\0")[:-1]
            if [a.decode(errors="replace") for a in argv[-2:]] == [shell, script]:
                state, session, start = _proc_stat(got.get(f"{pid}/stat"))
                if start is not None:
                    found[int(pid)] = ([a.decode(errors="replace") for a in argv], state, session, start)
        return found

    def alive(self, record, boot_id):
        """Whether the process a spool record names still runs (the same boot, pid and start ticks)."""
        return self.matches(record, boot_id, self.transport.read_file(f"/proc/{record['pid']}/stat"))

    @staticmethod
    def matches(record, boot_id, stat_text):
        """Whether ``stat_text`` (/proc/<pid>/stat now) is the live process the record names."""
        if record["boot_id"] != boot_id or not record["start"]:
            return False
        state, _, start = _proc_stat(stat_text)
        return start == record["start"] and state not in ("Z", "X")

    def terminate(self, groups, grace):
        """SIGTERM to each process group now, SIGKILL after ``grace`` s by a detached helper (so no caller waits).
        ({group: True if signalled, False if already gone}, the command's result); None for the first when the
        signals could not be sent."""
        sent = self.run(["sh", "-c", _TERM, "term", *groups])
        if not sent.ok:
            return None, sent
        self.run([*LocalBatch.launch_command, "/dev/null", "/dev/null", "sh", "-c", _KILL_LATER, "kill", str(grace),
                  *groups])
        outcomes = dict(line.partition(" ")[::2] for line in sent.stdout.splitlines())
        return {group: outcomes.get(group) == "sent" for group in groups}, sent


def adopt_unrecorded(batch, access_point):
    """The batch id of a launch of ``access_point`` that has no spool record (see the module's docstring), now
    recorded; None when nothing was launched."""
    script = f"{access_point.rstrip('/')}/{batch.script_name}"
    deadline = time.monotonic() + batch.session_wait
    while True:
        chain = batch.processes.launching(batch.shell, script)
        leader = next(((pid, start) for pid, (argv, state, session, start) in chain.items()
                       if argv == [batch.shell, script] and session == pid and state not in ("Z", "X")), None)
        if leader or not chain:
            break
        if time.monotonic() > deadline:
            raise BatchError(f"the launch of {script} (pids {sorted(chain)}) has not settled after "
                             f"{batch.session_wait} s")
        time.sleep(0.05)
    name = access_point.rstrip("/").rsplit("/", 1)[-1]
    worker_id = int(name) if name.isdigit() else None
    if leader:
        pid, start = leader
        batch_id = batch.records.write(pid, start, batch.processes.boot_id(), worker_id, access_point)
        log.warning("%s: job script found running as pid %d with no spool record (harvester stopped between "
                    "the launch and the record): recorded as batch job %s", access_point, pid, batch_id)
        return batch_id
    traces = _read_all(batch.transport, [(access_point, n) for n in (batch.exit_name, batch.stdout_name)])
    if worker_id is None or not any(data is not None for data in traces.values()):
        return None  # never launched (a launch always makes job.out before the script runs)
    batch_id = batch.records.write(0, 0, batch.processes.boot_id(), worker_id, access_point, f"0-{worker_id}")
    log.warning("%s: job script ended with no spool record (harvester stopped between the launch and the "
                "record): recorded as batch job %s, its exit file tells how it ended", access_point, batch_id)
    return batch_id


def native_state(record, boot_id, exit_text, cancel_mark, stat_text):
    """One job's :class:`BatchStatus` from what status read (None: missing): its exit file, its cancel mark and its
    /proc entry, and the host's boot id."""
    cancelled = cancel_mark is not None
    if exit_text is not None and exit_text.strip().isdigit():
        code = int(exit_text)
        if code == 0:
            return BatchStatus("finished", "pilot exit code 0", 0, "exited")
        signum = code - 128 if 128 < code <= 128 + 64 else None
        diag = f"pilot killed by signal {signum}" if signum else f"pilot exit code {code}"
        return BatchStatus("cancelled" if cancelled else "failed", diag, code, "exited")
    if Processes.matches(record, boot_id, stat_text):
        return BatchStatus("running", f"pid {record['pid']} running", native="running")
    if cancelled:
        return BatchStatus("cancelled", "cancelled by harvester", native="gone")
    return BatchStatus("failed", f"process {record['pid']} is gone and left no exit code (killed with its job "
                                 "script, or the host rebooted)", native="gone")


def _read_all(transport, wanted):
    """{(root, path): bytes, or None when missing} of the small files ``wanted`` ((root, path) pairs), read in ONE
    call of the transport: one read operation per root, each path safe under its root."""
    by_root = {}
    for root, path in sorted(set(wanted)):
        by_root.setdefault(root, []).append(path)
    roots = sorted(by_root)
    results = transport.files([{"op": "read", "root": root, "paths": by_root[root], "limit": 4096} for root in roots])
    seen = {}
    for root, result in zip(roots, results):
        for path, got in (result.get("files") or {}).items():
            seen[(root, path)] = got.get("data")
    return seen


def _proc_stat(text):
    """``(state letter, session id, start ticks)`` from /proc/<pid>/stat content (Nones when missing); fields are
    counted after the last ')', since the command name may hold spaces and parentheses."""
    fields = text.decode("ascii", "replace").rpartition(")")[2].split() if text else []
    return (fields[0], int(fields[3]), int(fields[19])) if len(fields) > 19 else (None, None, None)


def _join(folder, name):
    return f"{folder.rstrip('/')}/{name}"
