"""The wrap-up thread and the job loop's batches: finals several in one updateJobsInBulk (each entry judged alone),
the wrap-up queue bounded, and how many jobs one getJob asks for."""
import argparse
import json
import os
import threading
import time

from pilot import wrapup
from pilot.report import Timing
from pilot.signals import StopState
from pilot.worker import Pilot
from test_pilot_jobrun import StubServer, stub_server, stub_url

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures
QD = {"pilot_update_tries": 3, "pilot_update_backoff": 0.01}


class FakeJob:
    def __init__(self, panda_id):
        self.panda_id = panda_id


class FakeRun:
    """What the wrap-up thread needs of a jobrun.JobRun; ``wrap_up`` waits for ``gate`` when one is given."""

    def __init__(self, panda_id, gate=None):
        self.job, self.gate = FakeJob(panda_id), gate
        self.final = None
        self.outcome = None

    def wrap_up(self, defer_log=False):
        if self.gate is not None:
            self.gate.wait(30)
        self.final = {"jobId": self.job.panda_id, "state": "finished"}

    def settled(self, reply, error):
        self.outcome = ("delivered", None) if reply is not None else (
            "refused" if error is not None and not error.transient else "spooled", str(error))

    def spool_final(self):
        self.outcome = ("spooled", "cold")

    def settle_log(self):
        pass


class FakeClient:
    """Records each request; a bulk's entries are answered by ``entry(panda_id)``, a single update is accepted."""

    def __init__(self, entry):
        self.entry, self.requests = entry, []

    def update_jobs_bulk(self, entries):
        self.requests.append(("bulk", [e["jobId"] for e in entries]))
        return [self.entry(e["jobId"]) for e in entries]

    def update_job_reliably(self, params, tries, backoff, sleep, give_up):
        self.requests.append(("alone", params["jobId"]))
        return {"StatusCode": 0, "command": "NULL"}, None


class FakeContext:
    def __init__(self, client, tmp_path):
        self.client, self.qd, self.stop, self.outbox = client, QD, StopState(), None
        self.timing = Timing(os.path.join(tmp_path, "timing.json"))


def test_a_bulk_entry_refused_for_now_is_sent_again_alone_and_one_refused_for_good_is_not(tmp_path):
    answers = {1: {"StatusCode": 0, "command": "NULL"},
               2: {"StatusCode": 30, "command": "NULL", "ErrorDiag": "job 2 changed state concurrently; retry"},
               3: {"StatusCode": 50, "command": "NULL", "ErrorDiag": "state: not allowed"},
               4: {"StatusCode": 30, "command": "tobekilled", "ErrorDiag": "job 4 is unknown"}}
    client = FakeClient(lambda panda_id: answers[panda_id])
    wrap = wrapup.WrapUp(FakeContext(client, tmp_path), flush_after=60)
    runs = [FakeRun(panda_id) for panda_id in (1, 2, 3, 4)]
    for run in runs:
        wrap.put(run)
    assert wrap.close(30)
    assert client.requests == [("bulk", [1, 2, 3, 4]), ("alone", 2)]
    assert [run.outcome[0] for run in runs] == ["delivered", "delivered", "refused", "refused"]
    assert wrap.unreported == [] and (wrap.sent_finals, wrap.sent_bulks) == (4, 1)


def test_the_wrap_up_queue_is_bounded(tmp_path):
    """While the wrap-up is stuck, the job loop's hand-over waits once QUEUE_BOUND jobs are waiting: it cannot
    start payload after payload while the wrap-up falls behind without bound."""
    gate = threading.Event()
    client = FakeClient(lambda panda_id: {"StatusCode": 0, "command": "NULL"})
    wrap = wrapup.WrapUp(FakeContext(client, tmp_path), flush_after=60)
    runs = [FakeRun(panda_id, gate) for panda_id in range(1, wrapup.QUEUE_BOUND + 3)]
    handed = []

    def job_loop():
        for run in runs:
            wrap.put(run)
            handed.append(run.job.panda_id)

    loop = threading.Thread(target=job_loop, daemon=True)
    loop.start()
    deadline = time.monotonic() + 30
    while len(handed) < wrapup.QUEUE_BOUND + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.join(0.5)
    # one job in the thread's hands (stuck), QUEUE_BOUND waiting: the last one cannot be handed over yet
    assert loop.is_alive() and len(handed) == wrapup.QUEUE_BOUND + 1
    assert wrap.queue.qsize() == wrapup.QUEUE_BOUND
    gate.set()
    loop.join(30)
    assert not loop.is_alive() and wrap.close(30)
    assert sorted(run.job.panda_id for run in runs if run.outcome == ("delivered", None)) == \
        [run.job.panda_id for run in runs]


