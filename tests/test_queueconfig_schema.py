"""queueconfig.schema and queueconfig.fields: defaults, immutability, and the strict checks of values that reach a
shell or a job script."""
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from queueconfig import Queue
from queueconfig.errors import describe
from queueconfig.jsonschema import json_schema


def make(**keys):
    """A queue validated without the cross-key rules (those are tested in test_queueconfig_checks.py)."""
    return Queue.model_validate({"name": "Q", **keys}, context={"checks": False})


def errors_of(**keys):
    with pytest.raises(ValidationError) as info:
        make(**keys)
    return [describe(error) for error in info.value.errors()]


def test_an_empty_queue_is_valid_and_gets_every_default():
    queue = make()
    assert (queue.site, queue.status, queue.mode, queue.mapType, queue.wnconnectivity) == \
        ("Q", "online", "pull", "NoJob", "full")
    assert queue.prodSourceLabels == ("managed", "user")  # production and user jobs unless it says otherwise
    assert queue.resources.corecount == 1 and queue.resources.maxrss == 2000
    assert queue.batch.system == "local" and queue.transport.type == "local"
    assert queue.pilot.copytool == "mv" and queue.pilot.handoff.job == "pandaJobData.out"
    assert queue.storage.input.type == queue.storage.output.type == "local"


def test_limits_default_to_max_workers():
    limits = make(limits={"maxWorkers": 7}).limits
    assert (limits.nQueueLimitWorker, limits.maxNewWorkersPerCycle, limits.nQueueLimitJob) == (7, 7, None)


def test_push_mode_defaults():
    queue = make(mode="push", mapType="ManyToOne", jobsPerWorker=3, limits={"maxWorkers": 4})
    assert queue.limits.nQueueLimitJob == 12
    assert make(mode="push").mapType == "OneToOne"


def test_explicit_values_win_over_derived_defaults():
    queue = make(site="S", mode="push", limits={"maxWorkers": 4, "nQueueLimitWorker": 1, "nQueueLimitJob": 2})
    assert (queue.site, queue.limits.nQueueLimitWorker, queue.limits.nQueueLimitJob) == ("S", 1, 2)


def test_a_loaded_queue_cannot_be_changed():
    queue = make(batch={"system": "slurm", "environment": {"A": "1"}, "extra_directives": ["--exclusive"]})
    with pytest.raises(ValidationError):
        queue.status = "offline"
    with pytest.raises(ValidationError):
        queue.batch.partition = "other"
    with pytest.raises(TypeError):
        queue.batch.environment["A"] = "2"
    assert isinstance(queue.batch.extra_directives, tuple)
    assert queue == make(batch={"system": "slurm", "environment": {"A": "1"}, "extra_directives": ["--exclusive"]})


def test_dump_is_plain_json_data():
    dump = make(batch={"environment": {"A": "1"}}).model_dump(mode="json")
    assert dump["batch"]["environment"] == {"A": "1"} and dump["prodSourceLabels"] == ["managed", "user"]


def test_unknown_keys_are_refused_in_every_section():
    for section in ("resources", "limits", "batch", "transport", "pilot", "storage", "sweeper"):
        assert any("unknown key" in text for text in errors_of(**{section: {"bogus": 1}}))
    assert any("unknown key" in text for text in errors_of(pilot={"handoff": {"bogus": "x"}}))


@pytest.mark.parametrize("keys, fragment", [
    ({"resources": {"corecount": "8"}}, "expected a whole number, got string '8'"),
    ({"resources": {"corecount": True}}, "expected a whole number, got boolean True"),
    ({"resources": {"maxrss": 1.5}}, "expected a whole number, got number 1.5"),
    ({"limits": {"maxWorkers": -1}}, "must be at least 0, got -1 (a negative value has no meaning here)"),
    ({"limits": {"extraPilotFraction": -0.5}}, "must be at least 0.0"),
    ({"transport": {"port": 70000}}, "must be at most 65535"),
    ({"batch": {"system": "sge"}}, "'sge' is not allowed; expected one of local, slurm, pbs, lsf, htcondor"),
    ({"batch": {"system": "SLURM"}}, "did you mean 'slurm'? (values are case-sensitive)"),
    ({"status": "onlin"}, "did you mean 'online'?"),
    ({"prodSourceLabels": []}, "must be at least 1 entries"),
    ({"prodSourceLabels": "managed"}, "expected a list"),
    ({"batch": "slurm"}, "expected a mapping of keys (a section), got string 'slurm'"),
    ({"site": False}, "put the value in quotes"),
    ({"is_template": "yes"}, "expected a boolean, got string 'yes'"),
])
def test_wrong_types_and_values_say_what_was_expected(keys, fragment):
    assert any(fragment in text for text in errors_of(**keys)), errors_of(**keys)


