"""The program the SSH transport runs on the submit host for the safe file operations: JSON in, JSON out.

``python3 -I -S -c <program>``, where the program is :func:`program` (:mod:`harvester.transport.safepaths`, then
:mod:`harvester.transport.safefiles`, then this module, as one text without their imports of each other): ``ops``
answers one batch, ``serve`` answers one batch per line until stdin ends (the helper the SSH transport keeps open),
``cat`` streams one file out and ``receive`` one file in, each verified by size and adler32. Bytes travel as base64
inside JSON. That is why these three modules import nothing but the standard library and keep to Python 3.6.
"""
import base64
import json
import os
import sys
import zlib

from harvester.transport.safefiles import run_ops
from harvester.transport.safepaths import (BLOCK, Refused, adler32_fd, expect, open_dir, open_file, open_root, pump,
                                           split, temp_file, unlink_quietly)


def _decode(ops):
    for op in ops:
        if "data" in op:
            op["data"] = base64.b64decode(op["data"])
    return ops


def _encode(results):
    for result in results:
        for entry in (result.get("files") or {}).values():
            if "data" in entry:
                entry["data"] = base64.b64encode(entry["data"]).decode("ascii")
    return results


def cat(root, path, limit=None):
    """Stream a regular file to stdout; its size and adler32 (or the refusal) as JSON on stderr's last line."""
    root_fd = open_root(root)
    try:
        fd, _ = open_file(root_fd, root, path, limit)
    finally:
        os.close(root_fd)
    value, size, out = 1, 0, sys.stdout.buffer
    try:
        while True:
            chunk = os.read(fd, BLOCK)
            if not chunk:
                break
            value = zlib.adler32(chunk, value)
            size += len(chunk)
            out.write(chunk)
    finally:
        os.close(fd)
    out.flush()
    return {"size": size, "adler32": "%08x" % (value & 0xffffffff)}


def receive(root, path, size, adler32, mode=0o644):
    """Write stdin to ``root/path`` (temporary name, verified against ``size`` and ``adler32``, then renamed)."""
    parts = split(path)
    root_fd = open_root(root, create=True)
    try:
        folder = open_dir(root_fd, root, parts[:-1], create=True)
    finally:
        os.close(root_fd)
    temp = None
    try:
        temp, fd = temp_file(folder, parts[-1])
        try:
            pump(sys.stdin.buffer.fileno(), fd)
            os.fchmod(fd, mode)
            os.fsync(fd)
            have = adler32_fd(fd)
        finally:
            os.close(fd)
        expect(root.rstrip("/") + "/" + path + " (as received)", have, size, adler32)
        os.rename(temp, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)
        temp = None
        return {"size": have[0], "adler32": have[1]}
    finally:
        if temp is not None:
            unlink_quietly(temp, folder)
        os.close(folder)


def serve(lines, out):
    """Answer batches until ``lines`` ends: one JSON batch of operations per line in, one JSON line of results out
    (flushed), so a kept-open helper costs no process start per batch."""
    for line in iter(lines.readline, ""):
        out.write(json.dumps(_encode(run_ops(_decode(json.loads(line))))) + "\n")
        out.flush()
    return 0


def main(argv):
    """``ops`` (JSON ops on stdin, JSON results on stdout), ``serve`` (the same, one batch per line, until stdin
    ends), ``cat ROOT PATH [LIMIT]``, ``receive ROOT PATH SIZE ADLER32 MODE``; the last two report on stderr's last
    line and exit 1 on a refusal."""
    if not argv or argv[0] == "ops":
        ops = _decode(json.loads(sys.stdin.read() or "[]"))
        sys.stdout.write(json.dumps(_encode(run_ops(ops))))
        return 0
    if argv[0] == "serve":
        return serve(sys.stdin, sys.stdout)
    try:
        if argv[0] == "cat":
            result = cat(argv[1], argv[2], int(argv[3]) if len(argv) > 3 and argv[3] else None)
        elif argv[0] == "receive":
            result = receive(argv[1], argv[2], int(argv[3]), argv[4], int(argv[5], 8))
            sys.stdout.write(json.dumps(result))
        else:
            raise Refused("invalid", "unknown command %r" % argv[0])
        result["ok"] = True
    except Refused as exc:
        result = {"ok": False, "code": exc.code, "error": str(exc)}
    except OSError as exc:
        result = {"ok": False, "code": "os", "error": "%s: %s" % (exc.filename, exc.strerror or exc)}
    sys.stderr.write("\n" + json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


def program():
    """The helper's source as one text: the three modules in the order they build on each other, each without its
    imports of the others (on the submit host they are one program, not a package)."""
    import ast
    import harvester.transport.safefiles as operations
    import harvester.transport.safepaths as paths

    texts = []
    for module in (paths, operations, sys.modules[__name__]):
        with open(module.__file__, encoding="utf-8") as handle:
            source = handle.read()
        lines = source.splitlines(keepends=True)
        for node in ast.parse(source).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harvester."):
                lines[node.lineno - 1:node.end_lineno] = [""] * (node.end_lineno - node.lineno + 1)
        texts.append("".join(lines))
    return "\n\n".join(texts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
