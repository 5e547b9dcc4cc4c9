"""The wrap-up of ended jobs on a thread of its own, and their final updates, several jobs in one request.

Over HTTP, once a payload has ended the job loop (pilot.worker) starts the next job in hand at once and hands
the ended job (jobrun.JobRun) to :class:`WrapUp`, whose thread does the rest of it, job after job in the order
they ended, as the job loop did before: the stage-out of outputs and of the log tarball (whose outcome still
decides the job's state), the final update's parameters, the job directory's removal. A log bound for the
server's store waits with its job's final, and the logs of the jobs whose finals go together go first, in ONE
request (pilot.bulklogs), each entry's answer deciding its job as a single PUT's would. The finals made meanwhile
go to the server together in ONE ``updateJobsInBulk``:

* a final waits at most ``flush_after`` s for others (sent at once when the job loop has no next job in hand,
  on a stop, or when ``BATCH_MAX`` are waiting); a single final goes as an ``updateJob``, as before;
* each entry of the answer is judged alone: accepted; refused as a single updateJob would be told to try again
  (the job changed concurrently): that final alone, again, with the job's tries and backoff, then the outbox;
  refused for good: logged, as a single refusal. A request that fails as a whole is tried again as a whole
  (``pilot_update_tries`` with backoff), then every final of it goes to the outbox; a server that refuses the
  bulk request for good (one without the route) gets each final alone.

Bounds: at most ``QUEUE_BOUND`` ended jobs wait for their wrap-up; the job loop waits before it starts another
payload while the queue is full, so the wrap-up cannot fall behind by more than that. Stops: on a warm stop a
final gets one try, then the outbox (as before); on a cold one the job loop spools every final not delivered yet
(:meth:`WrapUp.abandon`) and the thread sends nothing more.
"""
import logging
import queue
import threading
import time

from pilot import bulklogs, copytools
from pilot.comm import CommError, entry_outcome
from pilot.errors import PilotError

log = logging.getLogger(__name__)
QUEUE_BOUND = 4  # ended jobs waiting for their stage-out and log
BATCH_MAX = 100  # finals in one updateJobsInBulk
_FLUSH, _STOP = object(), object()
BULK_LOG_MAX = 1 << 20  # bytes of a log sent with others in one request; a larger one goes alone
BULK_BYTES = 8 << 20  # bytes of logs in one request (the server's body limit is 64 MB by default)
NO_ROUTE = (404, 405, 501)  # what a server without the bulk log route answers it


