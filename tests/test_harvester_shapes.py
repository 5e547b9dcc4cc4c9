"""harvester.shapes: the backfill shapes asked about and the choice among the scheduler's answers (the answers
given here as a table; tests/test_harvester_multinode.py asks a real Slurm), and Slurm's --test-only line."""
import datetime
import json

import pytest

from harvester import shapes
from harvester.batch.base import BatchError
from harvester.batch.slurm import SlurmBatch
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 12, 7, 3, 0, 0)


def queue(nodes=4, min_walltime=None, per_node=2):
    raw = {"mode": "pull", "batch": {"system": "slurm", "shape": "backfill", "walltime": 3600},
           "resources": {"corecount": 1, "cores_per_node": 4, "nodes_per_worker": nodes},
           "pilot": {"per_node": per_node, "lifetime": 1800}}
    if min_walltime:
        raw["batch"]["min_walltime"] = min_walltime
    return loads(json.dumps({"queues": {"Q": raw}}), "q.json").queues["Q"]


def starts(table):
    """An estimate answering from {(nodes, walltime): minutes from NOW, or an error text}."""
    def estimate(nodes, walltime):
        value = table[(nodes, walltime)]
        if isinstance(value, str):
            raise BatchError(value)
        return NOW + datetime.timedelta(minutes=value)
    return estimate


def test_the_candidates_halve_the_nodes_down_to_one_with_each_walltime():
    assert [(c.nodes, c.walltime_s) for c in shapes.candidates(queue(nodes=5, min_walltime=900), 3600)] == [
        (5, 3600), (5, 900), (2, 3600), (2, 900), (1, 3600), (1, 900)]
    assert [(c.nodes, c.walltime_s) for c in shapes.candidates(queue(nodes=1), 3600)] == [(1, 3600)]


def test_the_soonest_start_wins_and_among_near_starts_the_largest():
    table = {(4, 3600): 120, (4, 900): 30, (2, 3600): 0.5, (2, 900): 0, (1, 3600): 0, (1, 900): 0}
    chosen, decision = shapes.choose(queue(min_walltime=900), starts(table), 3600, pilots_wanted=8)
    assert (chosen.nodes, chosen.walltime_s) == (2, 3600)  # within a minute of the soonest, and the largest
    assert decision["chosen"] == "2 nodes x 3600 s" and decision["need_nodes"] == 4
    assert [c["chosen"] for c in decision["candidates"]] == [False, False, True, False, False, False]
    assert "the largest of those starting within 60 s" in decision["reason"]
    text = "\n".join(shapes.describe(decision))
    assert "2 nodes x 3600 s     starts 2026-12-07T03:00:30" in text and text.count("<- chosen") == 1


def test_shapes_larger_than_the_waiting_work_are_not_asked_about():
    asked = []

    def estimate(nodes, walltime):
        asked.append(nodes)
        return NOW + datetime.timedelta(minutes=10 - nodes)  # the larger, the sooner: still too large for 3 pilots
    chosen, decision = shapes.choose(queue(), estimate, 3600, pilots_wanted=3)
    assert (chosen.nodes, sorted(asked)) == (2, [1, 2])
    assert decision["candidates"][0]["note"] == "larger than the waiting work (2 nodes)"
    assert shapes.choose(queue(), estimate, 3600, pilots_wanted=0)[0].nodes == 1  # one node always fits


def test_the_log_line_of_a_decision_names_every_candidate_with_its_start_or_why_it_was_not_asked():
    table = {(4, 3600): 120, (2, 3600): 0, (1, 3600): 0}
    line = shapes.one_line(shapes.choose(queue(), starts(table), 3600, pilots_wanted=4)[1])
    assert line.startswith("2 nodes x 3600 s (the soonest start among the shapes that fit the waiting work")
    assert "the waiting work needs 2 node(s)): 4 nodes x 3600 s larger than the waiting work (2 nodes); " \
           "2 nodes x 3600 s starts 2026-12-07T03:00:00; 1 node x 3600 s starts 2026-12-07T03:00:00" in line, line


def test_a_shape_without_an_estimate_is_left_out_and_none_at_all_keeps_the_fixed_shape():
    table = {(4, 3600): "sbatch: error: invalid partition", (2, 3600): 50, (1, 3600): 60}
    chosen, decision = shapes.choose(queue(), starts(table), 3600, pilots_wanted=8)
    assert chosen.nodes == 2 and decision["candidates"][0]["note"] == (
        "no estimate: sbatch: error: invalid partition")
    chosen, decision = shapes.choose(queue(), starts({k: "down" for k in table}), 3600, pilots_wanted=8)
    assert chosen is None and decision["reason"] == "no shape could be estimated: the fixed shape is used"


class Answer:
    def __init__(self, returncode, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.ok = returncode == 0

    def describe(self):
        return f"exit {self.returncode}: {self.stderr}"


@pytest.mark.parametrize("answer, expected", [
    (Answer(0, stderr="sbatch: Job 3 to start at 2026-12-07T03:48:05 using 2 processors on nodes node[1-2] in "
                      "partition debug\n"), datetime.datetime(2026, 12, 7, 3, 48, 5)),
    (Answer(1, stderr="sbatch: error: Batch job submission failed: Requested node configuration is not available"),
     "Requested node configuration"),
    (Answer(0, stdout="something else"), "no start time"),
])
def test_slurm_reads_the_start_that_sbatch_test_only_prints(answer, expected):
    """The argv has the shape's options and the queue's partition; the answer (Slurm 22.05's words) a datetime or a
    BatchError that says what sbatch said."""
    q = loads(json.dumps({"queues": {"Q": {"mode": "pull", "batch": {"system": "slurm", "partition": "debug"}}}}),
              "q.json").queues["Q"]
    plugin, calls = SlurmBatch(q, transport=None), []
    plugin.run = lambda argv: calls.append(argv) or answer
    if isinstance(expected, datetime.datetime):
        assert plugin.start_estimate(2, 4, 2000, 3600) == expected
    else:
        with pytest.raises(BatchError, match=expected):
            plugin.start_estimate(2, 4, 2000, 3600)
    assert calls == [["sbatch", "--test-only", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4",
                      "--mem=2000M", "--time=0-01:00:00", "--partition=debug", "--wrap=true"]]
