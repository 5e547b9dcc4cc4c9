"""The server's wire values the pilot reads: PanDA StatusCodes and update commands. Standard library only.

A copy of the values in the server's ``minipanda/errors.py`` (the pilot ships alone and imports nothing of the
server); ``tests/test_pilot_wire.py`` checks that the two copies agree.
"""

SC_OK, SC_TIMEOUT, SC_NO_JOBS, SC_FAILED, SC_INVALID, SC_ROLE, SC_PERMISSION, SC_MISSING_KEY = (
    0, 10, 20, 30, 50, 60, 70, 80)
TOBEKILLED = "tobekilled"  # command=... in an update reply: stop the job
SOFTKILL = "softkill"  # PanDA's gentler form of the same, which the pilot treats alike
PILOT_STATES = frozenset({"starting", "running", "holding", "transferring", "finished", "failed"})
