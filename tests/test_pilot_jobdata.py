"""Job definitions from the server's getJob reply, and refusal of unsafe names."""
import pytest
import requests

from pilot import errors
from pilot.errors import PilotError
from pilot.jobdata import Job


def test_real_getjob_reply_is_parsed(sqlite_server):
    from conftest import make_job

    spec = make_job(jobParameters="-x 'a b'", Files=[
        {"type": "input", "lfn": "in1", "scope": "s", "fsize": 10, "checksum": "ad:0000000a", "GUID": "g1"},
        {"type": "input", "lfn": "in2", "scope": "s", "fsize": 20, "checksum": "md5:abc"},
        {"type": "output", "lfn": "out1", "scope": "o"}, {"type": "log", "lfn": "log.tgz", "scope": "l"}])
    requests.post(sqlite_server.url + "/api/v1/job/submit", json={"jobs": [spec]},
                  headers=sqlite_server.headers(), timeout=30).raise_for_status()
    reply = requests.post(sqlite_server.url + "/server/panda/getJob", json={"computingElement": "TEST_PQ"},
                          headers=sqlite_server.headers(sqlite_server.token("pilot", "p")), timeout=30).json()
    job = Job(reply)
    job.validate()
    assert job.panda_id == reply["PandaID"] and job.job_pars == "-x 'a b'" and job.max_walltime == 600
    assert [(f.lfn, f.scope, f.fsize, f.checksum_type, f.checksum) for f in job.inputs] == [
        ("in1", "s", 10, "adler32", "0000000a"), ("in2", "s", 20, "md5", "abc")]
    assert [(f.lfn, f.scope) for f in job.outputs] == [("out1", "o")]
    assert job.log.lfn == "log.tgz" and job.log.scope == "l" and job.log.guid


def test_plain_dict_and_nulls():
    job = Job({"PandaID": "7", "transformation": "/bin/true", "inFiles": "NULL", "outFiles": "",
               "logFile": "NULL", "attemptNr": "2", "coreCount": "NULL"})
    assert (job.panda_id, job.attempt_nr, job.core_count, job.inputs, job.outputs, job.log) == (7, 2, 1, [], [], None)
    with pytest.raises(ValueError):
        Job({"transformation": "x"})


@pytest.mark.parametrize("field,value,code", [
    ("inFiles", "../../etc/passwd", errors.STAGEINFAILED), ("outFiles", "/tmp/x", errors.BADOUTPUTFILENAME),
    ("logFile", "..", errors.BADOUTPUTFILENAME), ("outFiles", "x" * 300, errors.LFNTOOLONG),
    ("scopeIn", "../up", errors.STAGEINFAILED)])
def test_unsafe_names_refused(field, value, code):
    data = {"PandaID": 1, "transformation": "/bin/true", "inFiles": "in", field: value}
    with pytest.raises(PilotError) as exc:
        Job(data).validate()
    assert exc.value.code == code
