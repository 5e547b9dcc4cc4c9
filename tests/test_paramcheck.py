"""minipanda/tasks/paramcheck.py: task parameters read with every error collected and named by its field (not the
first one only), and a task split one way only: files or events per job, GB, or a number of jobs without input."""
from minipanda.tasks.paramcheck import Checker, base, split


def test_every_bad_field_is_named_at_once():
    check = Checker({"taskName": "bad name!", "coreCount": "0", "maxAttempt": True, "prodSourceLabel": "managedx",
                     "nScouts": "3"})
    spec = base(check)
    assert spec["nScouts"] == 3 and spec["coreCount"] == 0
    assert check.errors == [
        "taskName: 'bad name!' is not a valid name (letters, digits and ._:/+-)",
        "prodSourceLabel: expected one of user, panda, test, ptest, managed, prod_test, rc_test, got 'managedx'",
        "coreCount: must be at least 1, got 0",
        "maxAttempt: expected an integer, got True",
    ]
    check = Checker({})
    base(check)
    assert check.errors == ["taskName: required"]


def test_a_task_is_split_one_way_only():
    check = Checker({"nFilesPerJob": 2, "nEventsPerJob": 10})
    assert split(check, "in.ds", None) is None
    assert check.errors == ["nFilesPerJob, nEventsPerJob: give one of them, not both"]
    check = Checker({"nFilesPerJob": 2, "nGBPerJob": 1})
    assert split(check, "in.ds", None) is None
    assert check.errors == ["nFilesPerJob, nGBPerJob: give only one way of splitting"]
    check = Checker({"nFilesPerJob": 2})
    assert split(check, None, None) == {"rule": "jobs", "value": 1}
    assert check.errors == ["nFilesPerJob: needs an input dataset (inDS); without input, use nJobs"]
    assert split(Checker({"nGBPerJob": 1.5}), "in.ds", None) == {"rule": "gb", "value": 1.5}
    assert split(Checker({}), "in.ds", None) == {"rule": "files", "value": 1}
    assert split(Checker({"nEventsPerJob": 10}), None, 100) == {"rule": "events", "value": 10, "nEvents": 100}
