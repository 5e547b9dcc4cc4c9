"""The fair share of a queue's last jobs (minipanda.core.fairshare): a bulk getJob takes at most
ceil(waiting / pilots asking recently), so no pilot holds a batch of the last jobs while the others run dry.

The rule alone, then through dispatch.claim_jobs against SQLite and PostgreSQL, then the end of a task played out
step by step: 6 pilots running jobs at the same pace, each asking for 9 when it is down to its last job in hand.
"""
import pytest

from conftest import make_job


@pytest.fixture(autouse=True)
def fresh_askers():
    from minipanda.core import fairshare

    fairshare.forget()
    yield
    fairshare.forget()


def test_the_share_is_ceil_of_what_is_left_over_the_pilots_asking():
    from minipanda.core.fairshare import share

    assert share(9, 6, 100) == 9  # deep queue: what was asked
    assert share(9, 6, 54) == 9
    assert share(9, 6, 53) == 9  # ceil(53 / 6) = 9
    assert share(9, 6, 20) == 4  # ceil(20 / 6)
    assert share(9, 6, 5) == 1
    assert share(9, 6, 0) == 1  # the claim itself finds none
    assert share(9, 1, 3) == 9  # alone: everything it asked for (the claim takes the 3 there are)


def test_pilots_asking_are_counted_per_queue_and_forgotten_after_a_while():
    from minipanda.core.fairshare import Askers

    askers = Askers(recent_s=10.0)
    assert askers.asked("Q", "a", now=100.0) == 1
    assert askers.asked("Q", "b", now=101.0) == 2
    assert askers.asked("Q", "a", now=102.0) == 2  # the same pilot again
    assert askers.asked("OTHER", "c", now=102.0) == 1
    assert askers.asked("Q", "c", now=109.0) == 3
    assert askers.asked("Q", "c", now=111.5) == 2  # b (last at 101) is forgotten, a (102) is not yet
    assert set(askers.by_queue["Q"]) == {"a", "c"}


def submit(queue, n_jobs):
    from minipanda.core import jobs, queues

    specs = [make_job(queue, jobName=f"share.{queue}.{i}") for i in range(n_jobs)]
    return [row[0] for row in jobs.submit_jobs(specs, "tester", queue_ensurer=queues.ensure_queues)]


def offer(queue, index, n_jobs):
    from minipanda.core import dispatch

    return dispatch.Offer(queue=queue, prod_source_label="managed", memory_mb=2000, cores=1, n_jobs=n_jobs,
                          node=f"node-{index}", pilot_id=f"pilot-{index}")


def test_a_bulk_claim_takes_its_share_of_the_last_jobs_and_all_it_asked_while_the_queue_is_deep(database):
    from minipanda.core import dispatch

    queue = "SHARE_Q"
    submit(queue, 90)
    for index in range(6):  # six pilots ask, one job each: 84 left
        assert len(dispatch.claim_jobs(offer(queue, index, 1))) == 1
    assert len(dispatch.claim_jobs(offer(queue, 0, 9))) == 9  # 84 >= 9 x 6: what was asked; 75 left
    assert len(dispatch.claim_jobs(offer(queue, 1, 9))) == 9  # 66 left
    assert len(dispatch.claim_jobs(offer(queue, 2, 9))) == 9  # 57 left
    assert len(dispatch.claim_jobs(offer(queue, 3, 9))) == 9  # 57 >= 9 x 6 still: 48 left
    assert len(dispatch.claim_jobs(offer(queue, 4, 9))) == 8  # ceil(48 / 6): 40 left
    assert len(dispatch.claim_jobs(offer(queue, 5, 9))) == 7  # ceil(40 / 6): 33 left
    assert len(dispatch.claim_jobs(offer(queue, 0, 9))) == 6  # ceil(33 / 6): 27 left
    got = [len(dispatch.claim_jobs(offer(queue, i % 6, 9))) for i in range(1, 40)]
    assert sum(got) == 27 and max(got) <= 5 and got[-1] == 0


def test_a_lone_pilot_takes_all_it_asked_for(database):
    from minipanda.core import dispatch

    queue = "SHARE_LONE"
    submit(queue, 12)
    assert len(dispatch.claim_jobs(offer(queue, 0, 9))) == 9
    assert len(dispatch.claim_jobs(offer(queue, 0, 9))) == 3


