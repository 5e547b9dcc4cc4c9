"""queueconfig.harvester: a Harvester panda_queueconfig.json is accepted as it is, mapped, and nothing is dropped
without a warning; ``convert`` gives our format, which loads to the same queues."""
import json
from pathlib import Path

import pytest
import yaml

import queueconfig
from queueconfig import ConfigError

HARVESTER_FILE = Path(__file__).parent / "data" / "queueconfig" / "panda_queueconfig.json"
OURS_FILE = HARVESTER_FILE.with_name("queues.yaml")
SLURM = {"name": "SlurmSubmitter", "module": "pandaharvester.harvestersubmitter.slurm_submitter"}


@pytest.fixture(scope="module")
def config():
    return queueconfig.load(HARVESTER_FILE)


def write(tmp_path, document):
    path = tmp_path / "panda_queueconfig.json"
    path.write_text(json.dumps(document, indent="\t"))
    return path


def warnings_of(config, queue):
    return " | ".join(w for w in config.warnings if f"queue {queue}:" in w)


def test_the_realistic_file_is_accepted_and_templates_are_left_out(config):
    assert config.format == "harvester"
    assert sorted(config.queues) == ["CERN_CONDOR", "PBS_QUEUE", "UNI_HPC_PUSH", "UNI_SLURM", "UNI_SLURM_SSH"]


def test_attributes_and_plugin_keys_are_mapped(config):
    slurm = config["UNI_SLURM"]
    assert (slurm.status, slurm.prodSourceLabels, slurm.mode, slurm.mapType) == \
        ("online", ("managed",), "pull", "NoJob")
    assert (slurm.batch.system, slurm.batch.partition, slurm.resources.corecount) == ("slurm", "grid", 16)
    limits = slurm.limits
    assert (limits.maxWorkers, limits.nQueueLimitWorker, limits.maxNewWorkersPerCycle) == (100, 20, 10)
    assert (limits.nQueueLimitWorkerRatio, limits.nQueueLimitWorkerMin, limits.maxSubmissionAttempts) == (30, 5, 3)
    assert slurm.transport.workdir == "/data/harvester/workdirs"  # the accessPoint before ${workerID}
    assert slurm.template == "SLURM_TEMPLATE"


def test_ssh_middleware_becomes_the_transport(config):
    ssh = config["UNI_SLURM_SSH"]
    assert ssh.status == "offline"
    assert (ssh.transport.type, ssh.transport.host, ssh.transport.user) == \
        ("ssh", "login.cluster.example.org", "atlpan")
    assert (ssh.transport.key_file, ssh.transport.jump_host) == ("/home/atlpan/.ssh/id_rsa", "bastion.example.org")


def test_push_htcondor_and_pbs_queues(config):
    push = config["UNI_HPC_PUSH"]
    assert (push.mode, push.mapType, push.jobsPerWorker, push.limits.nQueueLimitJob) == ("push", "ManyToOne", 4, 16)
    condor = config["CERN_CONDOR"]
    assert (condor.batch.system, condor.batch.schedd, condor.batch.pool) == \
        ("htcondor", "schedd02.example.org", "cm.example.org:9618")
    assert condor.prodSourceLabels == ("managed", "user")  # Harvester's "unified"
    pbs = config["PBS_QUEUE"]
    assert (pbs.status, pbs.batch.system, pbs.resources.corecount) == ("test", "pbs", 4)
    assert (pbs.mode, pbs.mapType) == ("push", "OneToOne")  # Harvester's default mapType


def test_keys_without_meaning_here_are_warned_about_not_dropped(config):
    template = warnings_of(config, "SLURM_TEMPLATE")
    for key in ("submitter.templateFile", "submitter.logDir", "truePilot", "runMode", "preparator", "stager",
                "workerMaker.jobAttributesToUse", "common.payloadType"):
        assert key in template
    assert "sshMiddleware.sockDir" in warnings_of(config, "UNI_SLURM_SSH")
    assert "noHeartbeat" in warnings_of(config, "UNI_HPC_PUSH")
    assert "unknown keys, ignored (Harvester would ignore them too): maxWorker (did you mean maxWorkers?)" in \
        warnings_of(config, "CERN_CONDOR")
    assert "mapType not set; Harvester's default OneToOne" in warnings_of(config, "PBS_QUEUE")


def test_unsupported_submitter_is_an_error(tmp_path):
    path = write(tmp_path, {"K8S_Q": {"submitter": {"name": "K8sSubmitter",
                                                    "module": "pandaharvester.harvestersubmitter.k8s_submitter"}}})
    with pytest.raises(ConfigError) as info:
        queueconfig.load(path)
    assert "queue K8S_Q: submitter: pandaharvester.harvestersubmitter.k8s_submitter.K8sSubmitter has no minipanda " \
           "batch system" in info.value.errors[0]


