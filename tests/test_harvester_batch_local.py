"""harvester.batch.local with real processes: detached pilots, exit codes and signals, cancel, a restarted
harvester, pid reuse, hostile environment values, and one status pass for many workers."""
import contextlib
import json
import os
import signal
import sys

import pytest

from harvester.batch import LocalBatch, plugin_for
from harvester.batch.base import FATAL, OK, BatchError, WorkerSpec
from harvester.transport import LocalTransport

from conftest import eventually as wait_for
from queueconfig import Queue

QUEUE = Queue.model_validate({"name": "LOCAL_TEST",
                              "batch": {"setup": ["MINIPANDA_SETUP=ran; export MINIPANDA_SETUP"],
                                        "environment": {"SITE_NOTE": "it's $(site)", "A": "the queue's"}}})
PY = sys.executable


class CountingTransport(LocalTransport):
    """A real local transport that counts the commands it runs."""

    def __init__(self):
        self.commands = 0

    def run(self, argv, **kwargs):
        self.commands += 1
        return super().run(argv, **kwargs)


def stat_fields(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid):
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgid):
    """Live processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        fields = stat_fields(entry) if entry.isdigit() else None
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


@pytest.fixture
def spool(tmp_path):
    """The spool; every process group a test started is killed at the end, by the pids in its records."""
    folder = tmp_path / "spool"
    yield str(folder)
    for name in os.listdir(folder) if folder.exists() else ():
        if name.endswith(".json"):
            record = json.loads((folder / name).read_text())
            if record["start"] and stat_fields(record["pid"]) and int(stat_fields(record["pid"])[19]) == \
                    record["start"]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(record["pid"], signal.SIGKILL)


@pytest.fixture
def batch(spool):
    plugin = LocalBatch(QUEUE, CountingTransport(), spool)
    plugin.cancel_grace = 1
    return plugin


def make_worker(plugin, tmp_path, worker_id, argv, environment=None):
    worker = WorkerSpec(worker_id=worker_id, access_point=str(tmp_path / f"w{worker_id}"),
                        argv=tuple(argv), environment=environment or {}, cores=1, memory_mb=100, walltime_s=600)
    plugin.write_script(worker)
    return worker


def submit_one(plugin, tmp_path, argv, worker_id=1, environment=None):
    worker = make_worker(plugin, tmp_path, worker_id, argv, environment)
    (result,) = plugin.submit([worker])
    assert result.status == OK, result.message
    return worker, result.batch_id


def state_of(plugin, batch_id):
    return plugin.status([batch_id]).states[batch_id]


def until_state(plugin, batch_id, state):
    return wait_for(lambda: state_of(plugin, batch_id).state == state and state_of(plugin, batch_id))


def python(code):
    return [PY, "-c", code]


def test_render_quotes_everything(batch, tmp_path):
    worker = WorkerSpec(7, "/data/w 7", ("pilot", "-q", "a b", "$(x)"), {"A": "it's"}, 1, 100, 600)
    script = batch.render(worker)
    assert script.startswith("#!/bin/sh\n") and "cd '/data/w 7' || exit 1" in script
    assert "export A='it'\"'\"'s'" in script and "MINIPANDA_SETUP=ran" in script
    assert "export SITE_NOTE='it'\"'\"'s $(site)'" in script  # batch.environment, as docs/queue-config.md says
    assert script.index("export SITE_NOTE") < script.index("export A=")
    assert "export A='the queue" not in script  # the worker's own value wins
    assert "exec pilot -q 'a b' '$(x)'" in script and "'/data/w 7/job.exit'" in script
    with pytest.raises(BatchError, match="'BAD-NAME'") as info:
        batch.render(WorkerSpec(7, "/w", ("p",), {"BAD-NAME": "x"}, 1, 100, 600))
    assert info.value.status == FATAL


def test_running_then_finished(batch, tmp_path):
    go = tmp_path / "go"
    worker, batch_id = submit_one(batch, tmp_path, python(
        f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        "print('pilot', os.environ['MINIPANDA_SETUP'], os.environ['SITE_NOTE'], os.getcwd())"))
    pid, start = (int(part) for part in batch_id.split("-"))
    assert until_state(batch, batch_id, "running").diag == f"pid {pid} running"
    assert int(stat_fields(pid)[19]) == start
    assert int(stat_fields(pid)[3]) == pid  # its own session (submit waits for setsid): it survives harvester
    go.touch()
    final = until_state(batch, batch_id, "finished")
    assert (final.diag, final.exit_code) == ("pilot exit code 0", 0)
    assert (tmp_path / "w1" / "job.out").read_text() == f"pilot ran it's $(site) {worker.access_point}\n"


def test_failed_with_exit_code(batch, tmp_path):
    _, batch_id = submit_one(batch, tmp_path, python("import sys; sys.exit(3)"))
    final = until_state(batch, batch_id, "failed")
    assert (final.diag, final.exit_code) == ("pilot exit code 3", 3)


def test_a_sigkilled_pilot_is_failed_with_its_signal(batch, tmp_path):
    pid_file = tmp_path / "pilot.pid"
    _, batch_id = submit_one(batch, tmp_path, python(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)"))
    pilot = int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))
    os.kill(pilot, signal.SIGKILL)
    final = until_state(batch, batch_id, "failed")
    assert (final.diag, final.exit_code) == ("pilot killed by signal 9", 137)


def test_a_job_gone_without_exit_code_is_failed(batch, tmp_path):
    _, batch_id = submit_one(batch, tmp_path, ["sleep", "60"])
    os.killpg(int(batch_id.split("-")[0]), signal.SIGKILL)  # the job script too: nobody records an exit code
    final = until_state(batch, batch_id, "failed")
    assert "is gone and left no exit code" in final.diag and final.exit_code is None


def test_cancel_kills_the_group_even_a_pilot_ignoring_sigterm(batch, tmp_path):
    pid_file = tmp_path / "pilot.pid"
    _, batch_id = submit_one(batch, tmp_path, python(
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)"))
    pilot = int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))
    group = int(batch_id.split("-")[0])
    assert set(group_members(group)) == {group, pilot}
    result = batch.cancel([batch_id, "4242-1"])
    assert result.results[batch_id] == (OK, "SIGTERM sent")
    assert result.results["4242-1"][0] == OK
    assert wait_for(lambda: group_members(group) == [], timeout=30)
    final = until_state(batch, batch_id, "cancelled")
    assert final.state == "cancelled"
    assert batch.cancel([batch_id]).results[batch_id] == (OK, "already ended")
    batch.forget([batch_id, "../../x"])
    assert batch.status([batch_id]).states == {} and os.listdir(batch.spool) == []


def test_a_restarted_harvester_sees_the_same_states(batch, spool, tmp_path):
    go = tmp_path / "go"
    _, running = submit_one(batch, tmp_path, python(
        f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)"), worker_id=1)
    _, failed = submit_one(batch, tmp_path, python("raise SystemExit(5)"), worker_id=2)
    until_state(batch, failed, "failed")
    restarted = LocalBatch(QUEUE, LocalTransport(), spool)
    states = restarted.status([running, failed]).states
    assert states[running].state == "running" and states[failed].diag == "pilot exit code 5"
    go.touch()
    assert until_state(restarted, running, "finished")


def test_a_reused_pid_is_not_taken_for_the_pilot(batch, spool, tmp_path):
    mine = os.getpid()  # alive for sure, but not the process the records below describe
    start = int(stat_fields(mine)[19])
    boot_id = open("/proc/sys/kernel/random/boot_id").read().strip()
    os.makedirs(spool, exist_ok=True)
    records = {f"{mine}-{start + 1}": boot_id, f"{mine}-{start}": "an-earlier-boot"}
    for batch_id, boot in records.items():
        record = {"pid": mine, "start": int(batch_id.split("-")[1]), "boot_id": boot, "worker_id": 1,
                  "access_point": str(tmp_path / "nowhere"), "submitted": 0}
        with open(os.path.join(spool, batch_id + ".json"), "w") as handle:
            json.dump(record, handle)
    states = batch.status(list(records)).states
    assert {state.state for state in states.values()} == {"failed"}
    assert batch.cancel(list(records)).results == {batch_id: (OK, "already ended") for batch_id in records}
    assert alive(mine)
    os.remove(os.path.join(spool, f"{mine}-{start}.json"))  # keep the fixture's cleanup away from this process
    os.remove(os.path.join(spool, f"{mine}-{start + 1}.json"))


def test_hostile_environment_values_arrive_literally(batch, tmp_path):
    marker = tmp_path / "executed"
    value = f"it's \"q\" $(touch {marker}) `touch {marker}` $HOME \\ ; | & \n second line\t* ~"
    out = tmp_path / "env.json"
    argv = python(f"import json, os, sys; json.dump([os.environ['HOSTILE'], sys.argv[1]], open({str(out)!r}, 'w'))")
    _, batch_id = submit_one(batch, tmp_path, argv + [value], environment={"HOSTILE": value})
    until_state(batch, batch_id, "finished")
    assert json.loads(out.read_text()) == [value, value]
    assert not marker.exists()


def test_unknown_ids_are_left_out(batch):
    assert batch.status(["999999-1", "garbage", "../../etc/passwd", ""]).states == {}


def test_a_missing_script_is_fatal(batch, tmp_path):
    worker = WorkerSpec(3, str(tmp_path / "w3"), ("true",), {}, 1, 100, 600)
    (result,) = batch.submit([worker])
    assert result.status == FATAL and "no job script" in result.message


def test_one_status_call_for_200_workers(batch, tmp_path):
    workers = [make_worker(batch, tmp_path, i, ["sleep", "60"] if i % 2 else ["sh", "-c", f"exit {i % 4}"])
               for i in range(200)]
    results = batch.submit(workers)
    assert [r.status for r in results] == [OK] * 200
    ids = [r.batch_id for r in results]
    batch.transport.commands = 0
    wanted = {"running": 100, "finished": 50, "failed": 50}

    def settled():
        states = batch.status(ids).states
        counts = {}
        for state in states.values():
            counts[state.state] = counts.get(state.state, 0) + 1
        return counts == wanted and states

    states = wait_for(settled, timeout=60)
    assert states, batch.status(ids).states
    assert batch.transport.commands == 0  # status reads /proc and the spool; it runs nothing
    assert states[ids[2]].diag == "pilot exit code 2"
    running = [ids[i] for i in range(1, 200, 2)]
    cancel = batch.cancel(running)
    assert {status for status, _ in cancel.results.values()} == {OK}
    assert batch.transport.commands == 2  # one SIGTERM command and one delayed-SIGKILL helper for all of them
    assert wait_for(lambda: all(s.state == "cancelled" for s in batch.status(running).states.values()), 30)


def test_plugin_for_a_queue(tmp_path):
    assert isinstance(plugin_for(QUEUE, LocalTransport(), str(tmp_path)), LocalBatch)
    from harvester.batch.slurm import SlurmBatch

    slurm = Queue.model_validate({"name": "SLURMQ", "batch": {"system": "slurm"}})
    assert isinstance(plugin_for(slurm, LocalTransport(), str(tmp_path)), SlurmBatch)


def test_find_recovers_the_batch_id_of_an_unrecorded_submission(tmp_path):
    """A harvester killed after the launch but before it recorded the batch id finds the pilot again by its
    access point, so the worker is not submitted a second time."""
    from harvester.batch.local import LocalBatch
    from harvester.transport import LocalTransport

    plugin = LocalBatch(QUEUE, LocalTransport(), str(tmp_path / "spool"))
    spec = _find_spec(tmp_path, plugin)
    (result,) = plugin.submit([spec])
    try:
        fresh = LocalBatch(QUEUE, LocalTransport(), str(tmp_path / "spool"))  # a restarted harvester
        assert fresh.find(spec.access_point) == result.batch_id
        assert fresh.find(str(tmp_path / "never-submitted")) is None
    finally:
        plugin.cancel([result.batch_id])


def test_find_reads_the_spool_where_the_transport_reaches_it():
    """The spool is on the submit host, which may be another machine (transport ssh): find lists it through the
    transport, never on harvester's own file system."""
    from batchhelp import SchedulerTransport

    transport = SchedulerTransport()
    spool = "/on/the/submit/host/.batch"
    for batch_id, access_point in (("101-5", "/w/1"), ("102-6", "/w/2")):
        transport.stored[f"{spool}/{batch_id}.json"] = json.dumps({"pid": 1, "start": 1, "boot_id": "b",
                                                                  "access_point": access_point}).encode()
    transport.stored[f"{spool}/102-6.cancelled"] = b"1"
    plugin = LocalBatch(QUEUE, transport, spool)
    assert plugin.find("/w/2") == "102-6" and plugin.find("/w/3") is None
    assert LocalBatch(QUEUE, transport, None).find("/w/2") is None  # no spool, no record


