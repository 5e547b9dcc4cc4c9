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
import importlib

from queueconfig.schedconfig import queuedata, schedconfig  # light (no schema); also keeps the name the function's

# name -> the module that defines it, imported on first use (PEP 562): a command that only needs ConfigError or the
# settings-file reader (``minipanda --help``, ``harvester status``) does not pay for the schema's pydantic models.
_EXPORTS = {"ConfigError": "errors", "QueueConfig": "loader", "load": "loader", "loads": "loader",
            "load_partial": "loader", "loads_partial": "loader", "ConfigReloader": "reload",
            **{name: "schema" for name in ("Queue", "Resources", "Limits", "Batch", "Transport", "Pilot", "Handoff",
                                           "Storage", "Endpoint", "Sweeper")}}
__all__ = ["queuedata", "schedconfig", *_EXPORTS]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'queueconfig' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"queueconfig.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
