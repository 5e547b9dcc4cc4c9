"""Build the pilot as one self-contained zipapp (``python3 pilot.pyz ...``) for harvester to ship.

Sources go in with legacy-layout ``.pyc`` files of the building interpreter next to them: zipimport cannot cache
bytecode, so without them every pilot start would compile every module (about 0.1 s). Another Python version
ignores the .pyc files (their magic number differs) and compiles the sources as usual. The ``.pyc`` files are
stored uncompressed (the sources compressed): every pilot start reads them all, and inflating them cost it ~5 ms
of CPU (a pilot's start until its first getJob is ~80 ms), for ~0.2 MB more on disk.

The archive's comment is :func:`digest` of what it holds (see there), so a copy kept elsewhere (harvester keeps one
per digest, harvester.handoff.zipcache) can be checked to be the build of the sources it is taken for.
"""
import compileall
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
import zlib

MAIN = "import sys\nfrom pilot.cli import main\nsys.exit(main())\n"
DEFAULT_INTERPRETER = "/usr/bin/env python3"
FORMAT = b"minipanda pilot zipapp 2"  # changed whenever build() writes archives differently
IGNORED_DIRS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc", ".pyo")


def package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def source_files(root):
    """(name inside the package, path) of every file build() takes from the package directory ``root``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name not in IGNORED_DIRS]
        for name in filenames:
            if not name.endswith(IGNORED_SUFFIXES):
                path = os.path.join(dirpath, name)
                found.append((os.path.relpath(path, root).replace(os.sep, "/"), path))
    return sorted(found)


def digest(root=None, interpreter=DEFAULT_INTERPRETER):
    """SHA-256 (hex) of everything a zipapp built from the package directory ``root`` (default: this one) depends
    on: each source file's name and bytes, the entry point, the interpreter line, the archive's format and the
    bytecode's Python (``sys.implementation.cache_tag``: its .pyc files are of the building interpreter)."""
    sha = hashlib.sha256()
    for part in (FORMAT, sys.implementation.cache_tag.encode(), interpreter.encode(), MAIN.encode()):
        sha.update(len(part).to_bytes(8, "big") + part)
    for name, path in source_files(root or package_dir()):
        with open(path, "rb") as handle:
            data = handle.read()
        for part in (name.encode(), data):
            sha.update(len(part).to_bytes(8, "big") + part)
    return sha.hexdigest()


def archive_digest(path):
    """The digest an archive built by :func:`build` says it was built from (its comment), or None when ``path`` is
    not such an archive or a member's bytes do not match their CRC or do not inflate (a damaged copy)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                return None
            comment = archive.comment.decode("ascii")
    except (OSError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError, RuntimeError, ValueError, EOFError):
        return None
    return comment if len(comment) == 64 and all(c in "0123456789abcdef" for c in comment) else None


def build(output, interpreter=DEFAULT_INTERPRETER):
    """Write ``output``: the pilot package (sources only) and a ``__main__`` that exits with main()'s code; returns
    ``output``. The archive's comment is the :func:`digest` of the sources it was built from.

    When the running pilot is itself a zipapp, the archive is copied as it is.
    """
    source = package_dir()
    if not os.path.isdir(source):  # running from inside a .pyz
        shutil.copyfile(os.path.dirname(source), output)
        os.chmod(output, 0o755)
        return output
    with tempfile.TemporaryDirectory() as staging:
        package = os.path.join(staging, "pilot")
        shutil.copytree(source, package, ignore=shutil.ignore_patterns(*IGNORED_DIRS,
                                                                        *("*" + s for s in IGNORED_SUFFIXES)))
        built_from = digest(package, interpreter)  # of the copy: a source edited meanwhile is not mislabelled
        compileall.compile_dir(package, legacy=True, quiet=1)
        with open(os.path.join(staging, "__main__.py"), "w", encoding="utf-8") as handle:
            handle.write(MAIN)
        tmp = output + ".tmp"
        _write_archive(staging, tmp, interpreter, built_from)
        os.replace(tmp, output)
    os.chmod(output, 0o755)
    return output


def _write_archive(staging, path, interpreter, comment):
    """What the standard library's zipapp.create_archive writes (the interpreter line, then the zip of
    ``staging``), but with the .pyc files stored and the archive's comment set."""
    with open(path, "wb") as handle:
        handle.write(b"#!" + interpreter.encode(sys.getfilesystemencoding()) + b"\n")
        with zipfile.ZipFile(handle, "w") as archive:
            for dirpath, dirnames, filenames in os.walk(staging):
                dirnames.sort()
                for name in sorted(filenames):
                    full = os.path.join(dirpath, name)
                    stored = zipfile.ZIP_STORED if name.endswith(".pyc") else zipfile.ZIP_DEFLATED
                    archive.write(full, os.path.relpath(full, staging), compress_type=stored)
            archive.comment = comment.encode("ascii")
