"""Splitting arithmetic (pure): files, events, GB, nJobs, remainders, pseudo input, JEDI input filters."""
import types

import pytest
from minipanda.tasks import splitting

GB = splitting.GB


def sizes(chunks):
    return [len(c) for c in chunks]


@pytest.mark.parametrize("n_files, per_job, expected", [(5, 2, [2, 2, 1]), (6, 2, [2, 2, 2]), (1, 3, [1]),
                                                        (7, 7, [7]), (3, 1, [1, 1, 1])])
def test_files_per_job_with_remainder(n_files, per_job, expected):
    assert sizes(splitting.plan("files", per_job, [(1, None)] * n_files)) == expected


def test_files_per_job_capped_by_max_files():
    assert sizes(splitting.plan("files", 10, [(1, None)] * 12, max_files_per_job=5)) == [5, 5, 2]


@pytest.mark.parametrize("n_files, n_jobs, expected", [(10, 3, [4, 3, 3]), (3, 5, [1, 1, 1]), (6, 3, [2, 2, 2]),
                                                       (7, 1, [7])])
def test_n_jobs_spreads_files_evenly(n_files, n_jobs, expected):
    assert sizes(splitting.plan("jobs", n_jobs, [(1, None)] * n_files)) == expected


def test_gb_per_job_packs_files_and_keeps_big_ones_alone():
    files = [(0.4 * GB, None), (0.4 * GB, None), (0.4 * GB, None), (3 * GB, None), (0.1 * GB, None)]
    assert [[i for i, _, _ in c] for c in splitting.plan("gb", 1, files)] == [[0, 1], [2], [3], [4]]


def test_events_cut_files_and_cross_boundaries():
    chunks = splitting.plan("events", 10, [(1, 25), (1, 5), (1, 8)])
    assert chunks == [[(0, 0, 10)], [(0, 10, 10)], [(0, 20, 5), (1, 0, 5)], [(2, 0, 8)]]
    assert sum(n for c in chunks for _, _, n in c) == 38


def test_events_without_counts_take_one_event_per_file():
    assert sizes(splitting.plan("events", 2, [(1, None)] * 5)) == [2, 2, 1]


def test_pseudo_input_events_and_jobs():
    assert splitting.plan("events", 3, [], n_events=7) == [[(None, 0, 3)], [(None, 3, 3)], [(None, 6, 1)]]
    assert splitting.plan("jobs", 3, []) == [[(None, None, None)]] * 3


def test_select_files_applies_jedi_filters():
    files = [types.SimpleNamespace(lfn=n) for n in ("a.root", "b.root", "c.log.tgz", "d.root")]
    chosen = splitting.select_files(files, {"exclude": ["*.log.tgz"], "offset": 1})
    assert [f.lfn for f in chosen] == ["b.root", "d.root"]
    assert [f.lfn for f in splitting.select_files(files, {"include": ["a*", "d*"]})] == ["a.root", "d.root"]
    assert [f.lfn for f in splitting.select_files(files, {"files": ["b.root"]})] == ["b.root"]
