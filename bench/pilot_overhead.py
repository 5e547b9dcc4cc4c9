#!/usr/bin/env python
"""Pilot overhead benchmark: the zipapp pilot runs a trivial job against a real ``minipanda serve``.

For each run (a fresh job, a fresh pilot process) it measures:

  start -> exec     from spawning ``python3 pilot.pyz`` to the payload's first instruction (the payload writes
                    its own clock reading), and from the pilot's own start stamp (interpreter start excluded)
  exit -> ack       from the payload's last instruction to the pilot having the server's reply to the final
                    update in hand (PILOT_POST_FINAL_UPDATE in the pilot's timing file)
  pilot total       from spawning the pilot to its exit (timefloor is 0: it stops after its one job)
  peak RSS          the pilot process's own high-water mark (VmHWM), with psutil and with /proc only, beside
                    the floor: a fresh interpreter importing only what a plain-HTTP run needs (FLOOR_MODULES; no ssl)

The goal in the issue: under 1 s each, RSS under 40 MB (issue 23: peak RSS <= 20 MB). Only 127.0.0.1 is
contacted; the server this script starts is the only process it stops.

With ``--testbed-jobs N`` it also runs ``minipanda testbed --jobs N --job-seconds 0 --files F --pilots P`` for each
F of ``--files`` (default none,1mb: no file, and one 1 MiB input + one 1 MiB output per job, the files job) and
prints every pilot's peak RSS (PILOT_PEAK_RSS_KB of its pilot_timing.json; the testbed's pilots run with psutil
when the interpreter has it, and zlib-ng's adler32 when it has ``zlib_ng``), this tree beside ``--baseline REV``
in the same run, the sides' order alternating over ``--rounds``.

    python bench/pilot_overhead.py            # 5 runs of each kind
    python bench/pilot_overhead.py --runs 20
    python bench/pilot_overhead.py --runs 0 --testbed-jobs 30 --baseline main --rounds 2   # files job's RSS
"""
import argparse
import glob
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import baseline  # noqa: E402

