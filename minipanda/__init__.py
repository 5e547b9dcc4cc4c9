"""minipanda: a small, PanDA-compatible workload management server (tasks, dispatch, pilots' protocol)."""

__version__ = "0.1.0"
