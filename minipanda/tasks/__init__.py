"""The task side (JEDI made small): task parameters, datasets, the generator (splitting, scouts, job building,
brokerage, priorities), and the duties that follow jobs to their end (settle, retry, watchdog). Built on
:mod:`minipanda.core`."""
