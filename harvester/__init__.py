"""harvester: provisions pilots on batch systems (local, Slurm, PBS, LSF, HTCondor), locally or over SSH.

Not built yet: this package will hold the worker adjuster, submitter, monitor, sweeper and the file messenger for
nodes without network. See docs/architecture.md.
"""
