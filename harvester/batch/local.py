"""Local batch: each pilot is a detached process on the submit host, in a session of its own.

A worker's job script runs under ``setsid``, so it outlives harvester and a restarted harvester finds it again: its
batch id ``<pid>-<start>`` (start = the process start time in clock ticks since boot, /proc/<pid>/stat field 22)
names a spool record ``<spool>/<batch id>.json`` with the access point and the boot id, which tells a live pilot
from a later process that got the same pid. The script runs the pilot in a child and writes its exit status to
``job.exit`` in the access point, 128+N when signal N ended it (a shell outlives a SIGKILL of its child).
"""
import json
import os
import re
import shlex
import time

from harvester.batch.base import (FATAL, OK, RETRY, BatchError, BatchStatus, BatchSystem, CancelResult,
                                  QueryResult, SubmitResult)
from harvester.batch.launch import pilot_lines
from harvester.transport import TransportError

_BATCH_ID = re.compile(r"(\d+)-(\d+)")
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
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

    def __init__(self, queue, transport, spool=None):
        super().__init__(queue, transport, spool)
        self._known = {}  # batch id -> its spool record, read once (a record never changes once written)

    def render(self, worker):
        setup = "".join(line + "\n" for line in self.queue.batch.setup)
        exit_file = _join(worker.access_point, self.exit_name)
        return _SCRIPT.format(worker_id=worker.worker_id, queue=self.queue.name,
                              access_point=shlex.quote(worker.access_point), exports=self.exports(worker), setup=setup,
                              pilots=pilot_lines(worker), exit_file=shlex.quote(exit_file),
                              exit_temp=shlex.quote(exit_file + ".tmp"))

    def submit(self, workers):
        try:
            self.transport.makedirs(self.spool, 0o700)
            boot_id = self._boot_id()
        except TransportError as exc:
            return [SubmitResult(worker.worker_id, RETRY, message=str(exc)) for worker in workers]
        return [self._submit_one(worker, boot_id) for worker in workers]

    def _submit_one(self, worker, boot_id):
        ap = worker.access_point
        if not self.transport.exists(self.script_path(worker)):
            return SubmitResult(worker.worker_id, FATAL, message=f"no job script {self.script_path(worker)} "
                                                                "(write_script() first)")
        result = self.run([*self.launch_command, _join(ap, self.stdout_name), _join(ap, self.stderr_name), "/bin/sh",
                           self.script_path(worker)], cwd=ap)
        if not result.ok or not result.stdout.strip().isdigit():
            status = FATAL if result.returncode in (126, 127) else RETRY  # no sh or no directory: never better
            return SubmitResult(worker.worker_id, status, message=f"launch failed: {result.describe()}")
        pid = int(result.stdout.strip())
        start = self._session_started(pid)
        batch_id = f"{pid}-{start}"
        record = {"pid": pid, "start": start, "boot_id": boot_id, "worker_id": worker.worker_id,
                  "access_point": ap, "submitted": time.time()}
        try:
            self.transport.write_file(self._spool_file(batch_id, ".json"), json.dumps(record), 0o600)
        except TransportError as exc:  # untracked, it would run beside its retry: stop it
            self.run(["sh", "-c", _TERM, "term", str(pid)])
            return SubmitResult(worker.worker_id, RETRY, message=f"pid {pid} stopped: {exc}")
        return SubmitResult(worker.worker_id, OK, batch_id, f"pid {pid}")

    def _session_started(self, pid):
        """The start ticks of ``pid`` once it leads its own session (until then its group cannot be signalled);
        0 when it has already ended."""
        deadline = time.monotonic() + self.session_wait
        while True:
            state, session, start = _proc_stat(self.transport.read_file(f"/proc/{pid}/stat"))
            if session == pid or start is None or state == "Z" or time.monotonic() > deadline:
                return start or 0
            time.sleep(0.002)

    def status(self, batch_ids):
        try:
            boot_id = self._boot_id()
            return QueryResult(OK, {batch_id: self._state(batch_id, record, boot_id)
                                    for batch_id, record in self._records(batch_ids).items()})
        except TransportError as exc:
            return QueryResult(RETRY, message=str(exc))

    def _state(self, batch_id, record, boot_id):
        exit_text = self.transport.read_file(_join(record["access_point"], self.exit_name))
        if exit_text is not None and exit_text.strip().isdigit():
            code = int(exit_text)
            if code == 0:
                return BatchStatus("finished", "pilot exit code 0", 0)
            signum = code - 128 if 128 < code <= 128 + 64 else None
            diag = f"pilot killed by signal {signum}" if signum else f"pilot exit code {code}"
            cancelled = self.transport.exists(self._spool_file(batch_id, ".cancelled"))
            return BatchStatus("cancelled" if cancelled else "failed", diag, code)
        if self._alive(record, boot_id):
            return BatchStatus("running", f"pid {record['pid']} running")
        if self.transport.exists(self._spool_file(batch_id, ".cancelled")):
            return BatchStatus("cancelled", "cancelled by harvester")
        return BatchStatus("failed", f"process {record['pid']} is gone and left no exit code (killed with its job "
                                     "script, or the host rebooted)")

    def cancel(self, batch_ids):
        records, boot_id, live = self._records(batch_ids), self._boot_id(), {}
        results = {b: (OK, "unknown to the local batch system (already gone)") for b in batch_ids if b not in records}
        for batch_id, record in records.items():
            if self._alive(record, boot_id):
                # marked before the signal, so status never sees the ended process without the mark
                self.transport.write_file(self._spool_file(batch_id, ".cancelled"), str(time.time()), 0o600)
                live[str(record["pid"])] = batch_id
            else:
                results[batch_id] = (OK, "already ended")
        if live:
            self._signal(live, results)
        return CancelResult(results)

    def _signal(self, live, results):
        """SIGTERM to each live group now; SIGKILL after the grace, by a detached helper so no caller waits."""
        sent = self.run(["sh", "-c", _TERM, "term", *live])
        for line in sent.stdout.splitlines():
            group, _, outcome = line.partition(" ")
            if group in live:
                results[live[group]] = (OK, "SIGTERM sent" if outcome == "sent" else "already ended")
        if not sent.ok:
            for batch_id in live.values():
                results[batch_id] = (RETRY, f"signalling failed: {sent.describe()}")
            return
        self.run([*self.launch_command, "/dev/null", "/dev/null", "sh", "-c", _KILL_LATER, "kill",
                  str(self.cancel_grace), *live])

    def forget(self, batch_ids):
        for batch_id in batch_ids:
            self._known.pop(batch_id, None)
            if _BATCH_ID.fullmatch(str(batch_id)):
                for suffix in (".json", ".cancelled"):
                    self.transport.remove_tree(self._spool_file(batch_id, suffix))

    def find(self, access_point):
        """The batch id of the pilot started for ``access_point`` (a submission a crash left unrecorded), or None.
        Reads the local spool directly: this plugin's spool is on the harvester's own host."""
        if not self.spool or not os.path.isdir(self.spool):
            return None
        for name in sorted(os.listdir(self.spool)):
            batch_id = name[:-len(".json")]
            if name.endswith(".json") and _BATCH_ID.fullmatch(batch_id):
                record = self._records([batch_id]).get(batch_id)
                if record and record.get("access_point") == access_point:
                    return batch_id
        return None

    def _records(self, batch_ids):
        """Spool records of the well-formed known ids (an unknown id is simply absent); each file is read once
        per plugin instance, forget() drops it."""
        known = self._known
        missing = [b for b in dict.fromkeys(batch_ids) if b not in known and _BATCH_ID.fullmatch(str(b))]
        for batch_id in missing:
            data = self.transport.read_file(self._spool_file(batch_id, ".json"))
            if data is not None:
                known[batch_id] = json.loads(data)
        return {b: known[b] for b in dict.fromkeys(batch_ids) if b in known}

    def _alive(self, record, boot_id):
        if record["boot_id"] != boot_id or not record["start"]:
            return False
        state, _, start = _proc_stat(self.transport.read_file(f"/proc/{record['pid']}/stat"))
        return start == record["start"] and state not in ("Z", "X")

    def _boot_id(self):
        return (self.transport.read_file(_BOOT_ID) or b"").decode().strip()

    def _spool_file(self, batch_id, suffix):
        if not self.spool:
            raise BatchError("the local batch plugin needs a spool directory for its pid records", FATAL)
        return _join(self.spool, batch_id + suffix)


def _proc_stat(text):
    """``(state letter, session id, start ticks)`` from /proc/<pid>/stat content (Nones when missing); fields are
    counted after the last ')', since the command name may hold spaces and parentheses."""
    fields = text.decode("ascii", "replace").rpartition(")")[2].split() if text else []
    return (fields[0], int(fields[3]), int(fields[19])) if len(fields) > 19 else (None, None, None)


def _join(folder, name):
    return f"{folder.rstrip('/')}/{name}"
