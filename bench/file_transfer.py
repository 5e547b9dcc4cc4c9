#!/usr/bin/env python
"""The CPU a job's files cost, pilot and server apart: --files 1 MB inputs downloaded by the pilot's http copytool
(``copytools.stage_in``: the download, its size and adler32 checked) and as many 1 MB outputs uploaded by it
(``copytools.stage_out``: adler32, the PUT, the server's checks and store), over real HTTP on loopback, this tree
beside a baseline commit's (each side a child process started in its own tree, alternating).

Each round: a child process builds the app of ``minipanda serve`` on a fresh home (SQLite), serves it with
``minipanda.server.http`` on a free 127.0.0.1 port, puts the inputs into its file store and starts the client, a
process of its own that imports the tree's pilot; the client runs every stage-in, then every stage-out, and reads
its own CPU time and the server process's (``/proc/<pid>/stat``) around each phase; then --calls small
exchanges (a getJob that finds no job, on the kept connection): the CPU of one request and its reply on each
side. Only processes this script started are stopped; nothing but loopback is contacted.

    python3 bench/file_transfer.py --baseline 3a2fc5d              # 300 files, 3 rounds per side
    python3 bench/file_transfer.py --files 100 --rounds 1 --mb 8
"""
import argparse
import inspect
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PHASES = ("stage-in", "stage-out")
SIDES = ("pilot", "server")
FIGURES = SIDES + ("wall",)  # CPU of each side; the wall-clock time of one transfer


