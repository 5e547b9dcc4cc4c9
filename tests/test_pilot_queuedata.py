"""Queuedata: every key has a default, bad values fall back, both file shapes load."""
import json

import pytest

from pilot import errors, queuedata
from pilot.queuedata import QueueData, QueueDataError


def test_defaults_for_every_key():
    qd = QueueData({})
    for name, default, doc in queuedata.documented_keys():
        assert qd[name] == default and doc
    assert qd.copytool("pr") == "mv" and qd.memory_limit_mb(0) == 0


def test_values_are_typed_and_invalid_ones_fall_back(caplog):
    qd = QueueData({"timefloor": "0.5", "maxrss": "2000", "pilot_looping_limit": "soon", "maxwdir": -5,
                    "copytools": "mv", "handoff_files": {"kill": "kill_worker.json", "bogus": "x"}})
    assert qd["timefloor"] == 0.5 and qd["maxrss"] == 2000
    assert qd["pilot_looping_limit"] == 7200.0 and qd["maxwdir"] == 0 and qd["copytools"] == {"mv": {}}
    assert qd["handoff_files"]["kill"] == "kill_worker.json"
    assert qd["handoff_files"]["job"] == "pandaJobData.out" and "bogus" not in qd["handoff_files"]
    assert "pilot_looping_limit" in caplog.text


def test_copytool_choice():
    assert QueueData({"acopytools": {"pr": ["copy"], "pw": ["mv"]}}).copytool("pr") == "copy"
    assert QueueData({"acopytools": {"pw": "copy"}}).copytool("pl") == "copy"
    assert QueueData({"copytool": "symlink", "acopytools": {"pr": ["copy"]}}).copytool("pr") == "symlink"
    assert QueueData({"copytools": {"copy": {}}, "acopytools": {}}).copytool("pw") == "copy"


def test_job_label_is_what_the_queue_serves():
    def label(**raw):
        return QueueData(raw).job_label()

    assert label(prodsourcelabels=["managed", "user"]) == label(prodsourcelabels=["user", "managed", "test"]) \
        == "unified"
    assert label(prodsourcelabels=["user"]) == "user" and label(prodsourcelabels=["test", "managed"]) == "managed"
    assert label(prodsourcelabels=["ptest"]) == "ptest"
    assert label(type="unified") == "unified" and label(type="analysis") == "user" and label() == "managed"
    assert label(prodsourcelabels=["user"], type="production") == "user"  # the labels win


def test_memory_limit_and_network():
    qd = QueueData({"maxrss": 2000, "wnconnectivity": "none#ipv4"})
    assert qd.memory_limit_mb(500) == 500 and qd.memory_limit_mb(0) == 2000
    assert qd.offline_network


def test_load_both_shapes_and_errors(tmp_path):
    bare, full = tmp_path / "bare.json", tmp_path / "full.json"
    bare.write_text(json.dumps({"timefloor": 3}))
    full.write_text(json.dumps({"Q": {"timefloor": 4}, "OTHER": {"timefloor": 5}}))
    assert queuedata.load_file(str(bare), "Q")["timefloor"] == 3
    assert queuedata.load_file(str(full), "Q")["timefloor"] == 4
    with pytest.raises(QueueDataError) as missing:
        queuedata.load_file(str(tmp_path / "nope.json"), "Q")
    assert missing.value.code == errors.QUEUEDATA
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(QueueDataError) as bad:
        queuedata.load_file(str(tmp_path / "bad.json"), "Q")
    assert bad.value.code == errors.QUEUEDATANOTOK


def test_server_default_queuedata_is_understood():
    from minipanda.core.queues import default_queuedata

    qd = QueueData(default_queuedata("Q"), "Q")
    assert qd.name == "Q" and qd["maxrss"] == 2000 and qd.copytool("pl") == "mv" and qd["state"] == "ACTIVE"
