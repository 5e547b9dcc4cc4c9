"""pilot: runs on a worker node; fetches a job, stages in, runs and monitors the payload, stages out, reports.

Not built yet: this package (standard library only) will hold the pilot that harvester ships as one zipapp.
"""