@pytest.mark.parametrize("keys, fragment", [
    ({"batch": {"system": "slurm", "partition": "a b"}}, "no spaces, quotes or shell characters"),
    ({"batch": {"system": "slurm", "partition": "$(reboot)"}}, "passed to the batch system's command line"),
    ({"batch": {"system": "slurm", "account": "x;y"}}, "no spaces, quotes or shell characters"),
    ({"batch": {"system": "slurm", "qos": "-o"}}, "must not start with '-'"),
    ({"batch": {"system": "slurm", "extra_directives": ["--x\n#SBATCH --y"]}}, "a newline would start a new line"),
    ({"batch": {"system": "slurm", "extra_directives": ["--comment=$(id)"]}}, "must not contain $"),
    ({"batch": {"system": "slurm", "extra_directives": ["exclusive"]}}, "starting with '-'"),
    ({"batch": {"system": "htcondor", "extra_directives": ["x = `id`"]}}, "without backticks"),
    ({"batch": {"system": "htcondor", "extra_directives": ["--exclusive"]}}, "one HTCondor submit command"),
    ({"batch": {"environment": {"1X": "a"}}}, "must be an environment variable name"),
    ({"batch": {"environment": {"X": "a\nb"}}}, "must be a single line"),
    ({"batch": {"setup": ["module load x\nrm -rf ~"]}}, "must be a single line"),
    ({"transport": {"host": "-oProxyCommand=x"}}, "could be read as an option"),
    ({"transport": {"host": "a b"}}, "must be a DNS host name"),
    ({"transport": {"user": "root;id"}}, "must be a login name"),
    ({"transport": {"workdir": "relative/dir"}}, "must be an absolute path"),
    ({"transport": {"key_file": "/home/x/my key"}}, "no spaces"),
    ({"transport": {"workdir": "$HOME/x"}}, "must be an absolute path"),
    ({"storage": {"input": {"path": "/data/`id`"}}}, "no spaces, quotes or shell characters"),
    ({"storage": {"input": {"url": "http://x/a b"}}}, "without spaces, quotes or backslashes"),
    ({"pilot": {"handoff": {"job": "../job.json"}}}, "must be a plain file name"),
    ({"pilot": {"handoff": {"job": "same", "kill": "same"}}}, "each handoff file needs its own name"),
    ({"pilot": {"extra_args": ["--a\n--b"]}}, "must be a single line"),
    ({"batch": {"pool": "cm:99999"}}, "port from 1 to 65535"),
    ({"description": "two\nlines"}, "must be a single line"),
    ({"pilot": {"command": ["pilot", "--x\ny"]}}, "must be a single line"),
    ({"pilot": {"command": []}}, "must be at least 1 entries"),
    ({"pilot": {"command": "python3 pilot.py"}}, "expected a list"),
    ({"pilot": {"command": ["p", "-q", "{qeue}"]}}, "entry 2 '{qeue}' has an unknown placeholder {qeue}"),
    ({"pilot": {"command": ["p", "{queue.__class__}"]}}, "entry 1 '{queue.__class__}' has an unknown placeholder"),
    ({"pilot": {"command": ["p", "{queue"]}}, "entry 1 '{queue' has a lone '{'"),
    ({"pilot": {"environment": {"HOME_DIR": "{home}"}}}, "HOME_DIR: '{home}' has an unknown placeholder {home}"),
    ({"pilot": {"environment": {"X": "a}"}}}, "X: 'a}' has a lone '}'"),
    ({"pilot": {"environment": {"1X": "a"}}}, "must be an environment variable name"),
    ({"sweeper": {"max_queued_time": 0}}, "must be at least 1"),
    ({"sweeper": {"keep_failed": -1}}, "must be at least 0"),
    ({"sweeper": {"stale_time": "1h"}}, "expected a whole number"),
    ({"pilot": {"getjob_interval": 0}}, "greater than 0"),
    ({"pilot": {"getjob_interval": "1s"}}, "expected a number"),
])
def test_values_that_reach_a_shell_are_checked_and_the_reason_given(keys, fragment):
    assert any(fragment in text for text in errors_of(**keys)), errors_of(**keys)


@pytest.mark.parametrize("keys", [
    {"transport": {"host": "::1"}}, {"transport": {"host": "192.0.2.7"}},
    {"transport": {"host": "login-1.example.org"}},
    {"transport": {"workdir": "~/panda"}}, {"transport": {"key_file": "~/.ssh/id_ed25519"}},
    {"batch": {"system": "slurm", "partition": "short,long", "account": "atlas-prod"}},
    {"batch": {"system": "lsf", "extra_directives": ['-R "span[hosts=1]"']}},
    {"batch": {"system": "htcondor", "extra_directives": ['requirements = (OpSys == "LINUX")'],
               "pool": "cm.example.org:9618"}},
    {"batch": {"setup": ["source /opt/env.sh && export X=$HOME"]}},
    {"storage": {"input": {"type": "server", "url": "/files/{scope}/{lfn}"}}},
    {"pilot": {"getjob_interval": 0.5}}, {"pilot": {"getjob_interval": 60}},
])
def test_legitimate_values_are_accepted(keys):
    make(**keys)


