"""What one worker of a queue is, in nodes, pilots and cores: the effective values of ``resources.nodes_per_worker``,
``resources.cores_per_node``, ``pilot.per_node`` and ``pilot.per_worker`` together (harvester, the schedconfig and
the cross-key checks read them here, so they agree).

A worker is one batch allocation of ``nodes_per_worker`` nodes with ``per_node`` pilots on each. ``pilot.per_worker``
alone (one node) is the older way to say the same for one node; on several nodes without ``per_node`` a
``per_worker`` that the nodes divide evenly is spread over them, else one pilot runs per node. A OneToOne worker
runs one job, so one pilot; with ``resources.max_job_nodes`` above 1 its size follows its job (:func:`job_nodes`).
"""
import math


def nodes_per_worker(queue):
    return queue.resources.nodes_per_worker


def pilots_per_node(queue):
    """Pilots on each node of a worker of ``queue``."""
    nodes, pilot = nodes_per_worker(queue), queue.pilot
    if pilot.per_node is not None:
        return pilot.per_node
    if nodes == 1:
        return pilot.per_worker
    if "per_worker" in pilot.model_fields_set and pilot.per_worker % nodes == 0:
        return pilot.per_worker // nodes
    return 1


def pilots_per_worker(queue):
    """Pilots one new worker of ``queue`` runs (all its nodes; 1 for OneToOne: one job, one pilot)."""
    if queue.mapType == "OneToOne":
        return 1
    return nodes_per_worker(queue) * pilots_per_node(queue)


def node_cores(queue):
    """Cores of one node: resources.cores_per_node, or what the pilots of a node use."""
    res = queue.resources
    return res.cores_per_node or res.corecount * pilots_per_node(queue)


def job_nodes(queue, cores):
    """Nodes a job of ``cores`` cores needs on ``queue`` (at least 1)."""
    return max(1, math.ceil(max(1, int(cores or 1)) / max(1, node_cores(queue))))


def max_job_cores(queue):
    """The most cores a job of ``queue`` may ask: max_job_nodes whole nodes on a multi-node queue, else the cores of
    one pilot."""
    if queue.resources.max_job_nodes > 1:
        return queue.resources.max_job_nodes * node_cores(queue)
    return queue.resources.corecount
