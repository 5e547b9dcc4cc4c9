"""Run PanDA's real pilot3 (``panda-pilot==3.7.0.36``) against a minipanda server, for tests.

SAFETY: at job end pilot3 kills every process of its user whose parent is PID 1 ("orphan killer").
We therefore ALWAYS run it with PILOT_NOKILL=1 *and* inside its own PID namespace
(``unshare -pf --mount-proc --kill-child``), so it can only ever see its own processes.  Do not add
a code path that runs pilot.py without both.

    from tests.pilot3.fetch import pilot3_dir
    from tests.pilot3.harness import run_pilot3
    cp = run_pilot3(pilot3_dir(), f"http://127.0.0.1:{port}", "TEST_PQ", tmp_path / "pilot", timeout=120)
    assert cp.returncode == 0, cp.stdout[-3000:]

or, to stop the pilot as soon as the server has what it needs (saves its ~19 s shutdown):

    with start_pilot3(pilot3_dir(), url, "TEST_PQ", tmp_path / "pilot") as run:
        wait_until(lambda: job_is_final(1001), timeout=60)
    # leaving the block kills the pilot's PID namespace if it is still alive

See NOTES.md next to this file for what the server must serve and what pilot3 sends.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

# Environment variables passed through from the test runner; everything else is dropped so that
# stray HARVESTER_*, PANDA_AUTH_*, X509_*, http_proxy ... of the developer's shell cannot change pilot3.
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")

# Values for the fast copy of pilot/util/default.cfg ([Pilot] section).
FAST_CONFIG = {
    "heartbeat": 10,          # s between 'running' updateJob calls (default 1800)
    "debug_heartbeat": 10,    # used instead of heartbeat once the server sent command=debug (default 60)
    "update_sleep": 5,        # s between retries of a failed updateJob (default 120; 10 tries)
}

# Opt-in launcher (fast_fail=True).  pilot3 3.7.0.36 has a race: for every failed job the job queue
# monitor calls wait_for_aborted_job_stageout(), which waits until the job object is in
# queues.finished_data_out / failed_data_out -- but the data queue monitor has already moved it on to
# failed_jobs, so it always waits the full 2*60-5 = 115 s.  No config key or env var changes that.
# This launcher replaces only that function by one that also accepts "log transfer DONE/FAILED"
# (what it is really waiting for) and gives up after MINIPANDA_PILOT3_ABORT_WAIT s (default 3),
# then runs the unmodified pilot.py as __main__.  Everything else is the real pilot.
_FAST_FAIL_LAUNCHER = r'''
import os, runpy, sys, time
pilot_py = os.path.abspath(sys.argv[1])
sys.argv = [pilot_py] + sys.argv[2:]
sys.path[0] = os.path.dirname(pilot_py)
import pilot.control.job as _job
from pilot.util.constants import LOG_TRANSFER_DONE, LOG_TRANSFER_FAILED
_max_wait = float(os.environ.get("MINIPANDA_PILOT3_ABORT_WAIT", "3"))

def wait_for_aborted_job_stageout(args, queues, job):
    t0 = time.time()
    while time.time() - t0 < _max_wait:
        if (job in queues.finished_data_out.queue or job in queues.failed_data_out.queue
                or job.get_status("LOG_TRANSFER") in (LOG_TRANSFER_DONE, LOG_TRANSFER_FAILED)):
            break
        time.sleep(0.2)
    _job.logger.info("[minipanda test launcher] abort stage-out wait done after %.1f s", time.time() - t0)

_job.wait_for_aborted_job_stageout = wait_for_aborted_job_stageout
runpy.run_path(pilot_py, run_name="__main__")
'''


def unshare_available() -> bool:
    """True if we can create a PID namespace here (needs root or user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-pf", "--mount-proc", "--kill-child", "true"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pilot3_or_skip(what="pilot3 test"):
    """pilot3's unpacked sdist; the test is skipped where pilot3 cannot run here (no PID namespace, no pilot3), and
    fails instead under CI=true, where both must be there."""
    import pytest

    from pilot3.fetch import Pilot3FetchError, pilot3_dir

    def unavailable(reason):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} cannot run in CI: {reason}", pytrace=False)
        pytest.skip(reason)

    if not unshare_available():
        unavailable("unshare -pf --mount-proc is not available (needs root or user namespaces)")
    try:
        return pilot3_dir()
    except Pilot3FetchError as exc:
        unavailable(f"cannot fetch panda-pilot 3.7.0.36: {exc}")