def test_at_the_end_of_a_task_the_pilots_run_dry_within_a_job_or_two_of_each_other(database):
    """Six pilots start one after the other and run one job per step each; a pilot down to its last job in hand
    asks for 9 (its look-ahead). Without the share the first pilots to ask after the queue gets short take the
    last jobs 9 at a time and run up to 8 steps after the others have nothing; with it, at most 2."""
    from minipanda.core import dispatch

    queue, pilots = "SHARE_END", 6
    submit(queue, 300)
    in_hand = {index: 0 for index in range(pilots)}
    last_step = {}
    for step in range(1000):
        for index in range(pilots):
            if step < index:  # staggered start
                continue
            if in_hand[index] <= 1:
                in_hand[index] += len(dispatch.claim_jobs(offer(queue, index, 9)))
            if in_hand[index]:
                in_hand[index] -= 1
                last_step[index] = step
        if not any(in_hand.values()) and step > pilots:
            break
    assert sum(1 for _ in last_step) == pilots
    spread = max(last_step.values()) - min(last_step.values())
    assert spread <= 2, f"the pilots ran dry {spread} steps apart: {last_step}"


def test_a_deep_queue_is_counted_once_for_many_claims_and_each_claim_still_gets_the_exact_share(database):
    """The waiting jobs are counted only when what this process claimed since the last count could have brought
    them below nJobs x askers: each claim gets what an exact count before it would give, from far fewer reads."""
    from minipanda.core import dispatch, fairshare

    queue = "SHARE_DEEP"
    left = 400 - 6
    submit(queue, 400)
    for index in range(6):
        assert len(dispatch.claim_jobs(offer(queue, index, 1))) == 1
    reads, claims = fairshare.waiting.reads, 0
    while left:
        got = len(dispatch.claim_jobs(offer(queue, claims % 6, 9)))
        assert got == fairshare.share(9, 6, left), f"claim {claims}: {got} with {left} left"
        left, claims = left - got, claims + 1
    counted = fairshare.waiting.reads - reads
    # 394 left: one count (up to 8 x 54) lasts until fewer than 54 may be left; then a count per claim, as before
    assert claims > 40 and counted <= claims - 30, f"{counted} counts for {claims} claims"


def test_jobs_that_single_job_pilots_take_lower_the_bound_so_the_share_stays_exact(database):
    from minipanda.core import dispatch, fairshare

    queue = "SHARE_MIXED"
    submit(queue, 100)
    for index in range(6):
        assert len(dispatch.claim_jobs(offer(queue, index, 1))) == 1
    assert len(dispatch.claim_jobs(offer(queue, 0, 9))) == 9  # counted: 94 >= 54; 85 left
    reads = fairshare.waiting.reads
    for i in range(60):  # pilot3-like pilots, one job at a time: 25 left
        assert len(dispatch.claim_jobs(offer(queue, 1 + i % 5, 1))) == 1
    assert len(dispatch.claim_jobs(offer(queue, 0, 9))) == 5  # ceil(25 / 6), not the 9 of the old count
    assert fairshare.waiting.reads == reads + 1


def test_the_bound_is_forgotten_after_a_while_and_never_above_what_a_racing_claim_left():
    """An old count is taken again (another process, a kill or the watchdog may have taken jobs); a claim that
    commits while the count reads is subtracted from it."""
    from minipanda.core.fairshare import Waiting

    waiting = Waiting(refresh_s=1.0)
    assert waiting.at_least("Q", "shape", now=10.0) is None
    assert waiting.count("Q", "shape", lambda: 100, now=10.0) == 100
    waiting.took("Q", 9)
    waiting.took("OTHER", 50)
    assert waiting.at_least("Q", "shape", now=10.5) == 91
    assert waiting.at_least("Q", "other shape", now=10.5) is None
    assert waiting.at_least("Q", "shape", now=11.5) is None  # older than refresh_s

    def read_then_a_claim_commits():  # the read saw 100 jobs; 5 of them are claimed before the count is stored
        waiting.took("Q", 5)
        return 100

    waiting.count("Q", "shape", read_then_a_claim_commits, now=20.0)
    assert waiting.at_least("Q", "shape", now=20.0) == 95