def pilot_for(tmp_path, lookahead=1.0, cap=50, lifetime=3600.0, timefloor=60):
    options = argparse.Namespace(getjob_lookahead=lookahead, getjob_max_jobs=cap, workdir=str(tmp_path))
    pilot = Pilot(options)
    qd = {"timefloor": timefloor, "pilot_stageout_reserve": 0, "pilot_min_disk_getjob_mb": 0}
    pilot.qd = qd
    pilot.ctx = argparse.Namespace(qd=qd)
    pilot.deadline = time.monotonic() + lifetime
    return pilot


def test_jobs_asked_for_fill_the_look_ahead_within_the_cap_the_remaining_time_and_the_timefloor(tmp_path):
    pilot = pilot_for(tmp_path)
    assert pilot.jobs_to_ask(0) == 1  # no pace known yet
    pilot.pace = 0.1
    assert pilot.jobs_to_ask(3) == 10  # 1 s of look-ahead
    capped = pilot_for(tmp_path, cap=4)
    capped.pace = 0.01
    assert capped.jobs_to_ask(3) == 4
    short = pilot_for(tmp_path, lookahead=100, lifetime=35)
    short.pace = 10
    assert short.jobs_to_ask(0) == 3  # 35 s left: no more than fit
    off = pilot_for(tmp_path, lookahead=0)
    off.pace = 0.001
    assert off.jobs_to_ask(3) == 1
    floor = pilot_for(tmp_path, timefloor=0)  # one job per pilot: none after the first
    floor.pace = 0.01
    assert floor.jobs_to_ask(0) >= 1 and floor.jobs_to_ask(1) == 0


def test_short_jobs_come_several_per_getjob_and_their_finals_several_per_request(site, tmp_path):
    """Against a stub server: getJob's nJobs grows once the pace is known and never passes --getjob-max-jobs;
    every job is reported once, the finals of jobs wrapped up together in one updateJobsInBulk; every job is in
    worker_pandaids.json when the pilot has ended (written at most once a second while jobs begin)."""
    jobs = [{"PandaID": n, "transformation": "/bin/true", "jobPars": "", "prodSourceLabel": "managed"}
            for n in range(1, 11)]
    stub = stub_server(jobs)
    hwd = tmp_path / "access-point"
    hwd.mkdir()
    try:
        code, log = site.run("--getjob-max-jobs", "3", "--getjob-lookahead", "60", "--final-batch-wait", "60",
                             "--harvester-workdir", str(hwd), url=stub_url(stub), qd=site.queuedata(timefloor=10))
    finally:
        stub.shutdown()
        stub.server_close()
    assert code == 0, log
    asked = [n for route, n in StubServer.requests if route == "getJob"]
    assert asked[0] == 1 and max(asked) == 3 and all(1 <= n <= 3 for n in asked), (asked, log)
    assert sorted((u[0], u[1]) for u in StubServer.updates) == [(n, "finished") for n in range(1, 11)], log
    bulks = [n for route, n in StubServer.requests if route == "updateJobsInBulk"]
    assert bulks and max(bulks) > 1, (StubServer.requests, log)
    assert sum(bulks) + len([r for r, _ in StubServer.requests if r == "updateJob"]) == 10
    assert sorted(json.loads((hwd / "worker_pandaids.json").read_text())) == list(range(1, 11))


