"""queueconfig.load on real files: templates, typos, wrong types, all errors at once, lines, duplicate keys."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

import queueconfig
from queueconfig import ConfigError

EXAMPLES = Path(__file__).parent / "data" / "queueconfig"


def write(tmp_path, queues, name="queues.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"version": 1, "queues": queues}, sort_keys=False))
    return path


def errors(path):
    with pytest.raises(ConfigError) as info:
        queueconfig.load(path)
    return info.value.errors


def one_error(path):
    found = errors(path)
    assert len(found) == 1, found
    return found[0]


def test_the_example_file_loads(tmp_path):
    config = queueconfig.load(EXAMPLES / "queues.yaml")
    assert sorted(config.queues) == ["CONDOR_TEST", "LSF_LOCAL", "PBS_LOCAL", "TESTBED", "UNI_HPC_NONET", "UNI_SLURM"]
    assert "CLUSTER_TEMPLATE" not in config and len(config) == 6
    assert config.format == "minipanda" and config.source == str(EXAMPLES / "queues.yaml")
    assert config.warnings == ()
    assert len(config.version_id) == 12 and int(config.version_id, 16) >= 0
    slurm = config["UNI_SLURM"]
    assert (slurm.site, slurm.resources.corecount, slurm.transport.jump_host) == \
        ("UNI-CLUSTER", 8, "bastion.example.org")
    assert config.get("NOPE") is None and list(config) == list(config.queues)


def test_version_id_follows_the_content(tmp_path):
    copy = tmp_path / "copy.yaml"
    shutil.copy(EXAMPLES / "queues.yaml", copy)
    first = queueconfig.load(copy).version_id
    assert queueconfig.load(EXAMPLES / "queues.yaml").version_id == first
    copy.write_text(copy.read_text() + "\n# a comment changes the version\n")
    assert queueconfig.load(copy).version_id != first


def test_the_result_is_immutable():
    config = queueconfig.load(EXAMPLES / "queues.yaml")
    with pytest.raises(TypeError):
        config.queues["X"] = config["TESTBED"]
    with pytest.raises(AttributeError):
        config.version_id = "other"


def test_templates_are_inherited_key_by_key(tmp_path):
    path = write(tmp_path, {
        "BASE": {"is_template": True, "site": "S", "batch": {"system": "slurm", "partition": "a", "setup": ["x"]},
                 "limits": {"maxWorkers": 20}},
        "MID": {"is_template": True, "template": "BASE", "batch": {"account": "acc"}, "resources": {"corecount": 4}},
        "Q1": {"template": "MID", "batch": {"partition": "b", "setup": ["y"]}},
        "Q2": {"template": "BASE"},
    })
    config = queueconfig.load(path)
    assert sorted(config.queues) == ["Q1", "Q2"]
    q1 = config["Q1"]
    assert (q1.site, q1.batch.system, q1.batch.partition, q1.batch.account) == ("S", "slurm", "b", "acc")
    assert q1.batch.setup == ("y",)  # lists are replaced, not joined
    assert (q1.resources.corecount, q1.limits.maxWorkers, q1.limits.nQueueLimitWorker) == (4, 20, 20)
    assert q1.template == "MID" and not q1.is_template
    assert config["Q2"].batch.partition == "a"


def test_a_real_queue_can_serve_as_template(tmp_path):
    config = queueconfig.load(write(tmp_path, {"A": {"resources": {"corecount": 2}}, "B": {"template": "A"}}))
    assert config["B"].resources.corecount == 2 and set(config.queues) == {"A", "B"}


def test_unused_template_and_empty_file_warn(tmp_path):
    config = queueconfig.load(write(tmp_path, {"T": {"is_template": True}}))
    assert len(config) == 0
    assert any("template T: not used by any queue" in w for w in config.warnings)
    assert any("no queues defined" in w for w in config.warnings)


def test_missing_template_suggests_the_closest(tmp_path):
    text = one_error(write(tmp_path, {"SLURM_BASE": {"is_template": True}, "Q": {"template": "SLURM_BAS"}}))
    assert "queue Q: template: template 'SLURM_BAS' is not defined in this file; did you mean 'SLURM_BASE'?" in text


@pytest.mark.parametrize("queues, cycle", [
    ({"A": {"template": "B"}, "B": {"template": "A"}}, "A -> B -> A"),
    ({"A": {"template": "A"}}, "A -> A"),
    ({"X": {"template": "A"}, "A": {"template": "B"}, "B": {"template": "C"}, "C": {"template": "A"}},
     "A -> B -> C -> A"),
])
def test_template_cycles_are_reported_once(tmp_path, queues, cycle):
    text = one_error(write(tmp_path, queues))
    assert f"template cycle: {cycle}" in text


@pytest.mark.parametrize("queue, expected", [
    ({"limits": {"maxWorker": 5}}, "limits.maxWorker: unknown key; did you mean 'maxWorkers'?"),
    ({"maxWorkers": 5}, "maxWorkers: unknown key; did you mean 'limits.maxWorkers'? (that key belongs in another"),
    ({"queueStatus": "online"}, "did you mean 'status'?"),
    ({"prodSourceLabel": ["managed"]}, "did you mean 'prodSourceLabels'?"),
    ({"batch": {"queue": "short"}}, "did you mean 'batch.partition'? (queue is what other tools call it)"),
    ({"transport": {"hostname": "h"}}, "did you mean 'host'?"),
    ({"pilot": {"heartbeet": 60}}, "did you mean 'heartbeat'?"),
    ({"batch": {"xyzzy": 1}}, "known keys here: system, partition"),
])
def test_typos_get_a_suggestion(tmp_path, queue, expected):
    text = one_error(write(tmp_path, {"Q": queue}))
    assert expected in text and "queues.yaml:" in text and "queue Q:" in text


def test_every_error_names_file_line_queue_and_key(tmp_path):
    path = write(tmp_path, {"Q": {"resources": {"corecount": "eight"}}})
    assert one_error(path) == f"{path}:5: queue Q: resources.corecount: expected a whole number, got string 'eight'"


def test_all_errors_of_all_queues_are_reported_at_once(tmp_path):
    path = write(tmp_path, {
        "A": {"batch": {"system": "sge"}, "limits": {"maxWorkers": -1}, "transport": {"type": "ssh"}},
        "B": {"resources": {"maxrss": "lots", "minrss": 10}, "limits": {"maxWorker": 1}},
        "C": {"template": "MISSING"},
        "D": {"resources": {"minrss": 3000, "maxrss": 1000}, "mode": "push", "mapType": "NoJob"},
    })
    found = errors(path)
    expected = ["queue A: batch.system", "queue A: limits.maxWorkers", "queue A: transport.host",
                "queue B: resources.maxrss", "queue B: limits.maxWorker", "queue C: template",
                "queue D: resources.minrss", "queue D: mapType"]
    for fragment in expected:
        assert sum(fragment in text for text in found) == 1, (fragment, found)
    assert len(found) == len(expected)
    assert all(text.startswith(f"{path}:") for text in found)


def test_a_conflict_whose_other_side_is_invalid_is_not_reported(tmp_path):
    found = errors(write(tmp_path, {"Q": {"limits": {"maxWorkers": "ten", "nQueueLimitWorker": 50}}}))
    assert len(found) == 1 and "limits.maxWorkers: expected a whole number" in found[0]


def test_errors_in_a_template_are_reported_once_under_the_template(tmp_path):
    found = errors(write(tmp_path, {"T": {"is_template": True, "batch": {"system": "slurm", "partition": "a b"}},
                                    "Q1": {"template": "T"}, "Q2": {"template": "T"}}))
    assert len(found) == 1 and "template T: batch.partition:" in found[0]


def test_a_conflict_from_a_template_value_says_where_it_came_from(tmp_path):
    template = {"is_template": True, "limits": {"maxWorkers": 100, "nQueueLimitWorker": 50}}
    text = one_error(write(tmp_path, {"T": template, "Q": {"template": "T", "limits": {"maxWorkers": 10}}}))
    assert "queue Q: limits.nQueueLimitWorker: 50 is above limits.maxWorkers (10)" in text
    assert "(value from template T)" in text


def test_warnings_name_file_queue_and_key(tmp_path):
    config = queueconfig.load(write(tmp_path, {"Q": {"limits": {"nQueueLimitJob": 3}}}))
    assert config.warnings == (f"{tmp_path / 'queues.yaml'}:5: queue Q: limits.nQueueLimitJob: ignored in mode "
                               "pull: pilots fetch their own jobs",)


def test_json_files_are_accepted_with_lines_even_when_tab_indented(tmp_path):
    path = tmp_path / "queues.json"
    path.write_text(json.dumps({"version": 1, "queues": {"Q": {"batch": {"system": "sge"}}}}, indent="\t"))
    assert one_error(path).startswith(f"{path}:6: queue Q: batch.system: 'sge' is not allowed")
    path.write_text(json.dumps({"version": 1, "queues": {"Q": {}}}))
    assert list(queueconfig.load(path).queues) == ["Q"]


@pytest.mark.parametrize("name, text, fragment", [
    ("q.yaml", "version: 1\nqueues:\n  Q: {}\n  Q: {}\n", "q.yaml:4: key 'Q' appears twice in the same mapping "
                                                         "(first at line 3)"),
    ("q.json", '{"version": 1, "queues": {"Q": {}, "Q": {}}}', "key 'Q' appears twice"),
    ("q.yaml", "version: 1\nqueues:\n  Q: {limits: {maxWorkers: 1\n", "q.yaml:4:1: not valid YAML"),
    ("q.json", '{"version": 1, "queues": {"Q": {},}}', "q.json:1:35: not valid JSON: Expecting property name"),
    ("q.yaml", "", "the file is empty"),
    ("q.yaml", "- a\n- b\n", "expected a mapping with 'version: 1' and 'queues'"),
    ("q.yaml", "version: 1\nqueue: {}\n", "top level: unknown key 'queue'; did you mean 'queues'?"),
    ("q.yaml", "version: 2\nqueues: {}\n", "version: 2 is not supported; expected 1"),
    ("q.yaml", "version: 1\nqueues: [Q]\n", "queues: expected a mapping of queue name to settings"),
    ("q.yaml", "queues:\n  'bad name': {}\n", "queue 'bad name': invalid queue name: may contain only letters"),
    ("q.yaml", "queues:\n  Q: 5\n", "queue 'Q': expected a mapping of settings, got int 5"),
    ("q.yaml", "queues:\n  Q: {name: other}\n", "name: remove this key; a queue's name is its key"),
])
def test_file_level_problems(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    found = errors(path)
    assert any(fragment in error for error in found), found


def test_a_missing_file_is_a_config_error(tmp_path):
    assert "cannot read the file: No such file or directory" in one_error(tmp_path / "absent.yaml")


def test_loads_takes_text_and_an_empty_queue_is_enough():
    config = queueconfig.loads("queues:\n  TESTBED:\n", source="inline.yaml")
    assert config["TESTBED"].batch.system == "local" and config.source == "inline.yaml"
    assert queueconfig.loads(b'{"queues": {"Q": {}}}').format == "minipanda"


def test_config_error_text_lists_everything(tmp_path):
    with pytest.raises(ConfigError) as info:
        queueconfig.load(write(tmp_path, {"A": {"status": "x"}, "B": {"mode": "y"}}))
    assert "2 error(s)" in str(info.value) and info.value.source.endswith("queues.yaml")


def test_load_partial_keeps_the_valid_queues_and_names_the_broken_ones(tmp_path):
    path = write(tmp_path, {
        "GOOD": {"limits": {"maxWorkers": 3}},
        "TYPO": {"limits": {"maxWorker": 3}},
        "T": {"is_template": True, "batch": {"system": "slurm", "partition": "a b"}},
        "FROM_T": {"template": "T"},
        "ORPHAN": {"template": "MISSING"},
        "CONFLICT": {"mode": "push", "mapType": "NoJob"},
        "WARNED": {"limits": {"nQueueLimitJob": 3}},
    })
    config, queue_errors, file_errors = queueconfig.load_partial(path)
    assert sorted(config.queues) == ["GOOD", "WARNED"] and config["GOOD"].limits.maxWorkers == 3
    assert sorted(queue_errors) == ["CONFLICT", "FROM_T", "ORPHAN", "T", "TYPO"] and file_errors == []
    assert queue_errors["FROM_T"] == queue_errors["T"] and "template T: batch.partition:" in queue_errors["T"][0]
    assert "did you mean 'maxWorkers'?" in queue_errors["TYPO"][0]
    assert "template 'MISSING' is not defined" in queue_errors["ORPHAN"][0]
    assert any("nQueueLimitJob" in warning for warning in config.warnings)
    # load() keeps refusing the file, with the same errors, once each
    everything = errors(path)
    assert set(everything) == {text for texts in queue_errors.values() for text in texts}
    assert len(everything) == 4


def test_load_partial_of_a_fully_valid_file_equals_load():
    config, queue_errors, file_errors = queueconfig.load_partial(EXAMPLES / "queues.yaml")
    assert (queue_errors, file_errors) == ({}, [])
    assert config.queues == queueconfig.load(EXAMPLES / "queues.yaml").queues


@pytest.mark.parametrize("text, fragment", [
    ("version: 1\nqueues:\n  Q: {limits: {maxWorkers: 1\n", "q.yaml:4:1: not valid YAML"),
    ("version: 1\nqueues:\n  Q: {}\n  Q: {}\n", "key 'Q' appears twice"),
    ("", "the file is empty"),
    ("- a\n", "expected a mapping with 'version: 1' and 'queues'"),
])
def test_load_partial_of_an_unparsable_file_gives_only_file_errors(tmp_path, text, fragment):
    path = tmp_path / "q.yaml"
    path.write_text(text)
    config, queue_errors, file_errors = queueconfig.load_partial(path)
    assert len(config) == 0 and queue_errors == {}
    assert any(fragment in error for error in file_errors), file_errors


def test_load_partial_file_errors_beside_valid_queues(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("version: 1\nqueus: {}\nqueues:\n  Q: {}\n  'bad name': {}\n  R: 5\n")
    config, queue_errors, file_errors = queueconfig.load_partial(path)
    assert list(config.queues) == ["Q"]
    assert len(file_errors) == 1 and "top level: unknown key 'queus'" in file_errors[0]
    assert sorted(queue_errors) == ["R", "bad name"]
    _, _, missing = queueconfig.load_partial(tmp_path / "absent.yaml")
    assert len(missing) == 1 and "cannot read the file" in missing[0]


def test_load_partial_of_a_harvester_file(tmp_path):
    path = tmp_path / "panda_queueconfig.json"
    path.write_text(json.dumps({"OK_Q": {"mapType": "NoJob", "maxWorkers": 2},
                                "BAD_Q": {"mapType": "NoJob", "maxWorkers": "many"}}))
    config, queue_errors, file_errors = queueconfig.load_partial(path)
    assert list(config.queues) == ["OK_Q"] and list(queue_errors) == ["BAD_Q"] and file_errors == []
    assert "maxWorkers (minipanda key limits.maxWorkers)" in queue_errors["BAD_Q"][0]
