"""queueconfig.checks: conflicting settings are errors, doubtful ones warnings, and defaults conflict with nothing."""
from pathlib import Path

import pytest

import queueconfig
from queueconfig import Queue
from queueconfig.checks import ERROR, WARNING, problems

EXAMPLES = Path(__file__).parent / "data" / "queueconfig"


def found(**keys):
    queue = Queue.model_validate({"name": "Q", **keys}, context={"checks": False})
    return {(p.level, ".".join(p.loc)) for p in problems(queue)}


SHARED = {"input": {"type": "shared", "path": "/in"}, "output": {"type": "shared", "path": "/out"}}
PUSH_NONET = {"mode": "push", "wnconnectivity": "none", "storage": SHARED}


@pytest.mark.parametrize("keys, expected", [
    ({"limits": {"maxWorkers": 5, "maxNewWorkersPerCycle": 6}}, (ERROR, "limits.maxNewWorkersPerCycle")),
    ({"limits": {"maxWorkers": 5, "nQueueLimitWorker": 6}}, (ERROR, "limits.nQueueLimitWorker")),
    ({"limits": {"nQueueLimitWorkerMin": 6, "nQueueLimitWorkerMax": 5}}, (ERROR, "limits.nQueueLimitWorkerMin")),
    ({"mode": "push", "limits": {"nQueueLimitJobMin": 6, "nQueueLimitJobMax": 5}}, (ERROR, "limits.nQueueLimitJobMin")),
    ({"mode": "push", "limits": {"nQueueLimitJob": 0}}, (ERROR, "limits.nQueueLimitJob")),
    ({"limits": {"nQueueLimitJob": 4}}, (WARNING, "limits.nQueueLimitJob")),
    ({"limits": {"nQueueLimitJobCoresRatio": 50}}, (WARNING, "limits.nQueueLimitJobCoresRatio")),
    ({"limits": {"nQueueLimitWorkerCoresMin": 8}}, (WARNING, "limits.nQueueLimitWorkerCoresMin")),
    ({"limits": {"nQueueLimitWorkerMin": 2}}, (WARNING, "limits.nQueueLimitWorkerMin")),
    ({"mode": "push", "limits": {"nQueueLimitJobMin": 2}}, (WARNING, "limits.nQueueLimitJobMin")),
    ({"mode": "push", "limits": {"extraPilots": 2}}, (WARNING, "limits.extraPilots")),
    ({"resources": {"minrss": 4000, "maxrss": 2000}}, (ERROR, "resources.minrss")),
    ({"resources": {"maxinputsize": 900, "maxwdir": 800}}, (WARNING, "resources.maxinputsize")),
    ({"resources": {"maxtime": 7200}, "pilot": {"lifetime": 3600}}, (WARNING, "resources.maxtime")),
    ({"mode": "push", "mapType": "NoJob"}, (ERROR, "mapType")),
    ({"mode": "pull", "mapType": "OneToOne"}, (ERROR, "mapType")),
    ({"mode": "push", "mapType": "OneToOne", "jobsPerWorker": 2}, (ERROR, "jobsPerWorker")),
    ({"mode": "push", "mapType": "ManyToOne"}, (WARNING, "jobsPerWorker")),
    ({"wnconnectivity": "none", "storage": SHARED}, (ERROR, "wnconnectivity")),
    ({**PUSH_NONET, "pilot": {"copytool": "http"}}, (ERROR, "pilot.copytool")),
    ({"wnconnectivity": "none", "storage": {"input": {"type": "server"}}}, (ERROR, "storage.input.type")),
    ({"storage": {"input": {"type": "server"}}}, (ERROR, "pilot.copytool")),
    ({"pilot": {"copytool": "http"}}, (ERROR, "pilot.copytool")),
    ({"storage": {"input": {"type": "shared"}}}, (ERROR, "storage.input.path")),
    ({"storage": {"output": {"path": "/x"}}}, (ERROR, "storage.output.path")),
    ({"storage": {"input": {"url": "/f/{lfn}"}}}, (ERROR, "storage.input.url")),
    ({"transport": {"type": "ssh"}}, (ERROR, "transport.host")),
    ({"transport": {"user": "panda"}}, (ERROR, "transport.user")),
    ({"transport": {"type": "ssh", "host": "h", "jump_user": "u"}}, (ERROR, "transport.jump_user")),
    ({"batch": {"system": "slurm", "schedd": "s"}}, (ERROR, "batch.schedd")),
    ({"batch": {"system": "pbs", "token_file": "/t"}}, (ERROR, "batch.token_file")),
    ({"batch": {"file_transfer": True}}, (ERROR, "batch.file_transfer")),
    ({"mode": "push", "batch": {"system": "htcondor", "file_transfer": True}}, (ERROR, "batch.file_transfer")),
    ({**PUSH_NONET, "batch": {"system": "htcondor", "file_transfer": True}}, (ERROR, "batch.file_transfer")),
    ({"transport": {"type": "ssh", "host": "h"}, "batch": {"system": "htcondor", "file_transfer": True}},
     (ERROR, "batch.file_transfer")),
    ({"batch": {"partition": "p"}}, (ERROR, "batch.partition")),
    ({"batch": {"system": "htcondor", "qos": "q"}}, (ERROR, "batch.qos")),
    ({"batch": {"extra_directives": ["--exclusive"]}}, (ERROR, "batch.extra_directives")),
    ({"batch": {"system": "slurm", "walltime": 600}, "pilot": {"lifetime": 3600}}, (ERROR, "batch.walltime")),
    ({"pilot": {"timefloor": 120, "lifetime": 3600}}, (ERROR, "pilot.timefloor")),
    ({"pilot": {"heartbeat": 600, "lost_heartbeat": 900}}, (ERROR, "pilot.lost_heartbeat")),
    ({"pilot": {"command": ["p"], "extra_args": ["-x"]}}, (ERROR, "pilot.extra_args")),
    ({"sweeper": {"stale_time": 500}}, (ERROR, "sweeper.stale_time")),
    ({"mode": "push", "pilot": {"per_worker": 2}}, (ERROR, "pilot.per_worker")),
    ({"mode": "push", "mapType": "ManyToOne", "jobsPerWorker": 2, "pilot": {"per_worker": 4}},
     (WARNING, "pilot.per_worker")),
    # several nodes per worker, pilots per node, jobs larger than a node, backfill
    ({"resources": {"nodes_per_worker": 2}}, (ERROR, "resources.nodes_per_worker")),
    ({"mode": "push", "resources": {"nodes_per_worker": 2}, "batch": {"system": "slurm"}},
     (ERROR, "resources.nodes_per_worker")),
    ({"resources": {"nodes_per_worker": 2}, "pilot": {"per_node": 2, "per_worker": 3}, "batch": {"system": "slurm"}},
     (ERROR, "pilot.per_worker")),
    ({"resources": {"nodes_per_worker": 2}, "pilot": {"per_worker": 3}, "batch": {"system": "slurm"}},
     (ERROR, "pilot.per_worker")),
    ({"resources": {"nodes_per_worker": 2, "corecount": 2, "cores_per_node": 4}, "pilot": {"per_node": 3},
      "batch": {"system": "slurm"}}, (ERROR, "pilot.per_node")),
    ({"resources": {"corecount": 2, "cores_per_node": 4}, "pilot": {"per_worker": 3}}, (ERROR, "pilot.per_worker")),
    ({"resources": {"corecount": 8, "cores_per_node": 4}}, (ERROR, "resources.corecount")),
    ({"mode": "push", "pilot": {"per_node": 2}}, (ERROR, "pilot.per_node")),
    ({"mode": "push", "resources": {"max_job_nodes": 2, "cores_per_node": 4}}, (ERROR, "resources.max_job_nodes")),
    ({"resources": {"max_job_nodes": 2, "cores_per_node": 4}, "batch": {"system": "slurm"}},
     (ERROR, "resources.max_job_nodes")),
    ({"mode": "push", "resources": {"max_job_nodes": 2}, "batch": {"system": "slurm"}},
     (ERROR, "resources.cores_per_node")),
    ({"batch": {"shape": "backfill"}}, (ERROR, "batch.shape")),
    ({"batch": {"system": "slurm", "min_walltime": 600}}, (WARNING, "batch.min_walltime")),
    ({"batch": {"system": "slurm", "shape": "backfill", "walltime": 3600, "min_walltime": 7200},
      "pilot": {"lifetime": 3000}}, (ERROR, "batch.min_walltime")),
    ({"batch": {"system": "slurm", "shape": "backfill", "walltime": 3600, "min_walltime": 300},
      "pilot": {"lifetime": 3000}}, (ERROR, "pilot.stageout_reserve")),
    ({"batch": {"walltime": 400}, "pilot": {"lifetime": 300, "stageout_reserve": 340}},
     (ERROR, "pilot.stageout_reserve")),
])
def test_conflicts(keys, expected):
    assert expected in found(**keys)