def test_one_payload_at_a_time(site, tmp_path):
    """Back to back, never side by side: each payload starts after the one before it has ended, while the
    previous jobs' logs are still being wrapped up."""
    trace = os.path.join(str(tmp_path), "trace")
    step = f"-c 'echo start $PandaID >> {trace}; sleep 0.05; echo end $PandaID >> {trace}'"
    ids = [site.submit(transformation="/bin/sh", jobParameters=step,
                       Files=[{"type": "log", "lfn": f"job{n}.log.tgz", "scope": "user"}]) for n in range(6)]
    code, log = site.run(qd=site.queuedata(timefloor=10))
    assert code == 0, log
    assert all(site.status(panda_id) == "finished" for panda_id in ids), log
    with open(trace) as handle:
        lines = handle.read().split()
    starts, ends = lines[0::4], lines[2::4]
    assert starts == ["start"] * 6 and ends == ["end"] * 6 and lines[1::4] == lines[3::4], lines
    assert sorted(int(panda_id) for panda_id in lines[1::4]) == sorted(ids)


class HeldRun:
    """A job whose payload ended and that the job loop still holds."""

    def __init__(self, panda_id):
        self.job = argparse.Namespace(panda_id=panda_id)
        self.spooled = False

    def spool_final(self):
        self.spooled = True


def test_a_held_job_goes_to_the_wrap_up_before_anything_after_it_and_to_the_outbox_on_a_cold_stop(tmp_path):
    """The job whose payload ended last is handed over once the next job's work began, and in any case before
    anything the pilot hands the wrap-up after it (a job given back, a flush, the shutdown), so the wrap-up keeps
    the order jobs ended in; on a cold stop it goes straight to the outbox, as the wrap-up's own jobs do."""
    handed = []
    pilot = pilot_for(tmp_path)
    pilot.wrapup = argparse.Namespace(put=lambda run: handed.append(run.job.panda_id),
                                      flush=lambda: handed.append("flush"))
    pilot.held = HeldRun(1)
    pilot.in_hand.clear()
    pilot.client, pilot.push_mode = None, False
    pilot.jobs_from_server = lambda: []
    pilot.get_job()  # no job in hand: the held one goes first, then the flush
    assert handed[:2] == [1, "flush"] and pilot.held is None
    cold = pilot_for(tmp_path)
    cold.wrapup = argparse.Namespace(put=lambda run: handed.append(run.job.panda_id))
    cold.held = run = HeldRun(2)
    cold.stop.cold = True
    cold.hand_over_held()
    assert run.spooled and 2 not in handed and cold.held is None


class AskingClient:
    """Records the getJobs a pilot sends ahead."""

    def __init__(self):
        self.asked = []

    def begin_get_jobs(self, offer, n_jobs):
        self.asked.append(n_jobs)
        return lambda timeout=None: []


def test_the_next_getjob_goes_out_while_the_job_before_the_last_runs_when_jobs_are_short(tmp_path):
    """With two or more jobs to the look-ahead the getJob for the next ones is sent when the job before the last
    one in hand starts (its answer then has a whole job's time to come back from a loaded server), never while
    more are in hand; with longer jobs when the last one starts, or when its payload has ended."""
    def pilot(pace, in_hand):
        p = pilot_for(tmp_path, lookahead=1.0)
        p.client, p.pace, p.offer = AskingClient(), pace, lambda: {}
        p.in_hand.extend([({"PandaID": n}, 0.0) for n in range(in_hand)])
        return p

    for pace, in_hand, payload_ended, sent in [
            (0.1, 2, False, False),  # two more in hand: not yet
            (0.1, 1, False, True),  # the job before the last one started: now
            (0.1, 0, False, True),
            (0.6, 1, False, False),  # one job fills most of the look-ahead: when the last one starts
            (0.6, 0, False, True),
            (2.0, 0, False, False),  # longer than the look-ahead: when its payload has ended
            (2.0, 0, True, True),
            (0.1, 1, True, False)]:  # a payload's end with one more in hand: that one's start asks
        p = pilot(pace, in_hand)
        p.fetch_ahead(payload_ended=payload_ended)
        assert bool(p.client.asked) == sent, (pace, in_hand, payload_ended)
        assert (p.next_jobs is not None) == sent and not p.no_next_job
    p = pilot(0.1, 1)
    p.fetch_ahead(payload_ended=False)
    p.fetch_ahead(payload_ended=False)
    assert p.client.asked == [10]  # one getJob ahead at a time
    for in_hand, none_after in [(1, False), (0, True)]:  # the timefloor used up: the job in hand still runs
        p = pilot(0.1, in_hand)
        p.started -= 3600
        p.fetch_ahead(payload_ended=False)
        assert p.client.asked == [] and p.no_next_job == none_after and p.may_take_job() == (not none_after)
