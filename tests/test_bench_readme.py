"""bench/README.md's commands as written: every ``python bench/X.py ARGS`` it shows (in a block or inline, a line
continued with a backslash or wrapped inside its backticks joined again) is parsed by X's own argument parser, so a
renamed or removed flag, or a bench that is gone, fails here instead of in a reader's shell. Nothing is run: each
bench's main() is called with the command's arguments and stopped once they are parsed. A placeholder ``N`` stands
for a number (2)."""
import collections
import json
import pathlib
import re
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "bench" / "README.md"

# In a child, one per bench: its main() called with each argument list; prints one line per list.
PARSE_ONLY = r"""
import argparse, json, runpy, sys

class Parsed(BaseException):
    pass

parse_known_args = argparse.ArgumentParser.parse_known_args

def parsed(self, args=None, namespace=None):
    namespace, extra = parse_known_args(self, args, namespace)
    raise Parsed(extra)

def refused(self, message):
    raise Parsed([f"refused: {message}"])

argparse.ArgumentParser.parse_known_args = parsed
argparse.ArgumentParser.error = refused
script, lists = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, script.rsplit("/", 1)[0])
main = runpy.run_path(script, run_name="bench_under_test")["main"]
for argv in lists:
    sys.argv = [script] + argv
    try:
        main()
        print("not parsed")
    except Parsed as done:
        print("ok" if not done.args[0] else f"not parsed: {done.args[0]}")
    except SystemExit as exit:  # --help, or a bench's own check of what it parsed
        print("ok" if exit.code in (0, None) else f"exit {exit.code}")
    sys.stdout.flush()
"""


def readme_commands():
    """{bench path: [(README line, argument list), ...]} of every bench command bench/README.md shows."""
    text = README.read_text().replace("\\\n", " ")
    text = re.sub(r"(`[^`\n]*)\n([^`\n]*`)", r"\1 \2", text)  # an inline command wrapped inside its backticks
    commands = collections.defaultdict(dict)
    for found in re.finditer(r"python3? (bench/[a-z_]+\.py)([^`\n#|;]*)", text):
        argv = [("2" if word == "N" else word) for word in shlex.split(found.group(2))]
        commands[found.group(1)].setdefault(tuple(argv), text.count("\n", 0, found.start()) + 1)
    return {script: [(line, list(argv)) for argv, line in by_argv.items()] for script, by_argv in commands.items()}


def test_every_bench_command_of_the_readme_parses_with_that_benchs_flags():
    commands = readme_commands()
    assert len(commands) > 20 and "bench/testbed.py" in commands
    wrong = []
    for script, uses in sorted(commands.items()):
        if not (REPO / script).is_file():
            wrong.append(f"{script}: no such bench (README line {uses[0][0]})")
            continue
        out = subprocess.run([sys.executable, "-c", PARSE_ONLY, script, json.dumps([argv for _, argv in uses])],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        verdicts = out.stdout.splitlines()
        if out.returncode != 0 or len(verdicts) != len(uses):
            wrong.append(f"{script}: exit {out.returncode}: {out.stderr[-1500:]}")
            continue
        for (line, argv), verdict in zip(uses, verdicts):
            if verdict != "ok":
                wrong.append(f"README line {line}: {script} {shlex.join(argv)}: {verdict}")
    assert not wrong, "\n".join(wrong)
