"""harvester: provisions pilots on batch systems, follows them to their end, and relays for pilots with no network.

See docs/harvester.md. The flow a worker takes: ``agents/adjuster`` decides how many, ``agents/submitter`` makes
and submits them through ``batch/`` and ``transport``, ``agents/monitor`` follows them (batch status + the handoff
files of ``messenger``), ``agents/propagator`` reports to the server (``server``), ``agents/sweeper`` kills and
cleans up. ``states`` is the one writer of a worker's status; ``runner`` drives the agents.
"""
__version__ = "0.1.0"