def test_pilot_command_and_environment_with_placeholders():
    queue = make(pilot={"command": ["python3", "/opt/pilot3/pilot.py", "-q", "{queue}", "--url", "{server}",
                                    "--json={{}}"],
                        "environment": {"PILOT_HOME": "{access_point}", "X_TOKEN": "{token_file}"}})
    assert queue.pilot.command == ("python3", "/opt/pilot3/pilot.py", "-q", "{queue}", "--url", "{server}",
                                   "--json={{}}")
    assert dict(queue.pilot.environment) == {"PILOT_HOME": "{access_point}", "X_TOKEN": "{token_file}"}
    assert make().pilot.command is None and dict(make().pilot.environment) == {}


def test_sweeper_defaults_and_stale_time_from_lost_heartbeat():
    sweeper = make().sweeper
    assert (sweeper.max_queued_time, sweeper.stale_time, sweeper.keep_finished, sweeper.keep_failed) == \
        (172800, 1800, 86400, 259200)
    assert make(pilot={"lost_heartbeat": 900}).sweeper.stale_time == 900
    assert make(pilot={"lost_heartbeat": 900}, sweeper={"stale_time": 1200}).sweeper.stale_time == 1200
    assert make(sweeper={"keep_finished": 0}).sweeper.keep_finished == 0
    schema = json_schema()  # what `queueconfig schema` prints
    assert "sign of life" in schema["$defs"]["Sweeper"]["properties"]["stale_time"]["description"]
    assert "{access_point}" in schema["$defs"]["Pilot"]["properties"]["command"]["description"]


def test_cross_key_rules_run_when_validating_directly():
    with pytest.raises(ValidationError, match="transport.host: missing"):
        Queue.model_validate({"name": "Q", "transport": {"type": "ssh"}})
    Queue.model_validate({"name": "T", "is_template": True, "transport": {"type": "ssh"}})  # templates may be partial


def test_json_schema_describes_keys():
    schema = json_schema()
    assert "Most workers at once" in schema["$defs"]["Limits"]["properties"]["maxWorkers"]["description"]
    assert schema["additionalProperties"] is False


def test_every_key_is_documented():
    from queueconfig.errors import all_keys

    text = (Path(__file__).parents[1] / "docs" / "queue-config.md").read_text()
    missing = [path for path in all_keys() if path != "name" and f"`{path}`" not in text
               and f"`.{path.rsplit('.', 1)[-1]}`" not in text and f"`{path}." not in text]
    assert missing == []


def test_batch_walltime_defaults_to_the_pilot_lifetime_plus_ten_minutes():
    """The effective walltime is in the loaded queue (so `queueconfig show` prints it), unless the queue sets it."""
    from queueconfig.loader import loads

    queues = loads('{"queues": {"A": {"pilot": {"lifetime": 3600}}, "B": {"batch": {"walltime": 99999}}}}',
                   "q.json").queues
    assert queues["A"].batch.walltime == 3600 + 600
    assert queues["B"].batch.walltime == 99999


def test_every_key_but_a_section_is_described_in_the_json_schema():
    """`queueconfig schema` describes each key by the docstring under its attribute (queueconfig.jsonschema)."""
    schema = json_schema()
    undescribed = [f"{name}.{key}" for name, definition in [("Queue", schema), *schema["$defs"].items()]
                   for key, prop in definition.get("properties", {}).items()
                   if "description" not in prop and "$ref" not in prop]
    assert undescribed == []
    assert schema["$defs"]["Pilot"]["properties"]["lifetime"]["description"].startswith("Seconds")


LOAD_ONLY = """
import queueconfig
from queueconfig import schema
config = queueconfig.loads('{"queues": {"Q": {"mode": "push"}}}', "q.json")
assert config.queues["Q"].mode == "push"
sections = [schema.Queue, schema.Resources, schema.Limits, schema.Batch, schema.Transport, schema.Pilot,
            schema.Storage, schema.Endpoint, schema.Sweeper, schema.Handoff]
described = [f"{m.__name__}.{k}" for m in sections for k, f in m.model_fields.items() if f.description]
assert not described, described
print("ok")
"""


def test_loading_a_queue_does_not_read_the_attribute_docstrings():
    """Reading them (pydantic's use_attribute_docstrings parses the module's source) cost every server, harvester
    and testbed start ~10 ms of CPU; only the JSON Schema shows them. A fresh interpreter: this one may have built
    the schema already."""
    out = subprocess.run([sys.executable, "-c", LOAD_ONLY], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