def test_errors_name_the_harvester_key_and_its_line(tmp_path):
    path = write(tmp_path, {"Q": {"mapType": "NoJob", "maxWorkers": "lots", "nQueueLimitWorker": 5,
                                  "submitter": {**SLURM, "partition": "a;b"}},
                            "R": {"mapType": "NoJob", "maxWorkers": 2, "nQueueLimitWorker": 5}})
    with pytest.raises(ConfigError) as info:
        queueconfig.load(path)
    found = info.value.errors
    assert any(f"{path}:4: queue Q: maxWorkers (minipanda key limits.maxWorkers): expected a whole number" in e
               for e in found), found
    assert any("queue Q: submitter.partition (minipanda key batch.partition): 'a;b' may contain only" in e
               for e in found), found
    assert any("queue R: nQueueLimitWorker (minipanda key limits.nQueueLimitWorker): 5 is above" in e
               for e in found), found
    assert len(found) == 3


def test_monitor_for_another_batch_system_is_an_error(tmp_path):
    monitor = {"name": "HTCondorMonitor", "module": "pandaharvester.harvestermonitor.htcondor_monitor"}
    path = write(tmp_path, {"Q": {"mapType": "NoJob", "monitor": monitor, "submitter": SLURM}})
    with pytest.raises(ConfigError, match="monitor: .*is for htcondor but the submitter is for slurm"):
        queueconfig.load(path)


def test_passwords_are_refused_with_a_reason(tmp_path):
    herder = {"name": "DirectSshHerder", "module": "pandaharvester.harvestermiddleware.direct_ssh_herder",
              "remoteHost": "login.example.org", "sshPassword": "secret"}
    config = queueconfig.load(write(tmp_path, {"Q": {"mapType": "NoJob", "submitter": SLURM, "ssh": herder}}))
    assert config["Q"].transport.host == "login.example.org"
    assert "ssh.sshPassword (passwords are not supported" in config.warnings[0]


def test_template_suffix_and_flag_both_make_templates(tmp_path):
    config = queueconfig.load(write(tmp_path, {
        "A_TEMPLATE": {"mapType": "NoJob", "maxWorkers": 3}, "B": {"isTemplateQueue": True, "nQueueLimitWorker": 1},
        "Q1": {"templateQueueName": "A_TEMPLATE"}, "Q2": {"templateQueueName": "B", "mapType": "NoJob"}}))
    assert sorted(config.queues) == ["Q1", "Q2"]
    assert config["Q1"].limits.maxWorkers == 3 and config["Q2"].limits.nQueueLimitWorker == 1


def test_a_queue_without_prodsourcelabel_serves_managed_as_in_harvester(tmp_path):
    config = queueconfig.load(write(tmp_path, {
        "T_TEMPLATE": {"mapType": "NoJob"}, "U_TEMPLATE": {"mapType": "NoJob", "prodSourceLabel": "user"},
        "PLAIN": {"mapType": "NoJob"}, "FROM_T": {"templateQueueName": "T_TEMPLATE"},
        "FROM_U": {"templateQueueName": "U_TEMPLATE"}}))
    labels = {name: queue.prodSourceLabels for name, queue in config.queues.items()}
    assert labels == {"PLAIN": ("managed",), "FROM_T": ("managed",), "FROM_U": ("user",)}
    assert queueconfig.loads("queues: {OURS: {}}").queues["OURS"].prodSourceLabels == ("managed", "user")


@pytest.mark.parametrize("source", [HARVESTER_FILE, OURS_FILE])
@pytest.mark.parametrize("syntax", ["yaml", "json"])
def test_convert_round_trip_gives_equal_queues(tmp_path, source, syntax):
    original = queueconfig.load(source)
    document = original.document()
    assert set(document) == {"version", "queues"}
    if source == HARVESTER_FILE:
        assert document["queues"]["SLURM_TEMPLATE"]["is_template"] is True  # templates are kept
    converted = tmp_path / f"converted.{syntax}"
    converted.write_text(json.dumps(document) if syntax == "json" else yaml.safe_dump(document, sort_keys=False))
    again = queueconfig.load(converted)
    assert again.format == "minipanda"
    assert dict(again.queues) == dict(original.queues)
    assert queueconfig.load(converted).document() == document  # converting our format changes nothing


def test_ncore_above_ncorepernode_makes_a_worker_of_whole_nodes(tmp_path):
    """Harvester's Slurm submitter sizes a worker as ceil(nCore / nCorePerNode) nodes: the same here, one pilot per
    node; nCore within one node stays the cores of one pilot."""
    path = write(tmp_path, {
        "HPC": {"mapType": "NoJob", "submitter": {**SLURM, "nCorePerNode": 64, "nCore": 130}},
        "SMALL": {"mapType": "NoJob", "submitter": {**SLURM, "nCorePerNode": 64, "nCore": 8}},
        "NODE": {"mapType": "NoJob", "submitter": {**SLURM, "nCorePerNode": 64}}})
    config = queueconfig.load(path)
    shape = {name: (q.resources.corecount, q.resources.cores_per_node, q.resources.nodes_per_worker)
             for name, q in config.queues.items()}
    assert shape == {"HPC": (64, 64, 3), "SMALL": (8, 64, 1), "NODE": (64, 64, 1)}


def test_a_bad_ncorepernode_is_an_error_naming_the_harvester_key(tmp_path):
    path = write(tmp_path, {"Q": {"mapType": "NoJob", "submitter": {**SLURM, "nCorePerNode": "wide", "nCore": 8}}})
    with pytest.raises(ConfigError) as info:
        queueconfig.load(path)
    assert any("submitter.nCorePerNode (minipanda key resources.cores_per_node)" in e for e in info.value.errors), \
        info.value.errors
