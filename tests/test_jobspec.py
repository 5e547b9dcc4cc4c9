"""Submitted job specs (minipanda/core/jobspec.py through jobs.submit_jobs): what is kept, what is refused."""
import pytest
from conftest import make_job
from minipanda.core import jobs, jobspec, models
from minipanda.errors import RequestError


def test_a_submitted_attempt_number_is_kept(database):
    (panda_id, _, _), = jobs.submit_jobs([make_job(attemptNr=1)], "alice")
    assert models.Job.get_by_id(panda_id).attempt_nr == 1
    (again, _, _), = jobs.submit_jobs([make_job()], "alice")
    assert models.Job.get_by_id(again).attempt_nr == 0


def test_a_negative_attempt_number_is_refused_by_name(database):
    with pytest.raises(RequestError, match=r"jobs\[0\]\.attemptNr: must not be negative"):
        jobs.submit_jobs([make_job(attemptNr=-1)], "alice")


@pytest.mark.parametrize("lfn", ["a,..", "a\x00b", "%2e%2e", "..", ".hidden", "a/b", "x" * 256, "a b", ""])
def test_unsafe_file_names_are_refused_at_submit_and_nothing_is_written(database, lfn):
    spec = make_job(Files=[{"lfn": lfn, "type": "input", "scope": "user.alice"}])
    with pytest.raises(RequestError, match=r"jobs\[0\]\.Files\[0\]\.lfn"):
        jobs.submit_jobs([spec], "alice")
    assert models.Job.select().count() == 0 and models.JobFile.select().count() == 0


def test_a_scope_with_a_trailing_newline_is_refused_by_both_paths(database):
    """SAFE_SCOPE's '$' matched before a trailing newline: "user.alice\n" was taken, a directory name with a
    newline. Refused whole, whether the spec is checked column by column (a regular batch) or alone."""
    spec = make_job(Files=[{"lfn": "a.dat", "type": "input", "scope": "user.alice\n"}])
    for specs in ([spec], [make_job(), dict(reversed(spec.items()))]):
        with pytest.raises(RequestError, match=r"jobs\[\d\]\.Files\[0\]\.scope"):
            jobs.submit_jobs(specs, "alice")
    assert models.Job.select().count() == 0 and models.JobFile.select().count() == 0


@pytest.mark.parametrize("name, value", [("coreCount", 2 ** 31), ("maxWalltime", "1e30"), ("jobsetID", 2 ** 63)])
def test_numbers_beyond_their_column_are_refused_by_name(database, name, value):
    with pytest.raises(RequestError, match=rf"jobs\[0\]\.{name}: must be between"):
        jobs.submit_jobs([make_job(**{name: value})], "alice")


def test_new_guids_are_the_uuids_of_their_random_bytes(monkeypatch):
    """Written from hex digits without a UUID object, each GUID is still exactly uuid.UUID(bytes, version=4) of
    its 16 random bytes: every variant digit and every version digit come out as the uuid module makes them."""
    import os
    import uuid

    raw = b"".join(bytes([value]) * 16 for value in range(256)) + os.urandom(16 * 64)  # every byte, every place
    monkeypatch.setattr(jobspec.os, "urandom", lambda n: raw[:n])
    n = len(raw) // 16
    assert jobspec.new_guids(n) == [str(uuid.UUID(bytes=raw[16 * i:16 * i + 16], version=4)) for i in range(n)]
