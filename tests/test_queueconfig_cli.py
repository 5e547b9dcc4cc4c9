"""The ``queueconfig`` command: lint, show, convert, schema, help and exit statuses."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import queueconfig
from queueconfig.cli import main

EXAMPLES = Path(__file__).parent / "data" / "queueconfig"
OURS, HARVESTER = str(EXAMPLES / "queues.yaml"), str(EXAMPLES / "panda_queueconfig.json")


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_lint_ok(capsys):
    status, out, err = run(capsys, "lint", OURS)
    assert status == 0 and out == f"ok, 6 queues, version {queueconfig.load(OURS).version_id}\n" and err == ""


def test_lint_prints_warnings_unless_quiet(capsys):
    status, out, err = run(capsys, "lint", HARVESTER)
    assert status == 0 and out.startswith("ok, 5 queues")
    assert "warning: " in err and "submitter.templateFile" in err
    assert run(capsys, "lint", "--quiet", HARVESTER)[2] == ""


def test_lint_reports_every_error_and_exits_1(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("queues:\n  A: {limits: {maxWorker: 1}}\n  B: {batch: {system: sge}}\n"
                    "  C: {transport: {type: ssh}}\n")
    status, out, err = run(capsys, "lint", str(path))
    lines = err.splitlines()
    assert status == 1 and out == ""
    assert len(lines) == 4 and lines[-1] == f"3 error(s) in {path}"
    assert "did you mean 'maxWorkers'?" in lines[0] and "queue B: batch.system" in lines[1]
    assert "queue C: transport.host: missing" in lines[2]


def test_show_table(capsys):
    status, out, _ = run(capsys, "show", OURS)
    lines = out.splitlines()
    assert status == 0 and lines[0].split()[:3] == ["QUEUE", "SITE", "STATUS"]
    assert any(line.split()[:2] == ["UNI_SLURM", "UNI-CLUSTER"] and "ssh:login.cluster.example.org" in line
               for line in lines)
    assert lines[-1].startswith("6 queues, version ")


def test_show_one_queue_lists_effective_values(capsys):
    status, out, _ = run(capsys, "show", OURS, "UNI_SLURM")
    values = dict(line.split(None, 1) for line in out.splitlines()[1:] if len(line.split(None, 1)) == 2)
    assert status == 0
    assert values["limits.maxWorkers"] == "50"  # from the template
    assert values["batch.partition"] == "grid" and values["pilot.handoff.job"] == "pandaJobData.out"
    assert values["batch.environment"] == '{"APPTAINER_CACHEDIR": "/scratch/apptainer"}'


def test_show_json_and_queuedata(capsys):
    status, out, _ = run(capsys, "show", OURS, "TESTBED", "--json")
    assert status == 0 and json.loads(out)["limits"]["maxWorkers"] == 4
    everything = json.loads(run(capsys, "show", OURS, "--json")[1])
    assert sorted(everything) == sorted(queueconfig.load(OURS).queues)
    data = json.loads(run(capsys, "show", OURS, "TESTBED", "--queuedata")[1])
    assert data["nickname"] == "TESTBED" and data["state"] == "ACTIVE"


def test_show_unknown_queue(capsys):
    status, _, err = run(capsys, "show", OURS, "NOPE")
    assert status == 1 and "no queue 'NOPE'" in err and "TESTBED" in err


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_convert_writes_our_format_that_loads_to_the_same_queues(capsys, tmp_path, flag):
    status, out, err = run(capsys, "convert", HARVESTER, *flag)
    assert status == 0 and "submitter.templateFile" in err
    if flag:
        document = json.loads(out)
    else:
        assert out.startswith(f"# converted from {HARVESTER} (harvester format)")
        document = yaml.safe_load(out)
    assert document["version"] == 1
    path = tmp_path / ("q.json" if flag else "q.yaml")
    path.write_text(out)
    assert dict(queueconfig.load(path).queues) == dict(queueconfig.load(HARVESTER).queues)


def test_convert_refuses_an_invalid_file(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"Q": {"maxWorkers": -5}}')
    status, out, err = run(capsys, "convert", str(path))
    assert status == 1 and out == "" and "maxWorkers (minipanda key limits.maxWorkers): must be at least 0" in err


def test_schema(capsys):
    status, out, _ = run(capsys, "schema")
    assert status == 0 and json.loads(out)["title"] == "Queue"


def test_help_and_usage_errors():
    done = subprocess.run([sys.executable, "-m", "queueconfig", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "queueconfig lint queues.yaml" in done.stdout and "convert" in done.stdout
    done = subprocess.run([sys.executable, "-m", "queueconfig"], capture_output=True, text=True)
    assert done.returncode == 2 and "COMMAND" in done.stderr
    done = subprocess.run([sys.executable, "-m", "queueconfig", "lint", OURS], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ok, 6 queues")


def test_lint_lists_errors_in_line_order(capsys, tmp_path):
    """The schema reports keys in its own field order (resources before batch); lint follows the file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  A:\n    batch: {system: slurmm}\n    resources: {corecount: x}\n"
                   "    limits: {maxWorkers: -1}\n    pilot: {lifetime: abc}\n  B:\n    status: onlin\n")
    status, out, err = run(capsys, "lint", str(bad))
    lines = [int(line.split(":")[1]) for line in err.splitlines() if line.startswith(str(bad))]
    assert status == 1 and lines == [3, 4, 5, 6, 8], err


def test_lint_says_a_push_queue_with_htcondor_file_transfer_needs_a_shared_file_system(capsys, tmp_path):
    path = tmp_path / "condor.yaml"
    path.write_text("queues:\n  CONDOR_PUSH: {mode: push, wnconnectivity: none, storage: {input: {type: shared, "
                    "path: /in}, output: {type: shared, path: /out}}, batch: {system: htcondor, file_transfer: true}}\n"
                    "  CONDOR_PULL: {batch: {system: htcondor, file_transfer: true, pool: '127.0.0.1:9618', "
                    "token_file: /etc/minipanda/condor.token}}\n")
    status, out, err = run(capsys, "lint", str(path))
    lines = err.splitlines()
    assert status == 1 and len(lines) == 2 and lines[-1] == f"1 error(s) in {path}"
    assert "queue CONDOR_PUSH: batch.file_transfer: mode push needs a file system the pilot shares with " \
           "harvester" in lines[0]