def test_defaults_conflict_with_nothing():
    assert found() == set()
    assert found(mode="push") == set()
    assert found(mode="push", wnconnectivity="none") == set()
    assert found(mode="push", mapType="ManyToOne", jobsPerWorker=4) == set()
    assert found(**PUSH_NONET, pilot={"copytool": "symlink"}) == set()
    # no network: harvester moves inputs and outputs from and to the server's file store for the pilot
    assert found(mode="push", wnconnectivity="none", storage={"input": {"type": "server"},
                                                              "output": {"type": "server"}}) == set()
    assert found(storage={"input": {"type": "server", "url": "/f/{lfn}"}}, pilot={"copytool": "http"}) == set()
    assert found(storage={"output": {"type": "server"}}) == set()  # the pilot uploads with http
    assert found(transport={"type": "ssh", "host": "h", "jump_host": "j", "jump_user": "u", "port": 2222}) == set()
    assert found(pilot={"command": ["p", "{queue}"], "environment": {"A": "{walltime}"}}) == set()
    assert found(sweeper={"stale_time": 600, "max_queued_time": 1, "keep_finished": 0, "keep_failed": 0}) == set()
    assert found(batch={"system": "htcondor", "file_transfer": True, "pool": "cm:9618", "token_file": "/t"}) == set()
    # a queue's own pilot command does not read pilot.stageout_reserve: a short walltime is its business
    short = {"batch": {"walltime": 30}, "pilot": {"lifetime": 30}}
    assert (ERROR, "pilot.stageout_reserve") in found(**short)
    assert (ERROR, "pilot.stageout_reserve") not in found(**short | {"pilot": {"lifetime": 30, "command": ["p"]}})