def test_find_adopts_a_launch_left_unrecorded_through_the_transport():
    """A harvester killed between the launch and the spool record: find looks for the job script in /proc on the
    submit host (through the transport) and records the process that runs it and leads its session (not its
    subshell, not another worker's); with no such process, the files the launch made tell an ended job (``0-<id>``)
    from one never launched (None)."""
    from batchhelp import SchedulerTransport

    def proc(pid, argv, session, start):
        fields = ["S", "1", str(session), str(session)] + ["0"] * 15 + [str(start)]
        transport.stored[f"/proc/{pid}/cmdline"] = b"\0".join(a.encode() for a in argv) + b"\0"
        transport.stored[f"/proc/{pid}/stat"] = f"{pid} (sh) {' '.join(fields)}\n".encode()

    transport = SchedulerTransport()
    transport.stored["/proc/sys/kernel/random/boot_id"] = b"boot-1\n"
    proc(301, ["/bin/sh", "/w/7/job.sh"], 301, 99)  # the job script, its session's leader
    proc(302, ["/bin/sh", "/w/7/job.sh"], 301, 100)  # its subshell that runs the pilot
    proc(303, ["/bin/sh", "/w/17/job.sh"], 303, 101)  # another worker's
    spool = "/on/the/submit/host/.batch"
    plugin = LocalBatch(QUEUE, transport, spool)
    assert plugin.find("/w/7") == "301-99"
    record = json.loads(transport.stored[f"{spool}/301-99.json"])
    assert (record["pid"], record["start"], record["boot_id"], record["worker_id"]) == (301, 99, "boot-1", 7)
    assert record["access_point"] == "/w/7"
    assert plugin.find("/w/9") is None and not any(name.startswith(f"{spool}/0-") for name in transport.stored)
    transport.stored["/w/9/job.out"] = b""  # launched, ended before the restart: its exit file decides
    assert plugin.find("/w/9") == "0-9" and json.loads(transport.stored[f"{spool}/0-9.json"])["pid"] == 0
    transport.stored["/w/9/job.exit"] = b"0\n"
    assert plugin.status(["0-9"]).states["0-9"].state == "finished"


def _find_spec(tmp_path, plugin):
    import json as _json
    import sys as _sys

    from harvester.batch.base import WorkerSpec
    from queueconfig.loader import loads

    queue = loads(_json.dumps({"queues": {"Q": {}}}), "q.json").queues["Q"]
    spec = WorkerSpec(worker_id=1, access_point=str(tmp_path / "ap1"),
                      argv=(_sys.executable, "-c", "import time; time.sleep(30)"), environment={}, cores=1,
                      memory_mb=100, walltime_s=60)
    plugin.write_script(spec)
    return spec
