"""Submitted specs checked column by column (minipanda/core/jobcolumns.py): the same values and the same errors as
jobspec.parse_submitted spec by spec, for regular and odd specs alike; regular groups never go one by one."""
import random
import re

import pytest
from conftest import make_job
from minipanda.core import jobcolumns, jobs, jobspec, models
from minipanda.errors import RequestError, SpecError


def one_by_one(specs):
    """What parse_submitted makes of each spec: ([(columns, attributes, files)], errors)."""
    parsed, errors = [], []
    for index, spec in enumerate(specs):
        where = f"jobs[{index}]"
        try:
            if isinstance(spec, list):
                spec = jobspec.positional_to_dict(spec, where)
            parsed.append(jobspec.parse_submitted(spec, where))
        except SpecError as exc:
            errors.extend(exc.errors)
    return parsed, errors


def by_columns(specs):
    """What jobcolumns.parse makes of them, in parse_submitted's shape."""
    batch, errors = jobcolumns.parse(specs)
    if errors:
        return None, errors
    files = [[] for _ in specs]
    for position, job in enumerate(batch.file_jobs):
        files[job].append({name: batch.files[name][position] for name in jobcolumns.FILE_COLUMNS})
    parsed = [({column: values[index] for column, values in batch.columns.items() if values[index] is not None},
               batch.attributes[index] or {}, files[index]) for index in range(len(specs))]
    return parsed, errors


# Values each key may take: good ones, and ones only parse_submitted may judge (nulls, texts of numbers, floats,
# bools, out of range, negative, too long, odd types, panda-client's datetime objects).
NUMBERS = [0, 1, 7, 2 ** 31 - 1, 2 ** 31, -1, 2 ** 63, "3", "2500.004", "x", 1.5, True, None, "", "NULL", [1]]
TEXTS = ["Q", "a" * 32, "a" * 33, "a" * 129, 5, None, "", "NULL", "0", {"k": 1},
         {"_datetime_object": "2026-01-01 00:00:00"}]
KEYS = {
    "jobName": TEXTS, "computingSite": TEXTS, "transformation": TEXTS, "prodSourceLabel": TEXTS,
    "jobParameters": TEXTS, "jobPars": TEXTS, "coreCount": NUMBERS, "minRamCount": NUMBERS, "maxWalltime": NUMBERS,
    "attemptNr": NUMBERS, "currentPriority": NUMBERS, "jobsetID": NUMBERS, "jediTaskID": NUMBERS,
    "taskID": NUMBERS, "workingGroup": TEXTS, "resource_type": TEXTS, "cloud": TEXTS + NUMBERS + [2.5, False],
    "processingType": TEXTS, "PandaID": NUMBERS, "jobStatus": TEXTS, "creationTime": TEXTS,
}
LFNS = ["log.tgz", "in.1", "-x", "..", ".hidden", "a/b", "a,b", "x" * 256, "", 5, None, "a b"]
FILE_KEYS = {
    "lfn": LFNS, "type": ["input", "output", "log", "pseudo_input", "weird", "", None, 3, ["log"], {"a": 1}],
    "scope": ["s", "user.alice", "..", "a/b", "", "NULL", None, 5], "GUID": ["G-1", "", "NULL", None, 7, "g" * 64, "g" * 65],
    "guid": ["g-2", None, "g" * 65], "dataset": ["ds", "", None, 3, "d" * 256, "d" * 257],
    "destinationDBlock": ["db", None, "", "b" * 257], "checksum": ["ad:00000001", None, "NULL", "c" * 65], "fsize": [0, 10, -1, "10", 2 ** 63, 1.5, None, True],
    "md5sum": ["x", None],
}


def random_file(rng, keys):
    good = {"lfn": f"f.{rng.randrange(10 ** 6)}", "type": rng.choice(["input", "output", "log"])}
    entry = {}
    for key in keys:
        entry[key] = rng.choice(FILE_KEYS[key]) if rng.random() < 0.25 else good.get(key, FILE_KEYS[key][0])
    return entry


def random_batch(rng):
    """A few groups of specs (each group with its own keys, in its own order), mostly good values."""
    specs = []
    for _ in range(rng.randrange(1, 4)):
        keys = ["computingSite", "transformation"] * (rng.random() < 0.9) + rng.sample(sorted(KEYS), rng.randrange(5))
        rng.shuffle(keys)
        files_key = rng.choice(["Files", "files", None, "both"])
        file_keys = [["lfn", "type"] + rng.sample(sorted(set(FILE_KEYS) - {"lfn", "type"}), rng.randrange(4))
                     for _ in range(2)]
        for _ in range(rng.randrange(1, 5)):
            base = make_job(jobName=f"j{rng.randrange(100)}")
            spec = {key: (rng.choice(KEYS[key]) if rng.random() < 0.15 else base.get(key, KEYS[key][0]))
                    for key in keys}
            files = [random_file(rng, rng.choice(file_keys)) for _ in range(rng.randrange(3))]
            if rng.random() < 0.03:
                files = rng.choice([None, "x", [1], {"lfn": "a"}])
            if files_key == "both":
                spec["files"], spec["Files"] = [random_file(rng, ["lfn", "type"])], files
            elif files_key:
                spec[files_key] = files
            specs.append(spec)
    if rng.random() < 0.2:  # panda-client's form of some of them
        specs = [positional(spec) if isinstance(spec.get("Files", []), list) and rng.random() < 0.7 else spec
                 for spec in specs]
    if rng.random() < 0.1:
        specs.insert(rng.randrange(len(specs) + 1), rng.choice([["too", "short", []], "text", 5, None]))
    return specs


