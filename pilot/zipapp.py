"""Build the pilot as one self-contained zipapp (``python3 pilot.pyz ...``) for harvester to ship.

Sources go in with legacy-layout ``.pyc`` files of the building interpreter next to them: zipimport cannot cache
bytecode, so without them every pilot start would compile every module (about 0.1 s). Another Python version
ignores the .pyc files (their magic number differs) and compiles the sources as usual.
"""
import compileall
import os
import shutil
import tempfile
import zipapp as stdlib_zipapp

MAIN = "import sys\nfrom pilot.cli import main\nsys.exit(main())\n"


def package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def build(output, interpreter="/usr/bin/env python3"):
    """Write ``output``: the pilot package (sources only) and a ``__main__`` that exits with main()'s code.

    When the running pilot is itself a zipapp, the archive is copied as it is.
    """
    source = package_dir()
    if not os.path.isdir(source):  # running from inside a .pyz
        shutil.copyfile(os.path.dirname(source), output)
        os.chmod(output, 0o755)
        return output
    with tempfile.TemporaryDirectory() as staging:
        shutil.copytree(source, os.path.join(staging, "pilot"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
        compileall.compile_dir(os.path.join(staging, "pilot"), legacy=True, quiet=1)
        with open(os.path.join(staging, "__main__.py"), "w", encoding="utf-8") as handle:
            handle.write(MAIN)
        tmp = output + ".tmp"
        stdlib_zipapp.create_archive(staging, tmp, interpreter=interpreter, compressed=True)
        os.replace(tmp, output)
    os.chmod(output, 0o755)
    return output