class WrapUp:
    """The wrap-up thread of one pilot.

    Args:
        ctx: the jobrun.Context (client, outbox, timing, stop state, queuedata).
        flush_after: seconds a final may wait for others before it is sent.
        logs_in_bulk: the logs of the jobs whose finals go together go in one request too (when the server has
            the route).
    """

    def __init__(self, ctx, flush_after=1.0, logs_in_bulk=True):
        self.ctx, self.flush_after = ctx, flush_after
        self.queue = queue.Queue(maxsize=QUEUE_BOUND)
        self.pending = []  # (monotonic time its final was made, JobRun)
        self.unreported = []  # runs handed over whose final is not delivered, spooled or refused yet
        self.lock = threading.Lock()
        self.cold = False
        self.woken = threading.Event()
        self.sent_finals = self.sent_bulks = self.sent_finals_in_bulk = 0  # finals sent; bulk requests, finals in them
        self.logs_due = []  # runs wrapped up whose log waits to go with the others' (stage-out done otherwise)
        # several logs in one request while the server has the route (pilot3's and old servers' single PUT else)
        self.logs_in_bulk = logs_in_bulk and ctx.client is not None
        self.sent_log_bulks = self.sent_logs_in_bulk = 0  # requests of several logs, logs in them
        self.thread = threading.Thread(target=self._loop, name="wrap-up", daemon=True)
        self.thread.start()

    # ---- the job loop's side ------------------------------------------------------------------------------------
    def put(self, run):
        """Hand over an ended job (or one given back unstarted); waits while QUEUE_BOUND jobs are waiting."""
        with self.lock:
            self.unreported.append(run)
        self.queue.put(run)

    def flush(self):
        """Send the finals made so far as soon as the jobs before this call are wrapped up."""
        self.queue.put(_FLUSH)

    def close(self, timeout=None):
        """Wrap up every job handed over, send their finals, and end the thread; False if it did not end in
        ``timeout`` s."""
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return False
        self.thread.join(timeout)
        if self.sent_log_bulks:
            log.info("logs of %d jobs sent in %d requests", self.sent_logs_in_bulk, self.sent_log_bulks)
        return not self.thread.is_alive()

    def abandon(self):
        """Cold stop: spool the final of every job not reported yet to the outbox (no network); the thread sends
        nothing more. A final the thread was sending meanwhile may also arrive: a replay is answered alreadyDone."""
        with self.lock:
            self.cold = True
            runs, self.unreported = self.unreported, []
        self.woken.set()
        for run in runs:
            run.spool_final()
            run.settle_log()  # a log held in memory, not uploaded: kept on the node, as its file was

    # ---- the thread ---------------------------------------------------------------------------------------------
    def _loop(self):
        while True:
            due = self.pending[0][0] + self.flush_after if self.pending else None
            try:
                item = self.queue.get(timeout=None if due is None else max(0.0, due - time.monotonic()))
            except queue.Empty:
                item = _FLUSH
            if self.cold:
                if item is _STOP:
                    return
                continue
            try:
                if item is _STOP or item is _FLUSH:
                    self._send()
                    if item is _STOP:
                        return
                    continue
                self._wrap_up(item)
                if len(self.pending) >= BATCH_MAX or self.ctx.stop.requested:
                    self._send()
            except Exception:  # the thread must go on: the job loop waits on it
                log.exception("wrap-up failed")

    def _wrap_up(self, run):
        try:
            if run.wrap_up(defer_log=self.logs_in_bulk):
                self.logs_due.append(run)  # its log goes with the others' when the finals are sent (_send)
        except Exception as exc:  # a pilot bug must still end in a report
            self._unexpected(run, exc)
        self.pending.append((time.monotonic(), run))

    def _unexpected(self, run, exc):
        log.exception("unexpected error in the wrap-up of job %s", run.job.panda_id)
        run.fail_unexpected(exc)
        run.final = run.final_params()

    def _stage_out_logs(self):
        """The logs left for now (several jobs' in ONE request, each judged alone by the server; one alone by the
        single PUT; a server without the route gets one PUT per log, now and from then on), then those jobs'
        finals: the log's outcome decides each job's state, as when it went alone."""
        runs, self.logs_due = self.logs_due, []
        outcomes = {}  # run index -> outcome (bulklogs.stage_out_logs); a run without one goes alone
        for group in _groups(runs):
            if len(group) < 2 or not self.logs_in_bulk:
                continue
            try:
                items = [(runs[i].job.panda_id, runs[i].job.log, runs[i].log_store) for i in group]
                found = bulklogs.stage_out_logs(items, self.ctx.client, self.ctx.qd["pilot_stagein_timeout"])
                outcomes.update(zip(group, found))
                self.sent_log_bulks += 1
                self.sent_logs_in_bulk += len(group)
            except CommError as exc:
                if exc.status in NO_ROUTE:
                    log.warning("the server has no route for several logs in one request (%s); one PUT per log "
                                "from now on", exc)
                    self.logs_in_bulk = False
                else:
                    log.warning("%d logs in one request failed (%s); each sent alone", len(group), exc)
            except (OSError, TimeoutError) as exc:
                log.warning("%d logs in one request failed (%s); each sent alone", len(group), exc)
            except Exception:  # a pilot bug: each log still goes, alone
                log.exception("%d logs in one request failed unexpectedly; each sent alone", len(group))
        for index, run in enumerate(runs):
            try:
                _log_staged(run, outcomes.get(index, bulklogs.ALONE))
                run.conclude()
            except Exception as exc:  # a pilot bug must still end in a report
                self._unexpected(run, exc)

    def _send(self):
        if self.logs_due:
            self._stage_out_logs()
        batch, self.pending = [run for _, run in self.pending], []
        if not batch:
            return
        ctx = self.ctx
        for run in batch:
            ctx.timing.mark(run.job.panda_id, "PILOT_PRE_FINAL_UPDATE")
        self.sent_finals += len(batch)
        try:
            if len(batch) == 1:
                self._deliver_alone(batch[0], self._tries())
            else:
                self._send_bulk(batch)
        except Exception:  # a pilot bug: what was not settled goes to the outbox, never lost
            log.exception("sending the final updates of %d jobs failed", len(batch))
            for run in batch:
                if any(r is run for r in self.unreported):
                    self._done(run, None, CommError("the final update could not be sent"))
        if ctx.outbox is not None and ctx.client is not None and not self.cold:
            ctx.outbox.replay(ctx.client)

    def _send_bulk(self, batch):
        ctx, backoff, tries = self.ctx, self.ctx.qd["pilot_update_backoff"], self._tries()
        results = None
        for attempt in range(tries):
            try:
                results = ctx.client.update_jobs_bulk([run.final for run in batch])
                break
            except CommError as exc:
                log.warning("final updates of %d jobs in one request failed, try %d of %d: %s", len(batch),
                            attempt + 1, tries, exc)
                if not exc.transient:  # a server without updateJobsInBulk: each alone
                    for run in batch:
                        self._deliver_alone(run, tries)
                    return
                if attempt + 1 < tries and not ctx.stop.requested and not self.cold:
                    self._sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                else:
                    break
        self.sent_bulks += 1
        self.sent_finals_in_bulk += len(batch)
        if results is None:
            for run in batch:
                self._done(run, None, CommError("updateJobsInBulk failed"))
            return
        for run, result in zip(batch, results):
            outcome = entry_outcome(result)
            if outcome == "ok":
                self._done(run, result, None)
            elif outcome == "retry":
                log.warning("final update of job %s refused for now (%s); sent again alone", run.job.panda_id,
                            result.get("ErrorDiag"))
                self._deliver_alone(run, tries)
            else:
                self._done(run, None, CommError(str(result.get("ErrorDiag") or result), transient=False,
                                                reply=result))

    def _deliver_alone(self, run, tries):
        ctx = self.ctx
        reply, error = ctx.client.update_job_reliably(run.final, tries, ctx.qd["pilot_update_backoff"], self._sleep,
                                                      lambda: ctx.stop.requested or self.cold)
        self._done(run, reply, error)

    def _done(self, run, reply, error):
        with self.lock:
            if self.cold:  # the job loop spooled it already
                return
            self.unreported = [r for r in self.unreported if r is not run]
        run.settled(reply, error)
        self.ctx.timing.save(done=run.job.panda_id)

    def _tries(self):
        return 1 if self.ctx.stop.requested else max(1, self.ctx.qd["pilot_update_tries"])

    def _sleep(self, seconds):
        """A backoff that a cold stop cuts short (the job loop's Waker is for the main thread's signals only)."""
        self.woken.wait(max(0.0, seconds))


