"""What the server's check of a finished job's files against its file store costs (minipanda.core.stageout
fail_mismatched_finals, called by minipanda.core.updates), in one run, in process (SQLite, a real store):

- ``no-file bulk``: updateJobsInBulk of 100 ``finished`` reports without files, without the store given (as before
  the check) and with it (as the routes call it now): the check must cost nothing there;
- ``files final``: one ``finished`` report of a job whose output and log are in the store, without and with the
  check (one query of the job's scopes, a stat and an extended-attribute read per file).

    python bench/finals_check.py [--repeat 15]

Prints the median CPU time of this process per job (CPU, not wall time: the machine is shared), the ratio, and the
load average. Nothing is asserted.
"""
import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from conftest import make_job  # noqa: E402
from minipanda.core import filestore, jobs, models, schema, states, updates  # noqa: E402

DATA = b"x" * 4096
FILES = [{"type": "output", "lfn": "out.dat", "scope": "mc"}, {"type": "log", "lfn": "log.tgz", "scope": "logs"}]


def running_jobs(n, files):
    ids = [row[0] for row in jobs.submit_jobs([make_job(Files=files) for _ in range(n)], "bench")]
    with models.database.atomic():
        states.change_job_status(ids, "sent", "bench dispatch")
        states.change_job_status(ids, "running", "bench start")
    return ids


def cpu(fn):
    started = time.process_time()
    fn()
    return time.process_time() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds per variant (default 15)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="finals-check-")
    schema.open_database("sqlite:///" + os.path.join(home, "minipanda.db")).connect(reuse_if_open=True)
    store = filestore.FileStore(os.path.join(home, "files"))
    adler = f"{zlib.adler32(DATA):08x}"
    results = {}
    for _ in range(args.repeat):
        for variant, given in (("without", None), ("with", store)):
            ids = running_jobs(100, [])
            spent = cpu(lambda: updates.update_jobs([{"jobId": i, "state": "finished"} for i in ids], store=given))
            results.setdefault(("no-file bulk", variant), []).append(spent / len(ids))
            (panda_id,) = running_jobs(1, FILES)
            xml = {}
            for spec in FILES:
                lfn = f"{panda_id}.{spec['lfn']}"
                models.JobFile.update(lfn=lfn).where(models.JobFile.job == panda_id,
                                                     models.JobFile.lfn == spec["lfn"]).execute()
                store.put(spec["scope"], lfn, io.BytesIO(DATA), len(DATA), 1 << 20, adler)
                xml[lfn] = {"fsize": len(DATA), "adler32": adler, "surl": f"/files/{spec['scope']}/{lfn}"}
            final = {"jobId": panda_id, "state": "finished", "xml": json.dumps(xml)}
            spent = cpu(lambda: updates.update_job(final, store=given))
            assert models.Job.get_by_id(panda_id).status == "finished"
            results.setdefault(("files final", variant), []).append(spent)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.repeat} rounds; CPU per job, median")
    for case in ("no-file bulk", "files final"):
        before, now = (statistics.median(results[(case, v)]) * 1000 for v in ("without", "with"))
        print(f"  {case:14s} without the check {before:7.3f} ms   with it {now:7.3f} ms   ratio {now / before:.2f}")


if __name__ == "__main__":
    main()
