"""What the in-process bulk benches (bulk_pieces.py, bulk_threads.py) start from: a fresh SQLite home holding
``n_jobs`` waiting jobs of one queue, as bench/bulk.py's clients find them after their submit phase."""
import atexit
import os
import shutil
import tempfile

SPEC = {"jobName": "bench", "prodSourceLabel": "managed", "transformation": "run.sh", "jobParameters": "",
        "coreCount": 1, "minRamCount": 1000, "maxWalltime": 600,
        "Files": [{"type": "log", "lfn": "log.tgz", "scope": "bench"}]}


def sqlite_with_jobs(n_jobs, queue, prefix):
    """(home, connected database) with ``n_jobs`` of ``queue`` submitted in chunks of 5,000. The bulk update's file
    store is taken away: there is no request in process, and the benches' reports carry no files. The home is
    removed when the process exits (each bench side is a process of its own)."""
    from minipanda.api import files

    if hasattr(files, "request_store"):  # a tree before 661019c has none
        files.request_store = lambda: None
    from minipanda.core import jobs, schema

    home = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, home, True)
    database = schema.open_database("sqlite:///" + os.path.join(home, "minipanda.db"))
    database.connect(reuse_if_open=True)
    spec = dict(SPEC, computingSite=queue)
    for start in range(0, n_jobs, 5000):
        jobs.submit_jobs([dict(spec, jobName=f"bench.{start + i}") for i in range(min(5000, n_jobs - start))],
                         "admin")
    return home, database
