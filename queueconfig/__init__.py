"""queueconfig: one validated description of every computing queue, read by server, harvester and pilot.

A site admin describes each queue once, in YAML or JSON (or keeps a Harvester ``panda_queueconfig.json``), and
gets every mistake at once, each naming the file, the queue and the key. The schema and the reasons behind it are in
``docs/queue-config.md``.

Use::

    config = queueconfig.load("queues.yaml")       # raises queueconfig.ConfigError with .errors
    config, queue_errors, file_errors = queueconfig.load_partial("queues.yaml")   # the valid queues, and why not
    queue = config.queues["SITE_SLURM"]            # an immutable Queue with effective values
    queueconfig.queuedata(queue)                   # the schedconfig dict pilots read
    reloader = queueconfig.ConfigReloader("queues.yaml", on_change, initial=config)
    reloader.check()                               # from a periodic thread; reloader.request() on SIGHUP
"""
from queueconfig.errors import ConfigError
from queueconfig.loader import QueueConfig, load, load_partial, loads, loads_partial
from queueconfig.reload import ConfigReloader
from queueconfig.schedconfig import queuedata, schedconfig
from queueconfig.schema import (Batch, Endpoint, Handoff, Limits, Pilot, Queue, Resources, Storage, Sweeper,
                                Transport)

__all__ = ["ConfigError", "QueueConfig", "load", "loads", "load_partial", "loads_partial", "ConfigReloader",
           "queuedata", "schedconfig", "Queue", "Resources", "Limits", "Batch", "Transport", "Pilot", "Handoff",
           "Storage", "Endpoint", "Sweeper"]
