"""How harvester reaches a submit host: commands as argv lists and batches of safe file operations, run locally
(:mod:`harvester.transport.base`) or on a login node over SSH (:mod:`harvester.transport.ssh`, the one module that
imports paramiko: import it only for a queue that needs it). :mod:`harvester.transport.safefiles` is the file side:
standard library only, it also runs on the far host.

Batch plugins and the handoff to pilots receive a :class:`Transport` and never know which one it is."""
from harvester.transport.base import CommandResult, Landing, LocalTransport, Transport, TransportError

__all__ = ["CommandResult", "Landing", "LocalTransport", "Transport", "TransportError"]
