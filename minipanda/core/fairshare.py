"""A fair share of what is left: no pilot takes more than its part of a queue's last jobs in one bulk getJob.

A pilot running short jobs asks for several at once (``nJobs``: as many as fill its look-ahead, ~1 s of work).
While the queue is deep that costs nothing; at the end of a task it does: the first pilots to ask take the last
jobs in batches of 8-10 while the others find none and go idle, and the task ends when the luckiest pilot has run
its whole batch, up to a look-ahead after the others (0.3-0.6 s of a 17 s run of 1,000 x ``sleep 0.1`` on 6
pilots). So a bulk claim gets at most ``ceil(waiting / askers)`` jobs: ``waiting`` the activated jobs the pilot's
offer matches, ``askers`` the pilots that asked for work on that queue within the last :data:`RECENT_S` seconds,
this one included. While ``waiting >= nJobs x askers`` nothing changes; near the end each pilot takes its part and
asks again sooner, and the pilots run dry within about one job of each other.

The pilots asking are counted in this server process's memory (a getJob costs no write for it): a server running
several worker processes (PostgreSQL) sees in each one the pilots that asked that process, so the share there is
larger than it could be - never smaller. A single-job getJob (pilot3) is never cut, but its pilot is counted.
The memory belongs to the database the models are bound to: binding another one (schema.open_database) forgets it.
A pilot is known by its harvester worker, else by its pilot id, node and batch id: clients that send a new pilot id
with every getJob (a pilot per request, never asking again) are each counted for RECENT_S seconds, so the others'
share shrinks towards one job per claim as the queue drains (bench/bulk.py once did this: 0.23 x the rate).

``waiting`` is not read before every claim: while the queue is deep its exact value changes nothing, and the COUNT
cost as much as a tenth of the claim. :class:`Waiting` keeps, per queue and offer shape, the last count minus every
job this process claimed on that queue since (by any offer shape, single-job claims included): a lower bound of
what is left, as long as this process alone takes the queue's jobs (submissions and retries only add to it). The
count is taken again only when that bound falls below ``nJobs x askers`` (where the share may cut), or when it is
older than :data:`REFRESH_S` (another worker process, a kill or the watchdog may have taken jobs meanwhile); it
then counts up to :data:`DEPTH` times further, so one count lasts for several claims.
"""
import math
import threading
import time

RECENT_S = 10.0  # a pilot that asked for work this recently still competes for what is left
REFRESH_S = 1.0  # a count of the waiting jobs older than this is taken again before it decides a share
DEPTH = 8  # a count reads up to DEPTH x (nJobs x askers) jobs: the claims of a deep queue then read none
MAX_SHAPES = 1024  # counts remembered (queue, labels, limits): pilots may send any limits; beyond this, forget all


class Askers:
    """The pilots that asked each queue for work recently: {queue: {pilot key: monotonic time of its last ask}}."""

    def __init__(self, recent_s=RECENT_S):
        self.recent_s = recent_s
        self.lock = threading.Lock()
        self.by_queue = {}

    def asked(self, queue, key, now=None):
        """Record that pilot ``key`` asked ``queue`` for work now; return how many pilots asked it recently."""
        now = time.monotonic() if now is None else now
        with self.lock:
            seen = self.by_queue.setdefault(queue, {})
            seen[key] = now
            cutoff = now - self.recent_s
            if len(seen) > 1 and min(seen.values()) < cutoff:
                for old in [k for k, t in seen.items() if t < cutoff]:
                    del seen[old]
            return len(seen)

    def clear(self):
        with self.lock:
            self.by_queue.clear()


askers = Askers()


class Waiting:
    """A lower bound of the jobs each offer shape matches, kept between counts from the claims' own row counts.

    ``claimed[queue]`` is every job this process claimed on ``queue`` (after the claim's COMMIT);
    ``counted[shape]`` is (the count, ``claimed[queue]`` just BEFORE the count was read, monotonic time): a claim
    that commits while the count reads is then subtracted even if the count already missed its jobs, so the bound
    errs low (an extra count), never high (a share larger than the rule's)."""

    def __init__(self, refresh_s=REFRESH_S):
        self.refresh_s = refresh_s
        self.lock = threading.Lock()
        self.claimed = {}
        self.counted = {}
        self.reads = 0  # counts taken (tests, debugging)

    def at_least(self, queue, shape, now=None):
        """What is known to be left for ``shape`` on ``queue``: a lower bound, or None (never counted, or the
        count is older than refresh_s)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            known = self.counted.get((queue, shape))
            if known is None or now - known[2] > self.refresh_s:
                return None
            return known[0] - (self.claimed.get(queue, 0) - known[1])

    def count(self, queue, shape, read, now=None):
        """Count again: ``read()`` returns what ``shape`` matches on ``queue`` (up to some limit); remember it and
        return it. What this process had claimed is noted BEFORE the read: a claim committing meanwhile is then
        subtracted later even if the read missed its jobs (the bound errs low), never left out if it saw them."""
        with self.lock:
            mark = self.claimed.get(queue, 0)
        n = read()
        now = time.monotonic() if now is None else now
        with self.lock:
            self.reads += 1
            if len(self.counted) >= MAX_SHAPES:
                self.counted.clear()
            self.counted[(queue, shape)] = (n, mark, now)
        return n

    def took(self, queue, n):
        """This process claimed ``n`` jobs of ``queue`` (committed)."""
        if n:
            with self.lock:
                self.claimed[queue] = self.claimed.get(queue, 0) + n

    def clear(self):
        with self.lock:
            self.claimed.clear()
            self.counted.clear()


waiting = Waiting()


def forget():
    """Forget the pilots asking and the counts: they belong to the database bound before."""
    askers.clear()
    waiting.clear()


def pilot_key(offer):
    """Who is asking (a dispatch.Offer): its harvester worker when it says, else its harvester, pilot id, node and
    batch id (a pilot that sends none of them is counted as one anonymous pilot)."""
    if offer.worker_id is not None:
        return ("worker", offer.harvester_id, offer.worker_id)
    return ("pilot", offer.harvester_id, offer.pilot_id, offer.node, offer.batch_id)


def share(n_jobs, n_askers, waiting):
    """How many of the ``n_jobs`` asked for one pilot may take when ``waiting`` jobs match and ``n_askers`` pilots
    compete for them: ``ceil(waiting / n_askers)``, at least 1 (a claim of none is the empty queue's answer)."""
    if n_askers <= 1:
        return n_jobs
    return max(1, min(n_jobs, math.ceil(waiting / n_askers)))