def positional(spec):
    """panda-client 2.2's list of JobSpec values, then the files' FileSpec values (a key it has no place for is
    lost, as it would be)."""
    def file_values(entry):
        return [entry.get(name, "NULL") for name in jobspec.FILESPEC_ATTRIBUTES] + [None] if isinstance(entry, dict) \
            else entry
    return [spec.get(name, "NULL") for name in jobspec.JOBSPEC_ATTRIBUTES] + [
        [file_values(entry) for entry in spec.get("Files", [])]]


def test_checked_column_by_column_the_specs_give_what_parse_submitted_gives_each():
    rng = random.Random(23)
    taken = 0
    for _ in range(3000):
        specs = random_batch(rng)
        expected, expected_errors = one_by_one(specs)
        got, errors = by_columns(specs)
        assert errors == expected_errors, specs
        if not errors:
            assert got == expected, specs
            taken += 1
    assert taken > 300  # batches without an error were compared value by value, not only refusals


@pytest.mark.parametrize("bad, message", [
    ({"coreCount": -1}, "jobs[1].coreCount: must not be negative"),
    ({"maxWalltime": 2 ** 31}, "jobs[1].maxWalltime: must be between"),
    ({"prodSourceLabel": "x" * 33}, "jobs[1].prodSourceLabel: at most 32 characters"),
    ({"computingSite": ""}, "jobs[1].computingSite: required"),
    ({"Files": [{"type": "log", "lfn": ".."}]}, "jobs[1].Files[0].lfn: expected a plain file name"),
    ({"Files": [{"type": "log", "lfn": "a", "scope": "a/b"}]}, "jobs[1].Files[0].scope"),
    ({"Files": [{"type": "weird", "lfn": "a"}]}, "jobs[1].Files[0].type"),
    ({"Files": [{"type": "log", "lfn": "a", "fsize": "many"}]}, "jobs[1].Files[0].fsize: expected an integer"),
    ({"cloud": ["WORLD"]}, "jobs[1].cloud: expected a plain value"),
    ({"Files": [{"type": ["log"], "lfn": "a"}]}, "jobs[1].Files[0].type: expected one of"),
    ({"Files": [{"type": "log", "lfn": "a", "checksum": "c" * 65}]}, "jobs[1].Files[0].checksum: at most 64"),
])
def test_a_bad_value_in_a_regular_batch_is_refused_naming_its_job_and_field(bad, message):
    """The batch's other jobs share the bad one's keys: the group is checked column by column, finds a value it
    cannot vouch for, and goes one by one, so the error names the job and the field."""
    good = {"cloud": "WORLD", "Files": [{"type": "log", "lfn": "a", "scope": "s", "fsize": 1}]}
    specs = [make_job(**good), make_job(**dict(good, **bad)), make_job(**good)]
    for spec in specs:
        spec["Files"] = [dict(good["Files"][0], **f) for f in spec["Files"]]
    assert set(map(tuple, specs)) == {tuple(specs[0])}
    batch, errors = jobcolumns.parse(specs)
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_a_regular_batch_is_never_checked_one_by_one(monkeypatch):
    calls = []
    real = jobspec.parse_submitted
    monkeypatch.setattr(jobspec, "parse_submitted", lambda spec, where: calls.append(where) or real(spec, where))
    specs = [make_job(jobName=f"j.{i}", cloud="WORLD", Files=[
        {"type": "input", "lfn": f"in.{i}", "scope": "s", "dataset": "d", "fsize": 10, "GUID": f"G{i}"},
        {"type": "log", "lfn": f"log.{i}.tgz", "scope": "s"}]) for i in range(100)]
    specs[7] = dict(reversed(specs[7].items()))  # another key order: a group of its own, checked the same way
    batch, errors = jobcolumns.parse(specs)
    assert errors == [] and calls == []
    assert batch.columns["job_name"] == [f"j.{i}" for i in range(100)]
    assert batch.attributes[7] == {"cloud": "WORLD"} and batch.file_jobs.count(7) == 2
    jobspec_view, _ = one_by_one(specs)
    assert by_columns(specs)[0] == jobspec_view
    calls.clear()
    lists = [positional(spec) for spec in specs[:50]]  # panda-client's form: made dicts, then checked as a group
    batch, errors = jobcolumns.parse(lists)
    assert errors == [] and calls == [] and batch.columns["job_name"] == [f"j.{i}" for i in range(50)]
    assert by_columns(lists)[0] == one_by_one(lists)[0]


