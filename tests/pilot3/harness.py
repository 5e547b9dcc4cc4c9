"""Run PanDA's real pilot3 (``panda-pilot==3.7.0.36``) against a minipanda server, for tests.

SAFETY: at job end pilot3 kills every process of its user whose parent is PID 1 ("orphan killer").
We therefore ALWAYS run it with PILOT_NOKILL=1 *and* inside its own PID namespace
(``unshare -pf --mount-proc --kill-child``), so it can only ever see its own processes.  Do not add
a code path that runs pilot.py without both.

    from tests.pilot3.fetch import pilot3_dir
    from tests.pilot3.harness import run_pilot3
    cp = run_pilot3(pilot3_dir(), "http://127.0.0.1:%d" % port, "TEST_PQ", tmp_path / "pilot", timeout=120)
    assert cp.returncode == 0, cp.stderr

See NOTES.md next to this file for what the server must serve and what pilot3 sends.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
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
    "debug_heartbeat": 10,    # used instead of heartbeat when the server sent command=debug (default 60)
    "update_sleep": 5,        # s between retries of a failed updateJob (default 120; 10 tries)
}


def unshare_available() -> bool:
    """True if we can create a PID namespace here (needs root or user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-pf", "--mount-proc", "true"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def write_fast_config(pilot_dir, dest, overrides: dict | None = None) -> Path:
    """Copy pilot3's default.cfg to *dest* with FAST_CONFIG (+ *overrides*) applied; return dest.

    Keys are ``key`` (looked up in any section, first match) or ``Section.key``.
    Use the file via env HARVESTER_PILOT_CONFIG.
    """
    src = Path(pilot_dir) / "pilot" / "util" / "default.cfg"
    text = src.read_text()
    values = dict(FAST_CONFIG)
    values.update(overrides or {})
    lines = text.splitlines()
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        current = None
        done = False
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


def pilot3_command(pilot_dir, server_url: str, queue: str, workdir, extra_args=()) -> list[str]:
    """argv for pilot.py (without the unshare/env prefix)."""
    u = urlsplit(server_url)
    if not u.scheme or not u.hostname or not u.port:
        raise ValueError(f"server_url must look like http://127.0.0.1:PORT, got {server_url!r}")
    base = f"{u.scheme}://{u.hostname}:{u.port}"
    return [
        sys.executable, str(Path(pilot_dir) / "pilot.py"),
        "-q", queue, "-w", "generic", "--pilot-user", "generic", "-j", "managed",
        "--url", f"{u.scheme}://{u.hostname}", "-p", str(u.port),
        "--queuedata-url", base + "/cache/schedconfig/{pandaqueue}.all.json",
        "--storagedata-url", base + "/cache/ddmendpoints.json",
        "-a", str(workdir), "--cleanup", "False", "-t", "-d", "-l", "600",
        "--use-rucio-traces", "False",
        *extra_args,
    ]


def pilot3_env(server_url: str, config_path, extra_env: dict | None = None) -> dict:
    u = urlsplit(server_url)
    base = f"{u.scheme}://{u.hostname}:{u.port}"
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "PILOT_NOKILL": "1",                       # never run the orphan killer
        "GTAG": "minipanda-test",                  # shows up in pilotID as GTAG|PR|3.7.0.36
        "LOCAL_AGIS_SCHEDCONF": base + "/cache/schedconfig.json",   # full {queue: {...}}; avoids CVMFS/CRIC
        "HARVESTER_PILOT_CONFIG": str(config_path),
        # the trf download goes through "our proxy": curl sends the absolute URL
        # http://pandaserver-doma.cern.ch:25080/trf/user/<name> to the server, nothing is resolved
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


def run_pilot3(pilot_dir, server_url: str, queue: str, workdir, timeout: float,
               extra_env: dict | None = None, extra_args=(), config_overrides: dict | None = None
               ) -> subprocess.CompletedProcess:
    """Run pilot3 once (one job at most with timefloor 0) against *server_url* and wait for it.

    *workdir* is created; pilot3 gets ``-a workdir`` and runs with cwd ``workdir/launch`` (pilot3 looks
    for a preplaced pandaJobData.out in cwd, cwd/.. and -a, and may rmtree its cwd on repeated kill
    signals, so cwd must be a private directory).  Output: ``workdir/pilot.stdout``, ``workdir/pilot.stderr``;
    pilot3's own log: ``workdir/PanDA_Pilot3_*/pilotlog.txt``.  Returns a CompletedProcess whose
    stdout/stderr are the texts of those two files.  On timeout the whole PID namespace is SIGKILLed and
    Pilot3Timeout (a subprocess.TimeoutExpired) is raised.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    launch = workdir / "launch"
    launch.mkdir(exist_ok=True)
    config = write_fast_config(pilot_dir, workdir / "pilot_fast.cfg", config_overrides)
    env = pilot3_env(server_url, config, extra_env)
    inner = pilot3_command(pilot_dir, server_url, queue, workdir, extra_args)
    # `env -i K=V ... argv` so that the environment is set inside the namespace exactly as given
    argv = ["unshare", "-pf", "--mount-proc", "--kill-child",
            "env", "-i", *[f"{k}={v}" for k, v in env.items()], *inner]
    out_path, err_path = workdir / "pilot.stdout", workdir / "pilot.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, cwd=launch, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # unshare dies -> --kill-child SIGKILLs pilot3 (PID 1 of the namespace) -> kernel kills the rest
            proc.kill()
            proc.wait()
            raise Pilot3Timeout(argv, timeout, workdir, _read(out_path), _read(err_path)) from None
        except BaseException:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            raise
    return subprocess.CompletedProcess(argv, rc, _read(out_path), _read(err_path))


def pilot_log(workdir) -> Path | None:
    """Path of pilot3's pilotlog.txt under *workdir* (None if the pilot never got that far)."""
    logs = sorted(Path(workdir).glob("PanDA_Pilot3_*/pilotlog.txt"))
    return logs[-1] if logs else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