def _groups(runs):
    """The indexes of ``runs`` in groups whose logs go in one request: none over BULK_LOG_MAX (a large log goes
    alone, by sendfile, where a request's own cost matters little), at most BULK_BYTES and BATCH_MAX each."""
    groups, group, size = [], [], 0
    for index, run in enumerate(runs):
        fsize = run.job.log.fsize
        if fsize > BULK_LOG_MAX:
            groups.append([index])
            continue
        if group and (size + fsize > BULK_BYTES or len(group) >= BATCH_MAX):
            groups.append(group)
            group, size = [], 0
        group.append(index)
        size += fsize
    return groups + ([group] if group else [])


def _log_staged(run, outcome):
    """What a log's upload meant for its job (``run``, a jobrun.JobRun): None stored; a PilotError fails the job as
    its single upload's would have; ``bulklogs.ALONE``: sent by itself now, by the single PUT with its tries."""
    if outcome == bulklogs.ALONE:
        qd, ctx = run.qd, run.ctx
        try:
            copytools.stage_out(run.job.log, "http", ctx.output_dir, qd["pilot_stagein_timeout"],
                                url_template=qd["output_url"], client=ctx.client, tries=qd["pilot_update_tries"],
                                backoff=qd["pilot_update_backoff"], sleep=ctx.waker.sleep, measured=True,
                                panda_id=run.job.panda_id)
        except PilotError as exc:
            run.fail(exc)
    elif outcome is not None:
        run.fail(outcome)
    run.settle_log()
    run.ctx.timing.mark(run.job.panda_id, "PILOT_POST_STAGEOUT")
