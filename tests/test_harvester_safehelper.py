"""harvester/transport/safehelper.py: the program the SSH transport ships to the submit host is one self-contained
text (the walk, the operations and the JSON front, without their imports of each other), so it runs where harvester
is not installed: a system python3 with ``-I -S``, an empty environment and an empty working directory."""
import base64
import json
import subprocess
import sys
import zlib

from harvester.transport import safehelper

PYTHON = "/usr/bin/python3" if sys.platform.startswith("linux") else "python3"


def run_program(args, stdin, cwd):
    """The program as the SSH transport runs it, with nothing of harvester importable."""
    return subprocess.run([PYTHON, "-I", "-S", "-c", safehelper.program(), *args], input=stdin, cwd=cwd, env={},
                          capture_output=True, timeout=60)


def test_the_program_imports_nothing_of_harvester():
    source = safehelper.program()
    imports = [line for line in source.splitlines() if line.lstrip().startswith(("import ", "from "))]
    # harvester's own modules are read, not imported, on the far side; program() itself is only ever called here
    assert not [line for line in imports if "harvester" in line and not line.startswith("    ")], imports
    compile(source, "<helper>", "exec")


def test_a_batch_and_a_served_line_answer_without_harvester(tmp_path):
    root = tmp_path / "root"
    (root / "7").mkdir(parents=True)
    (root / "7" / "attrs.json").write_bytes(b"\0\xff")
    ops = [{"op": "read", "root": str(root), "paths": ["7/attrs.json"]},
           {"op": "write", "root": str(root), "path": "8/new", "data": base64.b64encode(b"x").decode(),
            "makedirs": True}]
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_program(["ops"], json.dumps(ops).encode(), empty)
    assert done.returncode == 0, done.stderr
    read, write = json.loads(done.stdout)
    assert base64.b64decode(read["files"]["7/attrs.json"]["data"]) == b"\0\xff" and write["ok"]
    served = run_program(["serve"], ((json.dumps(ops[:1]) + "\n") * 2).encode(), empty)
    assert [len(json.loads(line)) for line in served.stdout.decode().splitlines()] == [1, 1], served.stderr
    assert (root / "8" / "new").read_bytes() == b"x"


def test_whole_files_in_and_out_are_verified(tmp_path):
    data = b"payload\n" * 1000
    adler = "%08x" % (zlib.adler32(data) & 0xffffffff)
    received = run_program(["receive", str(tmp_path), "in/file", str(len(data)), adler, "640"], data, tmp_path)
    assert received.returncode == 0, received.stderr
    landed = tmp_path / "in" / "file"
    assert landed.read_bytes() == data and landed.stat().st_mode & 0o777 == 0o640
    refused = run_program(["receive", str(tmp_path), "in/other", str(len(data)), "00000001", "644"], data, tmp_path)
    assert refused.returncode == 1 and json.loads(refused.stderr.decode().splitlines()[-1])["code"] == "mismatch"
    assert not (tmp_path / "in" / "other").exists() and sorted(p.name for p in (tmp_path / "in").iterdir()) == ["file"]
    sent = run_program(["cat", str(tmp_path), "in/file"], b"", tmp_path)
    assert sent.stdout == data
    assert json.loads(sent.stderr.decode().splitlines()[-1]) == {"size": len(data), "adler32": adler, "ok": True}