def test_jobs_that_leave_out_a_column_get_its_default_and_each_files_order_is_kept(database):
    """Two groups: the first gives priorities, names, a task and attributes, the second none of them; files of
    several kinds in each job, as submitted, in row order, across the 1,000-row statements."""
    given = [make_job(jobName=f"n.{i}", currentPriority=5, jobDefinitionID=9, cloud="C", Files=[
        {"type": "input", "lfn": f"in.{i}", "scope": "s", "GUID": f"G{i}"},
        {"type": "output", "lfn": f"out.{i}", "scope": "s"}, {"type": "log", "lfn": f"log.{i}", "scope": "s"}])
        for i in range(700)]
    plain = [{"computingSite": "TEST_PQ", "transformation": "t", "Files": [{"lfn": f"x.{i}", "type": "log"}]}
             for i in range(700)]
    specs = [spec for pair in zip(given, plain) for spec in pair]
    results = jobs.submit_jobs(specs, "alice")
    ids = [row[0] for row in results]
    stored = {job.panda_id: job for job in models.Job.select()}
    first, second = stored[ids[0]], stored[ids[1]]
    assert (first.job_name, first.current_priority, first.assigned_priority, first.job_definition_id) == \
        ("n.0", 5, 5, 9)
    assert (second.job_name, second.current_priority, second.assigned_priority, second.job_definition_id,
            second.prod_source_label, second.max_attempt) == (f"job.{ids[1]}", 1000, 1000, 0, "managed", 3)
    assert results[:2] == [[ids[0], 9, "n.0"], [ids[1], 0, f"job.{ids[1]}"]]
    assert '"cloud": "C"' in first.attributes and second.attributes == "{}"
    assert {job.status for job in stored.values()} == {"activated"} and len(stored) == 1400
    files = {}
    for f in models.JobFile.select().order_by(models.JobFile.row_id):
        files.setdefault(f.panda_id, []).append(f)
    assert [(f.lfn, f.status) for f in files[ids[1398]]] == [("in.699", "ready"), ("out.699", "defined"),
                                                             ("log.699", "defined")]
    assert files[ids[1398]][0].guid == "G699" and len({f.guid for f in files[ids[1398]]}) == 3
    assert [f.lfn for f in files[ids[1399]]] == ["x.699"] and files[ids[1399]][0].guid


@pytest.mark.parametrize("key, limit", [("GUID", 64), ("guid", 64), ("dataset", 256), ("destinationDBlock", 256),
                                        ("checksum", 64)])
def test_a_file_text_longer_than_its_column_is_refused_by_name_and_nothing_is_written(database, key, limit):
    """PostgreSQL refused such a value with a database error that failed the whole submission as a 500."""
    specs = [make_job(Files=[{"type": "log", "lfn": f"log.{i}", key: "x" * limit}]) for i in range(3)]
    specs[1]["Files"][0][key] = "x" * (limit + 1)
    with pytest.raises(RequestError, match=rf"jobs\[1\]\.Files\[0\]\.{key}: at most {limit} characters"):
        jobs.submit_jobs(specs, "alice")
    assert models.Job.select().count() == 0 and models.JobFile.select().count() == 0
    jobs.submit_jobs(specs[:1], "alice")  # the longest a column holds is stored
    assert models.JobFile.select().count() == 1


@pytest.mark.parametrize("bad, message", [
    ({"jobName": "a\x00b"}, "jobs[1].jobName: a NUL character cannot be stored"),
    ({"jobParameters": "--x\x00"}, "jobs[1].jobParameters: a NUL character cannot be stored"),
    ({"jobParameters": "", "jobPars": "--x\x00"}, "jobs[1].jobPars: a NUL character cannot be stored"),
    ({"Files": [{"type": "log", "lfn": "a", "dataset": "d\x00"}]}, "jobs[1].Files[0].dataset: a NUL character"),
    ({"Files": [{"type": "log", "lfn": "a", "GUID": "\x00"}]}, "jobs[1].Files[0].GUID: a NUL character"),
    ({"Files": [{"type": "log", "lfn": "a", "checksum": "ad:\x00"}]}, "jobs[1].Files[0].checksum: a NUL character"),
    ({"Files": [{"type": "log", "lfn": "a", "destinationDBlock": "\x00x"}]},
     "jobs[1].Files[0].destinationDBlock: a NUL character"),
])
def test_a_nul_character_in_a_text_is_refused_naming_its_job_and_field(database, bad, message):
    """PostgreSQL cannot store a NUL in a text (the whole submission failed with a database error, a 500; SQLite
    stored it): refused as the pilot's updates refuse it, by both paths, nothing stored. A NUL in an attribute is
    kept: attributes are stored as JSON, where it is an escape."""
    for regular in (True, False):
        specs = [make_job(), make_job(**bad), make_job()]
        if not regular:  # another key order: the bad spec in a group of its own
            specs[1] = dict(reversed(specs[1].items()))
        with pytest.raises(RequestError, match=re.escape(message)):
            jobs.submit_jobs(specs, "alice")
        assert models.Job.select().count() == 0 and models.JobFile.select().count() == 0
    jobs.submit_jobs([make_job(cloud="a\x00b")], "alice")
    assert '"cloud": "a\\u0000b"' in models.Job.get().attributes
