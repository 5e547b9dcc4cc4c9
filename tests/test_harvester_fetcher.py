"""The fetcher on a real harvester database, against a stand-in for the server's two calls (the HTTP boundary;
the real client and server are tested end to end in test_harvester_faults.py): adoption of jobs the server sent
before a stop, page by page, never of a job harvester held or bound to a worker, and again after an acquire whose
answer may have been lost."""
import datetime
import json

import pytest

from harvester import db, models
from harvester.agents.fetcher import SENT_PAGE, Fetcher
from harvester.context import Context, Settings
from harvester.errors import ServerError
from queueconfig.loader import loads

NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)
LATER = NOW + datetime.timedelta(minutes=10)


def push_queue():
    raw = {"mode": "push", "limits": {"maxWorkers": 2, "nQueueLimitJob": 2}}
    return loads(json.dumps({"queues": {"Q": raw}}), "q.json").queues["Q"]


class Server:
    """sent_jobs pages by PandaID as the server does; acquire_jobs answers from a list, or raises."""

    url = "http://127.0.0.1:9"

    def __init__(self, sent=(), acquire_error=None):
        self.sent, self.acquire_error, self.calls = sorted(sent), acquire_error, []

    def sent_jobs(self, queue, after=0):
        self.calls.append(("sent_jobs", after))
        return [{"PandaID": pid, "attemptNr": 1} for pid in self.sent if pid > after][:SENT_PAGE]

    def acquire_jobs(self, queue, n_jobs, label, **kwargs):
        self.calls.append(("acquire_jobs", n_jobs))
        if self.acquire_error:
            raise self.acquire_error
        return []


@pytest.fixture
def home(tmp_path):
    db.open_database(str(tmp_path / "harvester.db"))
    yield tmp_path
    db.close_database()


def fetcher(home, server):
    ctx = Context(str(home), server, Settings(), "h1")
    ctx.set_queues({"Q": push_queue()}, {})
    ctx.wake = lambda name: None
    return Fetcher(ctx)


def held():
    return sorted(pid for (pid,) in models.HeldJob.select(models.HeldJob.panda_id).tuples())


def test_jobs_sent_before_a_stop_are_adopted_page_by_page_but_never_a_known_one(home):
    sent = list(range(1, 2 * SENT_PAGE + 6))  # three pages
    models.HeldJob.create(panda_id=3, queue="Q", definition="{}", status="fed", worker_id=1, fetched_time=NOW)
    models.JobWorker.create(panda_id=4, worker_id=2, time=NOW)  # its held-job row was swept with its worker
    server = Server(sent)
    agent = fetcher(home, server)
    agent.run_once(NOW)
    assert held() == sorted(set(sent) - {4})
    assert models.HeldJob.get_by_id(3).status == "fed"  # a job already held stays as it was
    assert [after for name, after in server.calls if name == "sent_jobs"] == [0, SENT_PAGE, 2 * SENT_PAGE]
    agent.run_once(NOW)  # once per start: the next cycles only fetch
    assert [name for name, _ in server.calls].count("sent_jobs") == 3


def test_an_acquire_that_may_have_happened_is_followed_by_an_adoption(home):
    server = Server(acquire_error=ServerError("read timeout", transient=True))
    agent = fetcher(home, server)
    agent.run_once(NOW)  # adoption (nothing sent yet), then the acquire times out on the way back
    server.sent, server.acquire_error = [7, 8], None  # the server had claimed them
    agent.run_once(LATER)  # after the queue's backoff
    assert held() == [7, 8]


def test_a_refused_acquire_needs_no_adoption(home):
    server = Server(acquire_error=ServerError("403 role", transient=False))
    agent = fetcher(home, server)
    agent.run_once(NOW)
    server.sent, server.acquire_error = [9], None
    agent.run_once(LATER)
    assert held() == [] and [name for name, _ in server.calls].count("sent_jobs") == 1


def test_a_server_without_the_route_is_logged_and_fetching_goes_on(home, caplog):
    class OldServer(Server):
        def sent_jobs(self, queue, after=0):
            raise ServerError("HTTP 404", transient=False)

    server = OldServer()
    fetcher(home, server).run_once(NOW)
    assert ("acquire_jobs", 2) in server.calls
    assert "cannot look up the jobs the server sent" in caplog.text
