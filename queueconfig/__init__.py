"""queueconfig: one validated description of every computing queue, read by server, harvester and pilot.

Not built yet: this package will hold the schema, the loader with precise errors, and the Harvester-format
converter. Until then the server registers queues with default queuedata (minipanda/queues.py).
"""
