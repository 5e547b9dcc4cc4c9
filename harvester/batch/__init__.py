"""Batch plugins: one class per batch system (see :mod:`harvester.batch.base` for the contract).

``plugin_for(queue, transport, spool)`` makes the plugin of the class named by the queue's ``batch.system``.
"""
from harvester.batch.base import FATAL, BatchError, BatchSystem
from harvester.batch.htcondor import HTCondorBatch
from harvester.batch.local import LocalBatch
from harvester.batch.lsf import LSFBatch
from harvester.batch.pbs import PBSBatch
from harvester.batch.slurm import SlurmBatch

PLUGINS = {"local": LocalBatch, "slurm": SlurmBatch, "pbs": PBSBatch, "lsf": LSFBatch, "htcondor": HTCondorBatch}


def plugin_for(queue, transport, spool) -> BatchSystem:
    """The batch plugin of ``queue``.

    Args:
        queue: a :class:`queueconfig.schema.Queue`.
        transport: the :class:`harvester.transport.Transport` reaching its submit host.
        spool: a directory on the submit host for the plugin's own files.

    Raises:
        BatchError: (fatal) the queue's batch system has no plugin yet.
    """
    system = queue.batch.system
    if system not in PLUGINS:
        raise BatchError(f"queue {queue.name}: batch.system {system} is not built yet; available: "
                         f"{', '.join(sorted(PLUGINS))}", FATAL)
    return PLUGINS[system](queue, transport, spool)
