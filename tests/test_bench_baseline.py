"""bench/baseline.py's run_sides: this tree and a baseline commit's files run in pairs whose order turns pair by pair,
each side in its own tree; a side that fails named, with what failed; the checkout and anything left running in it
gone afterwards, whatever happened."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# appended, not first: bench/harvester.py and bench/testbed.py must not hide the packages of those names
sys.path.append(os.path.join(ROOT, "bench"))
import baseline  # noqa: E402

BASE = "baseline HEAD"


def imported_from(tree):
    """Where a child started in ``tree`` imports minipanda from (a real process, as the benches' sides are)."""
    return subprocess.run([sys.executable, "-c", "import minipanda; print(minipanda.__file__)"], cwd=tree,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_sides_run_in_pairs_whose_order_turns_pair_by_pair_across_the_cases():
    ran = []
    runs = baseline.run_sides("HEAD", lambda label, tree, case: ran.append((case, label)) or len(ran), rounds=3,
                              cases=("a", "b"))
    this, base = "this tree", BASE
    assert ran == [("a", this), ("a", base), ("a", base), ("a", this), ("a", this), ("a", base),
                   ("b", base), ("b", this), ("b", this), ("b", base), ("b", base), ("b", this)]
    assert runs.labels == [this, base]
    assert [(run.case, run.label, run.result) for run in runs] == [(c, label, n) for n, (c, label) in
                                                                   enumerate(ran, 1)]
    assert runs.of(base, "b") == [7, 10, 11] and runs.of(this) == [1, 4, 5, 8, 9, 12]


def test_without_a_baseline_only_this_tree_runs():
    runs = baseline.run_sides(None, lambda label, tree, case: (label, tree), rounds=2)
    assert runs.labels == ["this tree"]
    assert runs.of("this tree") == [("this tree", baseline.ROOT)] * 2


def test_each_side_runs_in_its_own_tree_prepared_first_and_the_checkout_is_removed_after():
    prepared, trees = [], []

    def run_side(label, tree, case):
        assert tree in prepared  # prepare ran for both trees before the first run
        trees.append(tree)
        return imported_from(tree)

    runs = baseline.run_sides("HEAD", run_side, rounds=1, prepare=prepared.append, baseline_label="HEAD's")
    checkout = prepared[1]
    assert prepared == [baseline.ROOT, checkout] and sorted(set(trees)) == sorted(prepared)
    assert runs.labels == ["this tree", "HEAD's"]
    assert runs.of("this tree") == [os.path.join(baseline.ROOT, "minipanda", "__init__.py")]
    assert runs.of("HEAD's") == [os.path.join(checkout, "minipanda", "__init__.py")]
    assert not os.path.exists(checkout)


def test_a_failing_side_is_named_with_its_round_and_its_childs_output_and_the_checkout_is_removed():
    trees = []

    def run_side(label, tree, case):
        trees.append(tree)
        if label != "this tree" and len(trees) == 3:  # the baseline's second run: round 2 runs it first
            subprocess.run([sys.executable, "-c", "import sys; sys.exit('the disk is full')"], cwd=tree,
                           capture_output=True, text=True, check=True)
        return len(trees)

    with pytest.raises(SystemExit) as failed:
        baseline.run_sides("HEAD", run_side, rounds=3)
    message = str(failed.value)
    assert message.startswith(f"{BASE} (round 2 of 3) failed: CalledProcessError: ")
    assert message.endswith("the disk is full\n")
    assert len(trees) == 3 and not os.path.exists(trees[-1])


def test_a_sides_own_exit_message_is_kept_and_the_case_is_counted():
    def run_side(label, tree, case):
        if case == "second" and label == "this tree":
            raise SystemExit("run failed (3): no such table: job")
        return 0

    with pytest.raises(SystemExit) as failed:
        baseline.run_sides(None, run_side, rounds=1, cases=("first", "second"))
    assert str(failed.value) == "this tree (round 1 of 1, case 2 of 2) failed: run failed (3): no such table: job"


@pytest.mark.parametrize("fails", [True, False])
def test_a_process_left_running_in_the_checkout_is_stopped_before_it_is_removed(fails, capfd):
    left = []

    def run_side(label, tree, case):
        if label != "this tree":
            left.append((subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], cwd=tree), tree))
            if fails:
                raise RuntimeError("the server did not answer")

    if fails:
        with pytest.raises(SystemExit, match=r"^baseline HEAD \(round 1 of 1\) failed: RuntimeError: the server"):
            baseline.run_sides("HEAD", run_side, rounds=1)
    else:
        baseline.run_sides("HEAD", run_side, rounds=1)
    (child, tree), = left
    try:
        assert child.wait(timeout=30) == -15  # SIGTERM, at once: no process of this run outlives its checkout
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not os.path.exists(tree)
    assert f"stopping process {child.pid} left running in {tree}" in capfd.readouterr().err


def test_an_interrupt_passes_through_and_still_removes_the_checkout():
    trees = []

    def run_side(label, tree, case):
        trees.append(tree)
        if label != "this tree":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        baseline.run_sides("HEAD", run_side, rounds=2)
    assert len(trees) == 2 and not os.path.exists(trees[-1])


def test_a_baseline_that_is_no_commit_is_refused_before_any_run():
    ran = []
    with pytest.raises(SystemExit, match=r"^--baseline no-such-rev: not a commit of "):
        baseline.run_sides("no-such-rev", lambda *side: ran.append(side), rounds=1)
    assert ran == []


def test_a_child_result_is_its_last_result_line_read_in_its_own_tree(tmp_path):
    script = ("import json, minipanda, os; print('RESULT {\"n\": 1}'); print('noise'); "
              "print('RESULT ' + json.dumps({'n': 2, 'from': minipanda.__file__, 'cwd': os.getcwd()}))")
    result = baseline.child_result([sys.executable, "-c", script], baseline.ROOT)
    assert result == {"n": 2, "from": imported_from(baseline.ROOT), "cwd": baseline.ROOT}


@pytest.mark.parametrize("script", ["print('no result')", "import sys; print('RESULT {}'); "
                                    "print('went wrong', file=sys.stderr); sys.exit(3)"])
def test_a_child_that_fails_or_prints_no_result_is_refused_with_the_end_of_its_output(script):
    with pytest.raises(SystemExit) as failed:
        baseline.child_result([sys.executable, "-c", script], baseline.ROOT)
    assert str(failed.value.code).startswith("run failed (")
    assert ("no result" in failed.value.code) if "no result" in script else ("went wrong" in failed.value.code
                                                                             and "(3)" in failed.value.code)
