"""Each monitoring check against a stand-in payload: the limit, and the code it kills with."""
import os
import time

import pytest

from pilot import errors
from pilot.handoff import Handoff
from pilot.jobdata import Job
from pilot.monitor import Monitor
from pilot.proctree import Usage
from pilot.queuedata import HANDOFF_FILES, QueueData


class FakeTree:
    def __init__(self, usage):
        self.value = usage

    def usage(self):
        return self.value


class FakePayload:
    def __init__(self, job_dir, usage=Usage(2, 1000, 900, 5000, 1.5)):
        self.tree = FakeTree(usage)
        self.stdout = os.path.join(job_dir, "payload.stdout")
        self.stderr = os.path.join(job_dir, "payload.stderr")

    def cpu_time(self):
        return 0.0


def monitor(tmp_path, qd=None, job=None, usage=Usage(2, 1000, 900, 5000, 1.5), deadline=None, handoff=None):
    job = job or Job({"PandaID": 1, "transformation": "x", "minRamCount": 100, "maxWalltime": 1000})
    base = {"pilot_min_disk_running_mb": 1}
    return Monitor(job, QueueData(dict(base, **(qd or {}))), str(tmp_path), FakePayload(str(tmp_path), usage),
                   deadline, handoff)


def test_within_limits_and_metrics(tmp_path):
    m = monitor(tmp_path)
    assert m.check() is None
    m.payload.tree.value = Usage(3, 3000, 2000, 9000, 4.0)
    assert m.check() is None
    figures = m.metrics()
    assert (figures["maxRSS"], figures["maxPSS"], figures["maxVMEM"], figures["avgRSS"]) == (3000, 2000, 9000, 2000)
    assert figures["cpuConsumptionTime"] == 4 and figures["cpuConsumptionUnit"] == "s"


def test_memory_over_limit_with_grace(tmp_path):
    usage = Usage(1, 200 * 1024, 160 * 1024, 0, 0)
    assert monitor(tmp_path, {"pilot_memory_grace": 2.0}, usage=usage).check() is None
    assert monitor(tmp_path, {"pilot_memory_grace": 1.5}, usage=usage).check().code == errors.PAYLOADEXCEEDMAXMEM
    no_limit = Job({"PandaID": 1, "transformation": "x"})
    assert monitor(tmp_path, job=no_limit, usage=usage).check() is None
    assert monitor(tmp_path, {"maxrss": 100}, job=no_limit, usage=usage).check().code == errors.PAYLOADEXCEEDMAXMEM


def test_walltime_and_pilot_lifetime(tmp_path):
    m = monitor(tmp_path, job=Job({"PandaID": 1, "transformation": "x", "maxWalltime": 10}))
    m.started -= 20
    assert m.check().code == errors.REACHEDMAXTIME
    assert monitor(tmp_path, deadline=time.monotonic() - 1).check().code == errors.REACHEDMAXTIME


def test_looping(tmp_path):
    (tmp_path / "old").write_text("x")
    os.utime(tmp_path / "old", (1000, 1000))
    os.utime(tmp_path, (1000, 1000))
    m = monitor(tmp_path, {"pilot_looping_limit": 60})
    assert m.check() is None  # measured from the payload's start at the earliest
    m.started_wall -= 120
    assert m.check().code == errors.LOOPINGJOB
    (tmp_path / "new").write_text("progress")
    assert m.check() is None
    no_check = Job({"PandaID": 1, "transformation": "x", "loopingCheck": "False"})
    m = monitor(tmp_path, {"pilot_looping_limit": 60}, job=no_check)
    m.started_wall -= 120
    os.unlink(tmp_path / "new")
    os.utime(tmp_path, (1000, 1000))
    assert m.check() is None


@pytest.mark.parametrize("qd,code", [({"maxwdir": 1}, errors.USERDIRTOOLARGE),
                                     ({"pilot_max_stdout_mb": 1}, errors.STDOUTTOOBIG),
                                     ({"pilot_min_disk_running_mb": 1e12}, errors.NOLOCALSPACE)])
def test_disk_checks(tmp_path, qd, code):
    (tmp_path / "payload.stdout").write_bytes(b"x" * 1_500_000)
    assert monitor(tmp_path, qd).check().code == code
    assert monitor(tmp_path, {}).check() is None


def test_harvester_kill_file(tmp_path):
    handoff = Handoff(str(tmp_path), HANDOFF_FILES)
    m = monitor(tmp_path, handoff=handoff)
    assert m.check() is None
    (tmp_path / "pilot_kill_payload").touch()
    assert m.check().code == errors.PANDAKILL
