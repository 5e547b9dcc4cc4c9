"""Batch plugins: one class per batch system (see :mod:`harvester.batch.base` for the contract).

``plugin_for(queue, transport, spool)`` makes the plugin of the class named by the queue's ``batch.system``.
"""
from harvester.batch.base import FATAL, BatchError, BatchSystem
from harvester.batch.local import LocalBatch
from harvester.batch.lsf import LSFBatch
from harvester.batch.pbs import PBSBatch
from harvester.batch.slurm import SlurmBatch


def __getattr__(name):
    """HTCondorBatch is imported when first used: loading the HTCondor bindings looks this host's name up, which
    takes minutes where the name does not resolve (a compute site's login node without DNS), and only a harvester
    with an htcondor queue needs them."""
    if name == "HTCondorBatch":
        from harvester.batch.htcondor import HTCondorBatch

        return HTCondorBatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PLUGINS = {"local": LocalBatch, "slurm": SlurmBatch, "pbs": PBSBatch, "lsf": LSFBatch, "htcondor": None}


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
    return (PLUGINS[system] or __getattr__("HTCondorBatch"))(queue, transport, spool)
