"""minipanda/tasks/jediparams.py: PanDA's taskParamMap read into the task spec without a database: what JEDI would
run and minipanda cannot (build, merge, containers) refused by its key, unknown keys refused, informational keys
kept without effect, the user only the token's, and prun's units (hours of walltime, MB per core) turned into ours."""
from minipanda.tasks.jediparams import jedi


def task_param_map(**extra):
    return dict({"taskName": "user.alice.t1", "userName": "alice", "vo": "atlas", "prodSourceLabel": "user",
                 "noInput": True, "nEvents": 100, "nEventsPerJob": 10,
                 "jobParameters": [{"type": "constant", "value": "echo ${SN}"}],
                 "log": {"type": "template", "param_type": "log", "dataset": "user.alice.t1.log/",
                         "value": "user.alice.t1.$JEDITASKID._${SN/P}.log.tgz"}}, **extra)


def test_a_generation_task_becomes_a_spec_of_event_jobs():
    spec, check = jedi(task_param_map(cliParams="prun ...", osInfo="el9"), "alice")
    assert check.errors == []
    assert spec["form"] == "jedi" and spec["split"] == {"rule": "events", "value": 10, "nEvents": 100}
    assert spec["ipConnectivity"] == "none" and spec["site"] == []


def test_what_minipanda_cannot_run_is_refused_by_its_key():
    _, check = jedi(task_param_map(buildSpec={}, container_name="x", madeUpKey=1, userName="mallory"), "alice")
    errors = "\n".join(check.errors)
    assert "buildSpec: build jobs are not supported by minipanda" in errors
    assert "container_name: containers are not supported by minipanda" in errors
    assert "madeUpKey: PanDA task parameter not supported by minipanda" in errors
    assert "userName: tasks are submitted as the token's user (alice), not 'mallory'" in errors


def test_prun_units_are_turned_into_seconds_and_megabytes_of_the_whole_job():
    spec, check = jedi(task_param_map(maxWalltime=2, coreCount=4, ramCount=1000, ramCountUnit="MBPerCore"), "alice")
    assert check.errors == [] and spec["walltime"] == 7200 and spec["ramCount"] == 4000
    _, check = jedi(task_param_map(nEvents=None), "alice")
    assert "nEvents: required with noInput (the number of events to generate)" in check.errors