def write_fast_config(pilot_dir, dest, overrides: dict | None = None) -> Path:
    """Copy pilot3's default.cfg to *dest* with FAST_CONFIG (+ *overrides*) applied; return dest.

    Keys are ``key`` (first match in any section) or ``Section.key``.  Used via env HARVESTER_PILOT_CONFIG.
    """
    src = Path(pilot_dir) / "pilot" / "util" / "default.cfg"
    lines = src.read_text().splitlines()
    values = dict(FAST_CONFIG)
    values.update(overrides or {})
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        current, done = None, False
        for i, line in enumerate(lines):
            m = re.match(r"^\[(\w+)\]\s*$", line)
            if m:
                current = m.group(1)
                continue
            if section and current != section:
                continue
            if re.match(rf"^{re.escape(name)}\s*[:=]", line):
                lines[i] = f"{name}: {value}"
                done = True
                break
        if not done:
            raise KeyError(f"{key} not found in {src}")
    dest = Path(dest)
    dest.write_text("\n".join(lines) + "\n")
    return dest


def _base(server_url: str):
    u = urlsplit(server_url)
    if not u.scheme or not u.hostname or not u.port:
        raise ValueError(f"server_url must look like http://127.0.0.1:PORT, got {server_url!r}")
    return u, f"{u.scheme}://{u.hostname}:{u.port}"


def pilot3_args(server_url: str, queue: str, workdir, extra_args=()) -> list[str]:
    """pilot.py's options (without interpreter and script)."""
    u, base = _base(server_url)
    return [
        "-q", queue, "-w", "generic", "--pilot-user", "generic", "-j", "managed",
        "--url", f"{u.scheme}://{u.hostname}", "-p", str(u.port),
        "--queuedata-url", base + "/cache/schedconfig/{pandaqueue}.all.json",
        "--storagedata-url", base + "/cache/ddmendpoints.json",
        "-a", str(workdir), "--cleanup", "False", "-t", "-d", "-l", "600",
        "--use-rucio-traces", "False",
        *extra_args,
    ]


def pilot3_env(server_url: str, config_path, extra_env: dict | None = None) -> dict:
    _, base = _base(server_url)
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "PILOT_NOKILL": "1",                       # never run the orphan killer
        "GTAG": "minipanda-test",                  # pilotID becomes "minipanda-test|PR|3.7.0.36"
        "LOCAL_AGIS_SCHEDCONF": base + "/cache/schedconfig.json",  # full {queue: {...}}; no CVMFS/CRIC
        "HARVESTER_PILOT_CONFIG": str(config_path),
        # trf download goes through "our proxy": curl sends the absolute URL
        # http://pandaserver-doma.cern.ch:25080/trf/user/<name> to the server; nothing is resolved
        "http_proxy": base, "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    if extra_env:
        env.update({k: str(v) for k, v in extra_env.items()})
    env["PILOT_NOKILL"] = "1"  # not overridable
    return env


class Pilot3Timeout(subprocess.TimeoutExpired):
    """pilot3 did not exit within the timeout; its PID namespace was killed. .workdir holds the logs."""

    def __init__(self, cmd, timeout, workdir, stdout=None, stderr=None):
        super().__init__(cmd, timeout, output=stdout, stderr=stderr)
        self.workdir = Path(workdir)

    def __str__(self):
        return (f"pilot3 did not finish within {self.timeout} s (killed); logs in {self.workdir} "
                f"(pilot.stdout, pilot.stderr, PanDA_Pilot3_*/pilotlog.txt)")


