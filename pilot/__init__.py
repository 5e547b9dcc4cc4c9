"""pilot: runs on a worker node; fetches a job, stages in, runs and monitors the payload, stages out, reports.

Standard library only (psutil is used when importable), Python >= 3.9, so harvester can ship it as one zipapp
(``pilot build-zipapp OUT.pyz``). It talks to the server over HTTP, or - on nodes without outbound network - only
through files in its harvester work directory. Start at ``pilot.worker.Pilot.work()``; docs/pilot.md describes
options, queuedata keys, files and error codes.
"""
__version__ = "0.1.0"