def process_cpu(pid):
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client(args):
    """The pilot's side, in the tree it was started in: CPU seconds per phase, as JSON on stdout."""
    from pilot import comm, copytools
    from pilot.jobdata import FileSpec

    class Job:
        def __init__(self, inputs):
            self.inputs = inputs

    server = comm.ServerClient(args.url, args.token_file)
    work = tempfile.mkdtemp(prefix="bench-file-transfer-job-")
    size = int(args.mb * (1 << 20))
    template = "/files/{scope}/{lfn}"
    try:
        output = os.path.join(work, "out.dat")
        with open(output, "wb") as handle:
            handle.write(os.urandom(size))
        spent = {}
        before = own_cpu(), process_cpu(args.server_pid), time.perf_counter()
        for n in range(args.files):
            spec = FileSpec("input", f"in.{n:06d}.dat", "bench.in", fsize=size, checksum=args.checksums[n])
            copytools.stage_in(Job([spec]), work, "http", "", template, server, 60)
            os.unlink(spec.path)
        after = own_cpu(), process_cpu(args.server_pid), time.perf_counter()
        spent["stage-in"] = [a - b for a, b in zip(after, before)]
        before = after
        # each output named with its job (a pilot token stores only its jobs' outputs); a tree from before that
        # rule has no such argument
        named = "panda_id" in inspect.signature(copytools.stage_out).parameters
        for n in range(args.files):
            spec = FileSpec("output", f"out.{n:06d}.dat", "bench.out")
            spec.path = output
            copytools.stage_out(spec, "http", "", 60, url_template=template, client=server,
                                **({"panda_id": args.panda_ids[n]} if named else {}))
        after = own_cpu(), process_cpu(args.server_pid), time.perf_counter()
        spent["stage-out"] = [a - b for a, b in zip(after, before)]
        figures = {phase: dict(zip(FIGURES, [1000 * s / args.files for s in values])) for phase, values in spent.items()}
        before = after
        for _ in range(args.calls):  # a small exchange on the kept connection: getJob for a site with no job
            server.call("/server/panda/getJob", {"siteName": "BENCH_NO_SUCH_SITE", "node": "bench"})
        after = own_cpu(), process_cpu(args.server_pid), time.perf_counter()
        if args.calls:
            figures["exchange"] = dict(zip(FIGURES, [1000 * (a - b) / args.calls for a, b in zip(after, before)]))
        print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dispatched(url, count, home, token_file):
    """PandaIDs of ``count`` jobs, job n declaring the output ``bench.out/out.<n>.dat``, dispatched to the pilot token
    of ``token_file`` (its uploads are then its jobs' outputs), in the order of n."""
    import urllib.request

    from minipanda.core import auth

    def post(path, params, token):
        request = urllib.request.Request(url + path, json.dumps(params).encode(), {
            "Content-Type": "application/json", "Accept": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=300) as reply:
            return json.loads(reply.read())

    admin = auth.create_token(auth.load_secret(home), "bench-admin", "admin")[0]
    post("/api/v1/job/submit", {"jobs": [{
        "jobName": f"bench.{n}", "computingSite": "BENCH", "prodSourceLabel": "managed", "transformation": "/bin/true",
        "jobParameters": "", "Files": [{"type": "output", "lfn": f"out.{n:06d}.dat", "scope": "bench.out"}]}
        for n in range(count)]}, admin)
    with open(token_file) as handle:
        taken = post("/server/panda/getJob", {"siteName": "BENCH", "computingElement": "BENCH", "nJobs": count},
                     handle.read().strip())
    ids = {job["outFiles"].split(",")[0]: job["PandaID"] for job in taken.get("jobs") or []}
    if len(ids) != count:
        raise SystemExit(f"{len(ids)} of {count} jobs dispatched: {str(taken)[:300]}")
    return [ids[f"out.{n:06d}.dat"] for n in range(count)]


def child(args):
    """One side's server, in the tree it was started in; runs the client and passes its figures on."""
    import io
    import logging
    import zlib

    logging.disable(logging.CRITICAL)
    from minipanda.core import auth, filestore
    from minipanda.server import bridge, http, process

    home = tempfile.mkdtemp(prefix="bench-file-transfer-")
    server = None
    try:
        os.makedirs(os.path.join(home, "files"), exist_ok=True)
        app, context = process.build(home)
        token_file = os.path.join(home, "pilot.token")
        with open(token_file, "w") as handle:
            handle.write(auth.create_token(auth.load_secret(home), "bench-pilot", "pilot")[0])
        store = filestore.FileStore(os.path.join(home, "files"))
        size = int(args.mb * (1 << 20))
        checksums = []
        for n in range(args.files):
            content = os.urandom(size)
            store.put("bench.in", f"in.{n:06d}.dat", io.BytesIO(content), size, size)
            checksums.append(f"ad:{zlib.adler32(content) & 0xffffffff:08x}")
        server = http.HttpServer.bind("127.0.0.1", 0)
        server.body_limit = context.max_body + bridge.BODY_SLACK
        server.start(app, threads=8)
        url = f"http://127.0.0.1:{server.effective_port}"
        panda_ids = dispatched(url, args.files, home, token_file)
        argv = [sys.executable, os.path.join(HERE, "file_transfer.py"), "--client", "--files", str(args.files),
                "--calls", str(args.calls),
                "--mb", str(args.mb), "--url", url, "--panda-ids", ",".join(map(str, panda_ids)),
                "--token-file", token_file, "--server-pid", str(os.getpid()), "--checksums", ",".join(checksums)]
        out = subprocess.run(argv, cwd=os.getcwd(), env=os.environ, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(f"the client failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        print(out.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=300, help="inputs downloaded and outputs uploaded per round (300)")
    p.add_argument("--mb", type=float, default=1.0, help="size of each file in MiB (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating (default 3)")
    p.add_argument("--calls", type=int, default=1000,
                   help="small exchanges per round after the files (a getJob that finds no job on the kept "
                        "connection): the CPU of one request and its reply, pilot and server (default 1000; 0: none)")
    p.add_argument("--baseline", metavar="REV", help="also measure that commit's pilot and server, alternating")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--token-file", help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--checksums", type=lambda text: text.split(","), help=argparse.SUPPRESS)
    p.add_argument("--panda-ids", type=lambda text: [int(x) for x in text.split(",")], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        client(args)
        return 0
    if args.child:
        child(args)
        return 0
    import baseline

    print(f"bench/file_transfer.py: {args.files} x {args.mb:g} MiB in and out per round, {args.rounds} rounds per "
          f"side; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    def one_round(label, where, _):
        argv_child = [sys.executable, os.path.join(HERE, "file_transfer.py"), "--child", "--files",
                      str(args.files), "--mb", str(args.mb), "--calls", str(args.calls)]
        env = dict(os.environ, PYTHONPATH=where)
        started = time.perf_counter()
        out = subprocess.run(argv_child, cwd=where, env=env, capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            raise SystemExit(f"the child failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {label}: " + "; ".join(
            f"{phase} pilot {figures[phase]['pilot']:.2f} server {figures[phase]['server']:.2f} wall "
            f"{figures[phase]['wall']:.2f}"
            for phase in PHASES) + f" ms per file ({time.perf_counter() - started:.0f} s, load "
            f"{os.getloadavg()[0]:.2f})", flush=True)
        return figures

    runs = baseline.run_sides(args.baseline, one_round, args.rounds)
    results = {label: runs.of(label) for label in runs.labels}
    print(f"\nmedian of the rounds, ms per {args.mb:g} MiB file: CPU (process CPU time) and wall-clock, real HTTP on "
          "loopback, one transfer at a time")
    print("| side | stage-in: pilot | stage-in: server | stage-out: pilot | stage-out: server | CPU, all four | "
          "stage-in: wall | stage-out: wall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    medians = {}
    for label, rows in results.items():
        cells = {(phase, who): statistics.median(row[phase][who] for row in rows)
                 for phase in PHASES for who in SIDES}
        cells["all"] = statistics.median(sum(row[phase][who] for phase in PHASES for who in SIDES) for row in rows)
        for phase in PHASES:
            cells[(phase, "wall")] = statistics.median(row[phase]["wall"] for row in rows)
        medians[label] = cells
        print(f"| {label} | " + " | ".join(f"{cells[(phase, who)]:.2f}" for phase in PHASES for who in SIDES)
              + f" | {cells['all']:.2f} | " + " | ".join(f"{cells[(phase, 'wall')]:.2f}" for phase in PHASES) + " |")
    if args.calls:
        print(f"\none small exchange (getJob, no job; {args.calls} per round), median of the rounds, ms per request:")
        print("| side | pilot CPU | server CPU | wall |")
        print("|---|---:|---:|---:|")
        for label, rows in results.items():
            print(f"| {label} | " + " | ".join(f"{statistics.median(row['exchange'][who] for row in rows):.3f}"
                                           for who in FIGURES) + " |")
    if args.baseline:
        new, old = medians["this tree"], medians[f"baseline {args.baseline}"]
        print("this tree / baseline: " + ", ".join(f"{phase} {who} {new[(phase, who)] / old[(phase, who)]:.2f}"
                                                   for phase in PHASES for who in SIDES)
              + f"; all four {new['all'] / old['all']:.2f}; wall: " + ", ".join(
                  f"{phase} {new[(phase, 'wall')] / old[(phase, 'wall')]:.2f}" for phase in PHASES))
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
