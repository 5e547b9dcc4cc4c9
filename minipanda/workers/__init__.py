"""What runs pilots: harvester instances, their workers, commands and queue demand, and pilots' own reports of the
worker they run in. Built on :mod:`minipanda.core`."""