HOST = "127.0.0.1"
QUEUE = "BENCH_PQ"


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """A ``minipanda serve`` subprocess in a temporary home."""

    def __init__(self, home):
        self.home, self.port = home, free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = open(os.path.join(home, "server.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "minipanda", "serve", "--home", home, "--port",
                                      str(self.port)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/api/v1/system/is_alive", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the server exited; see " + self.log.name)
                time.sleep(0.1)
        time.sleep(0.2)
        self.admin = open(os.path.join(home, "admin.token")).read().strip()

    def token(self, role, name):
        out = subprocess.run([sys.executable, "-m", "minipanda", "token", "create", "--role", role, "--name", name,
                              "--home", self.home], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def submit(self, spec):
        request = urllib.request.Request(self.url + "/api/v1/job/submit", json.dumps({"jobs": [spec]}).encode(),
                                         {"Content-Type": "application/json", "Accept": "application/json",
                                          "Authorization": f"Bearer {self.admin}"})
        return json.loads(urllib.request.urlopen(request, timeout=30).read())["data"][0][0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def one_run(server, pyz, base, token_file, qd_file, index, no_psutil):
    stamp = os.path.join(base, f"exec-{index}")
    server.submit({"jobName": f"bench.{index}", "computingSite": QUEUE, "prodSourceLabel": "managed",
                   "transformation": "/bin/sh", "jobParameters": f"-c 'date +%s.%N > \"$1\"' sh {stamp}",
                   "coreCount": 1, "minRamCount": 10, "maxWalltime": 60,
                   "Files": [{"type": "log", "lfn": f"bench.{index}.log.tgz", "scope": "bench"}]})
    workdir = os.path.join(base, f"work-{index}")
    env = dict(os.environ, PILOT_NO_PSUTIL="1") if no_psutil else dict(os.environ)
    env.pop("PILOT_NO_PSUTIL", None) if not no_psutil else None
    t0 = time.time()
    proc = subprocess.run([sys.executable, pyz, "-q", QUEUE, "--url", server.url, "--token-file", token_file,
                           "--queuedata", qd_file, "-a", workdir, "-l", "3600", "--quiet"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    t_end = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"pilot exited with {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    t_exec = float(open(stamp).read())
    timing = json.load(open(glob.glob(os.path.join(workdir, "PanDA_Pilot-*", "pilot_timing.json"))[0]))
    job_times = next(v for k, v in timing.items() if k != "0")
    return {"spawn->exec": t_exec - t0, "pilot start->exec": t_exec - timing["0"]["PILOT_START_TIME"],
            "exit->ack": job_times["PILOT_POST_FINAL_UPDATE"] - t_exec, "pilot total": t_end - t0,
            "peak RSS MB": timing["0"]["PILOT_PEAK_RSS_KB"] / 1024}


# What any plain-HTTP pilot run needs loaded: the interpreter (with site, as the zipapp runs), JSON, HTTP
# (http.client, with email's header parser; no ssl: the pilot loads it only for https), the payload's process, the
# log tarball and adler32 checksums (zlib; hashlib only for md5 inputs).
FLOOR_MODULES = ("json, logging, http.client, subprocess, tarfile, zlib, select, signal, socket, shlex, glob, "
                 "tempfile, shutil, threading, collections, datetime, fcntl")


def floor_rss_mb():
    """Peak RSS of a fresh interpreter that only imports FLOOR_MODULES: what no pilot can go below."""
    code = (f"import sys\nsys.modules['ssl'] = None\nimport {FLOOR_MODULES}\nimport re\n"
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return int(out.stdout) / 1024


def testbed_peaks(tree, files, jobs, pilots, base):
    """Peak RSS in MB of each pilot of one ``minipanda testbed`` run in ``tree`` that ran at least one job."""
    home = tempfile.mkdtemp(prefix=f"testbed-{files}-", dir=base)
    os.rmdir(home)
    argv = [sys.executable, "-m", "minipanda", "testbed", "--home", home, "--port", "0", "--jobs", str(jobs),
            "--job-seconds", "0", "--files", files, "--pilots", str(pilots)]
    with open(home + ".out", "wb") as log:
        code = subprocess.run(argv, cwd=tree, stdout=log, stderr=subprocess.STDOUT, timeout=900).returncode
    if code:
        raise SystemExit(f"testbed --files {files} in {tree}: exit {code}, see {home}.out")
    peaks = []
    for path in glob.glob(os.path.join(home, "harvester", "workers", "*", "*", "PanDA_Pilot-*", "pilot_timing.json")):
        timing = json.load(open(path))
        if len(timing) > 1:  # "0" is the pilot's own entry, one more per job it ran
            peaks.append(timing["0"]["PILOT_PEAK_RSS_KB"] / 1024)
    return peaks


def testbed_rss(args, base):
    """The testbed's pilots' peak RSS per --files kind, this tree beside --baseline, printed."""
    runs = baseline.run_sides(
        args.baseline, lambda _, tree, files: testbed_peaks(tree, files, args.testbed_jobs, args.testbed_pilots, base),
        args.rounds, cases=args.files.split(","), prepare=baseline.compile_tree, baseline_label=args.baseline)
    print(f"\ntestbed pilots' peak RSS, MB (--jobs {args.testbed_jobs} --job-seconds 0 --pilots "
          f"{args.testbed_pilots}, {args.rounds} round(s); load {os.getloadavg()[0]:.1f}):")
    print(f"  {'files':6} {'side':14} {'median':>8} {'max':>8}  each round's pilots (min-max)")
    for files in args.files.split(","):
        for label in runs.labels:
            rounds = runs.of(label, files)
            every = [p for r in rounds for p in r]
            spans = ", ".join(f"{min(r):.2f}-{max(r):.2f}" for r in rounds if r)
            print(f"  {files:6} {label:14} {statistics.median(every):>8.2f} {max(every):>8.2f}  {spans}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="pilot runs per kind (default 5; 0: none, e.g. with "
                        "--testbed-jobs only)")
    parser.add_argument("--testbed-jobs", type=int, default=0, metavar="N",
                        help="also run `minipanda testbed` with N jobs per --files kind and print its pilots' peak "
                             "RSS (default 0: not run)")
    parser.add_argument("--testbed-pilots", type=int, default=6, metavar="P", help="the testbed's --pilots "
                        "(default 6)")
    parser.add_argument("--files", default="none,1mb", help="the testbed's --files kinds, comma-separated "
                        "(default none,1mb)")
    parser.add_argument("--baseline", metavar="REV", help="run the testbed for this commit too, in the same run")
    parser.add_argument("--rounds", type=int, default=2, help="testbed runs per side and --files kind (default 2)")
    args = parser.parse_args()
    if args.runs <= 0:
        if args.testbed_jobs <= 0:
            parser.error("nothing to run: give --runs or --testbed-jobs")
        with tempfile.TemporaryDirectory(prefix="pilot-bench-") as base:
            testbed_rss(args, base)
        return
    with tempfile.TemporaryDirectory(prefix="pilot-bench-") as base:
        home = os.path.join(base, "home")
        os.makedirs(home)
        pyz = os.path.join(base, "pilot.pyz")
        subprocess.run([sys.executable, "-m", "pilot", "build-zipapp", pyz], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        qd_file = os.path.join(base, "queuedata.json")
        json.dump({"pilot_stageout_reserve": 10, "pilot_getjob_tries": 1}, open(qd_file, "w"))
        server = Server(home)
        try:
            token_file = os.path.join(base, "pilot.token")
            open(token_file, "w").write(server.token("pilot", "bench"))
            print(f"pilot overhead: {args.runs} runs of a trivial job per kind, Python {sys.version.split()[0]}, "
                  f"server {server.url}")
            floor = floor_rss_mb()
            print(f"interpreter + the modules a plain-HTTP run needs (the floor): {floor:.3f} MB peak RSS")
            for label, no_psutil in (("psutil", False), ("/proc only", True)):
                runs = [one_run(server, pyz, base, token_file, qd_file, f"{'p' if no_psutil else 's'}{i}", no_psutil)
                        for i in range(args.runs)]
                print(f"\n{label}:")
                print(f"  {'figure':22} {'median':>9} {'max':>9}")
                for name in runs[0]:
                    values = [r[name] for r in runs]
                    unit = "" if "MB" in name else " s"
                    print(f"  {name:22} {statistics.median(values):>9.3f}{unit} {max(values):>9.3f}{unit}")
                rss = statistics.median(r["peak RSS MB"] for r in runs)
                print(f"  {'peak RSS - floor':22} {rss - floor:>9.3f} MB")
        finally:
            server.stop()
        if args.testbed_jobs > 0:
            testbed_rss(args, base)


if __name__ == "__main__":
    main()
