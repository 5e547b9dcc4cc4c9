"""The bench tests put bench/ on the module path to import its helpers; bench/ also holds harvester.py and
testbed.py (benches of those names), so bench/ must come after the packages, whatever order the tests are
collected in (a worker that collected a bench test first once failed every harvester test after it)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("bench_test", sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "tests"))
                                               if name.startswith("test_bench_") and name.endswith(".py")))
def test_the_packages_are_still_found_after_a_bench_test_is_imported_first(bench_test):
    code = ("import importlib, sys\n"
            "sys.path[:0] = [sys.argv[1]]\n"
            "importlib.import_module(sys.argv[2])\n"
            "import harvester.db, testbed.cli\n"
            "print(harvester.__path__[0], testbed.__path__[0])\n")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "tests"), bench_test], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [os.path.join(ROOT, "harvester"), os.path.join(ROOT, "testbed")]