class Pilot3Run:
    """A running pilot3 (in its own PID namespace).  Use as a context manager: exit kills it."""

    def __init__(self, argv, env, workdir: Path, launch: Path):
        self.argv = argv
        self.workdir = workdir
        self.stdout_path = workdir / "pilot.stdout"
        self.stderr_path = workdir / "pilot.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # env -i: the environment inside the namespace is exactly `env`
            self.proc = subprocess.Popen(argv, cwd=launch, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True,
                                         env={"PATH": env["PATH"]})

    def poll(self):
        return self.proc.poll()

    def kill(self):
        """SIGKILL unshare; --kill-child then SIGKILLs pilot3 (PID 1 of the namespace), and the kernel
        kills everything else in the namespace (payload included)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def result(self) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(self.argv, self.proc.returncode,
                                           _read(self.stdout_path), _read(self.stderr_path))

    def wait(self, timeout: float) -> subprocess.CompletedProcess:
        """Wait for pilot3 to exit; on timeout kill it and raise Pilot3Timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Pilot3Timeout(self.argv, timeout, self.workdir, _read(self.stdout_path),
                                _read(self.stderr_path)) from None
        except BaseException:
            self.kill()
            raise
        return self.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        return False


def start_pilot3(pilot_dir, server_url: str, queue: str, workdir, extra_env: dict | None = None,
                 extra_args=(), config_overrides: dict | None = None, fast_fail: bool = False
                 ) -> Pilot3Run:
    """Start pilot3 in the background; see run_pilot3 for the arguments."""
    pilot_dir = Path(pilot_dir).resolve()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    launch = workdir / "launch"
    launch.mkdir(exist_ok=True)
    config = write_fast_config(pilot_dir, workdir / "pilot_fast.cfg", config_overrides)
    env = pilot3_env(server_url, config, extra_env)
    if fast_fail:
        launcher = workdir / "fast_fail_launcher.py"
        launcher.write_text(_FAST_FAIL_LAUNCHER)
        interp = [sys.executable, str(launcher), str(pilot_dir / "pilot.py")]
    else:
        interp = [sys.executable, str(pilot_dir / "pilot.py")]
    argv = ["unshare", "-pf", "--mount-proc", "--kill-child",
            "env", "-i", *[f"{k}={v}" for k, v in env.items()],
            *interp, *pilot3_args(server_url, queue, workdir, extra_args)]
    return Pilot3Run(argv, env, workdir, launch)


def run_pilot3(pilot_dir, server_url: str, queue: str, workdir, timeout: float,
               extra_env: dict | None = None, extra_args=(), config_overrides: dict | None = None,
               fast_fail: bool = False) -> subprocess.CompletedProcess:
    """Run pilot3 once (one job at most with queuedata timefloor 0) against *server_url*; wait for it.

    *workdir* is created; pilot3 gets ``-a workdir`` and runs with cwd ``workdir/launch`` (pilot3 looks
    for a preplaced pandaJobData.out in cwd, cwd/.. and the -a dir, writes pandaIDs.out to cwd, and
    may rmtree its cwd on repeated kill signals, so cwd must be private).  Output goes to
    ``workdir/pilot.stdout`` (pilot3 logs everything there) and ``workdir/pilot.stderr``; pilot3's own
    log is ``workdir/PanDA_Pilot3_*/pilotlog.txt`` (restarted after each job).  Returns a
    CompletedProcess whose stdout/stderr are those two files' texts.  On timeout the whole PID
    namespace is SIGKILLed and Pilot3Timeout (a subprocess.TimeoutExpired) is raised.

    extra_env: added to (and overriding) the pilot's environment, except PILOT_NOKILL.
    extra_args: appended to pilot.py's options.
    config_overrides: more default.cfg keys, e.g. {"heartbeat": 30, "Pilot.update_sleep": 2}.
    fast_fail: run through the launcher that cuts the 115 s wait after a failed job (see above).
    """
    run = start_pilot3(pilot_dir, server_url, queue, workdir, extra_env, extra_args,
                       config_overrides, fast_fail)
    return run.wait(timeout)


def pilot_log(workdir) -> Path | None:
    """Path of pilot3's pilotlog.txt under *workdir* (None if the pilot never got that far)."""
    logs = sorted(Path(workdir).glob("PanDA_Pilot3_*/pilotlog.txt"))
    return logs[-1] if logs else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
