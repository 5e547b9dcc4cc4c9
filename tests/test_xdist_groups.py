"""The README's test command (``-n 3 --dist loadgroup``) runs each test file whole on one pytest-xdist process,
and the HTCondor tests together on one (tests/conftest.py names the groups): module-scoped daemons start once, no
other file's test empties a process's PostgreSQL database between two tests of a file, one HTCondor pool serves
them all. Nothing fails when the groups are lost (pytest-xdist then spreads the tests silently), so this file says
it: under that command, each test here must carry its file's group in its node id, which is what the scheduler
reads."""
import pytest


@pytest.fixture
def in_loadgroup_worker(request):
    config = request.config
    if not hasattr(config, "workerinput") or not getattr(config.option, "loadgroup", False):  # set by xdist
        pytest.skip("runs under the README's test command (python -m pytest tests -n 3 --dist loadgroup)")


def test_a_test_file_is_one_group_of_the_parallel_run(request, in_loadgroup_worker):
    assert request.node.nodeid.endswith("@test_xdist_groups.py"), request.node.nodeid


@pytest.mark.htcondor
def test_the_htcondor_tests_are_one_group_whatever_their_file(request, in_loadgroup_worker):
    assert request.node.nodeid.endswith("@htcondor"), request.node.nodeid


def test_every_group_handed_out_first_is_a_test_file_here():
    """conftest.LONGEST_FIRST names groups by file: a renamed or removed file must leave that list too, or its
    successor would silently lose its early start."""
    import pathlib

    from conftest import LONGEST_FIRST

    here = pathlib.Path(__file__).parent
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert [group for group in LONGEST_FIRST if group != "htcondor" and not (here / group).is_file()] == []