@pytest.mark.parametrize("keys", [
    {"resources": {"nodes_per_worker": 2, "corecount": 2, "cores_per_node": 4}, "pilot": {"per_node": 2},
     "batch": {"system": "slurm"}},
    {"resources": {"nodes_per_worker": 2}, "pilot": {"per_worker": 4}, "batch": {"system": "slurm"}},
    {"resources": {"nodes_per_worker": 2}, "pilot": {"per_node": 2, "per_worker": 4}, "batch": {"system": "slurm"}},
    {"mode": "push", "mapType": "ManyToOne", "jobsPerWorker": 4, "resources": {"nodes_per_worker": 4},
     "batch": {"system": "slurm"}},
    {"mode": "push", "resources": {"max_job_nodes": 4, "cores_per_node": 64}, "batch": {"system": "slurm"}},
    {"batch": {"system": "slurm", "shape": "backfill", "walltime": 3600, "min_walltime": 1200},
     "pilot": {"lifetime": 3000}, "resources": {"maxtime": 1000}},
])
def test_hpc_shapes_that_fit_together_are_fine(keys):
    assert found(**keys) == set()


@pytest.mark.parametrize("keys, per_node, per_worker, node_cores", [
    ({}, 1, 1, 1),
    ({"pilot": {"per_worker": 4}, "resources": {"corecount": 2}}, 4, 4, 8),
    ({"resources": {"nodes_per_worker": 2}}, 1, 2, 1),
    ({"resources": {"nodes_per_worker": 2}, "pilot": {"per_worker": 6}}, 3, 6, 3),
    ({"resources": {"nodes_per_worker": 2}, "pilot": {"per_worker": 3}}, 1, 2, 1),  # an error too (above)
    ({"resources": {"nodes_per_worker": 3, "cores_per_node": 64}, "pilot": {"per_node": 2}}, 2, 6, 64),
    ({"mode": "push", "resources": {"max_job_nodes": 2, "cores_per_node": 4}}, 1, 1, 4),
])
def test_the_effective_shape_of_a_worker(keys, per_node, per_worker, node_cores):
    from queueconfig import allocation

    queue = Queue.model_validate({"name": "Q", **keys}, context={"checks": False})
    assert (allocation.pilots_per_node(queue), allocation.pilots_per_worker(queue),
            allocation.node_cores(queue)) == (per_node, per_worker, node_cores)


def test_a_job_larger_than_a_node_counts_in_whole_nodes():
    from queueconfig import allocation

    queue = Queue.model_validate({"name": "Q", "mode": "push", "batch": {"system": "slurm"},
                                  "resources": {"corecount": 1, "cores_per_node": 4, "max_job_nodes": 2}})
    assert [allocation.job_nodes(queue, cores) for cores in (None, 1, 4, 5, 8, 9)] == [1, 1, 1, 2, 2, 3]
    assert allocation.max_job_cores(queue) == 8
    single = Queue.model_validate({"name": "S", "resources": {"corecount": 2}})
    assert allocation.max_job_cores(single) == 2


def test_a_short_lost_heartbeat_is_reported_once_not_again_as_stale_time():
    assert {loc for _, loc in found(pilot={"heartbeat": 600, "lost_heartbeat": 900})} == {"pilot.lost_heartbeat"}


def test_every_example_queue_is_free_of_errors():
    for name in ("queues.yaml", "panda_queueconfig.json"):
        config = queueconfig.load(EXAMPLES / name)
        for queue in config.queues.values():
            assert all(p.level == WARNING for p in problems(queue)), (name, queue.name)


def test_each_problem_names_the_other_key_it_read():
    queue = Queue.model_validate({"name": "Q", "limits": {"maxWorkers": 1, "nQueueLimitWorker": 2}},
                                 context={"checks": False})
    (problem,) = problems(queue)
    assert problem.related == (("limits", "maxWorkers"),) and "limits.maxWorkers (1)" in problem.text


@pytest.mark.parametrize("keys", [{"pilot": {"per_worker": 8}},
                                  {"mode": "push", "mapType": "ManyToOne", "jobsPerWorker": 8,
                                   "pilot": {"per_worker": 4}}])
def test_several_pilots_per_worker_are_fine_in_pull_mode_and_many_to_one(keys):
    assert not {loc for _, loc in found(**keys) if loc == "pilot.per_worker"}


@pytest.mark.parametrize("value", [0, 257, "4", 2.0])
def test_pilots_per_worker_is_a_whole_number_from_1_to_256(value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="pilot.per_worker"):
        Queue.model_validate({"name": "Q", "pilot": {"per_worker": value}})
