"""How harvester reaches a submit host: commands as argv lists and batches of safe file operations, run locally
(:mod:`harvester.transport.base`) or on a login node over SSH (:mod:`harvester.transport.ssh`, which with
:mod:`harvester.transport.ssh_connection` alone imports paramiko: import it only for a queue that needs it;
:mod:`harvester.transport.ssh_channels`, what runs in its exec channels). :mod:`harvester.transport.safefiles` is the file side
(on :mod:`harvester.transport.safepaths`, the walk below a root; :mod:`harvester.transport.safehelper` runs both on
the far host): standard library only.

Batch plugins and the handoff to pilots receive a :class:`Transport` and never know which one it is."""
from harvester.transport.base import CommandResult, Landing, LocalTransport, Transport, TransportError

__all__ = ["CommandResult", "Landing", "LocalTransport", "Transport", "TransportError"]
