"""queueconfig.queuedata: the schedconfig dict has what PanDA pilot3 needs and what the minipanda pilot reads."""
import json
from pathlib import Path

import pytest

import queueconfig
from queueconfig import Queue, queuedata

EXAMPLES = Path(__file__).parent / "data" / "queueconfig"


def data_of(**keys):
    return queuedata(Queue.model_validate({"name": "Q", **keys}))


def test_pilot3_minimum_keys_are_there():
    data = data_of(site="SITE")
    assert (data["nickname"], data["state"], data["atlas_site"], data["panda_resource"]) == ("Q", "ACTIVE", "SITE", "Q")
    assert data["maxwdir"] == 10000 and data["timefloor"] == 0
    # mv is the one pilot3 copytool that works without grid storage; pilot3 needs all three keys to stage out
    assert data["copytools"] == {"mv": {}} and data["acopytools"] == {"pr": ["mv"], "pw": ["mv"], "pl": ["mv"]}
    assert data["astorages"] == {}
    json.dumps(data)


@pytest.mark.parametrize("status, state", [("online", "ACTIVE"), ("test", "ACTIVE"), ("brokeroff", "ACTIVE"),
                                           ("offline", "OFFLINE")])
def test_only_offline_stops_pilots(status, state):
    data = data_of(status=status)
    assert (data["status"], data["state"]) == (status, state)


def test_resources_and_pilot_settings_use_panda_units():
    data = data_of(resources={"corecount": 8, "maxrss": 16000, "minrss": 1000, "maxtime": 7200, "maxwdir": 50000,
                              "maxinputsize": 20000},
                   pilot={"timefloor": 30, "lifetime": 7200, "heartbeat": 120, "lost_heartbeat": 900,
                          "looping_limit": 3600, "extra_args": ["--debug"]})
    assert [data[k] for k in ("corecount", "maxrss", "minrss", "maxtime", "maxwdir", "maxinputsize", "timefloor")] \
        == [8, 16000, 1000, 7200, 50000, 20000, 30]
    assert (data["pilot_heartbeat_interval"], data["pilot_lost_heartbeat_timeout"], data["pilot_looping_limit"],
            data["pilot_lifetime"], data["pilot_extra_args"]) == (120, 900, 3600, 7200, ["--debug"])


@pytest.mark.parametrize("tool, read, write", [("mv", "mv", "mv"), ("copy", "copy", "copy"),
                                               ("symlink", "symlink", "copy")])
def test_copytool_per_activity(tool, read, write):
    data = data_of(pilot={"copytool": tool})
    assert data["acopytools"] == {"pr": [read], "pw": [write], "pl": [write]}
    assert data["copytool"] == (tool if read == write else "")


def test_http_stage_in_and_shared_storage():
    data = data_of(pilot={"copytool": "http"}, storage={"input": {"type": "server", "url": "/files/{scope}/{lfn}"}})
    assert (data["acopytools"]["pr"], data["input_url"], data["input_dir"]) == (["http"], "/files/{scope}/{lfn}", "")
    data = data_of(storage={"input": {"type": "shared", "path": "/in"}, "output": {"type": "shared", "path": "/out"}})
    assert (data["input_dir"], data["output_dir"], data["catchall"]) == ("/in", "/out", "mv_final_destination")
    assert data_of()["catchall"] == ""


def test_server_output_storage_uploads_with_http():
    data = data_of(storage={"output": {"type": "server"}})
    assert data["acopytools"] == {"pr": ["mv"], "pw": ["http"], "pl": ["http"]} and data["copytool"] == ""
    assert (data["output_url"], data["output_dir"], data["input_url"]) == ("/files/{scope}/{lfn}", "", "")
    data = data_of(pilot={"copytool": "http"}, storage={"input": {"type": "server"},
                                                        "output": {"type": "server", "url": "http://se/{lfn}"}})
    assert (data["copytool"], data["input_url"], data["output_url"]) == ("http", "/files/{scope}/{lfn}",
                                                                         "http://se/{lfn}")
    assert data_of()["output_url"] == ""


def test_labels_give_the_queue_type():
    assert data_of()["type"] == "unified"  # our default: managed and user
    assert data_of(prodSourceLabels=["managed"])["type"] == "production"
    assert data_of(prodSourceLabels=["user"])["type"] == "analysis"
    assert data_of(prodSourceLabels=["managed", "user"])["type"] == "unified"


def test_handoff_files_and_mode():
    data = data_of(mode="push", wnconnectivity="none", pilot={"handoff": {"job": "HPCJobs.json"}})
    assert data["handoff_files"]["job"] == "HPCJobs.json" and data["handoff_files"]["kill"] == "kill_worker"
    assert (data["mode"], data["maptype"], data["wnconnectivity"]) == ("push", "OneToOne", "none")


def test_schedconfig_covers_every_queue():
    config = queueconfig.load(EXAMPLES / "queues.yaml")
    full = queueconfig.schedconfig(config)
    assert list(full) == sorted(config.queues)
    assert full["UNI_SLURM"]["atlas_site"] == "UNI-CLUSTER" and full["LSF_LOCAL"]["state"] == "OFFLINE"


def test_the_minipanda_pilot_reads_every_value_as_given():
    pilot_queuedata = pytest.importorskip("pilot.queuedata")
    config = queueconfig.load(EXAMPLES / "queues.yaml")
    for queue in config.queues.values():
        data = queuedata(queue)
        read = pilot_queuedata.QueueData(json.loads(json.dumps(data)), queue.name)
        for key in ("maxrss", "maxwdir", "maxinputsize", "corecount", "copytool", "wnconnectivity", "input_dir",
                    "output_dir", "pilot_heartbeat_interval", "pilot_lost_heartbeat_timeout", "pilot_looping_limit"):
            assert read[key] == data[key], (queue.name, key)
        assert read["handoff_files"]["job"] == data["handoff_files"]["job"]
        assert read.copytool("pr") == data["acopytools"]["pr"][0]
