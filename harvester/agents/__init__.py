"""The agents, one class each with ``run_once(now)``; the runner decides when each runs. In cycle order:
commands, fetcher, adjuster, submitter, monitor, propagator, sweeper."""
