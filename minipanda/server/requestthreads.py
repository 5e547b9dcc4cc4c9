"""The request threads of ``minipanda serve``'s server: the Python threads that run the WSGI app for the loop of
minipanda.server.bridge (its RsgiBridge awaits each request's outcome there)."""
import concurrent.futures
import queue
import threading

_CALL = object()  # marks a RequestThreads.call() item in the queue


class RequestThreads(concurrent.futures.Executor):
    """``threads`` daemon threads running the WSGI app (an Executor for ``loop.run_in_executor``). Daemon threads:
    a request stuck past stop()'s drain must not keep the process from exiting, as ThreadPoolExecutor's would.

    ``call(loop, fn, arg)`` is the bridge's own path: an asyncio future of ``loop`` resolved by one
    ``call_soon_threadsafe`` from the request thread, without the concurrent.futures.Future that run_in_executor
    chains to it (its lock, condition and two callbacks cost the loop thread more than the app's own routing)."""

    def __init__(self, threads):
        self.queue = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, name=f"minipanda-request-{n}", daemon=True)
                        for n in range(max(1, threads))]
        for thread in self.threads:
            thread.start()

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        self.queue.put((future, fn, args, kwargs))
        return future

    def call(self, loop, fn, arg):
        """An asyncio future of ``loop`` for ``fn(arg)`` run on a request thread."""
        future = loop.create_future()
        self.queue.put((_CALL, loop, future, fn, arg))
        return future

    def _work(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if item[0] is _CALL:
                _, loop, future, fn, arg = item
                try:
                    outcome, failed = fn(arg), False
                except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                    outcome, failed = exc, True
                try:
                    loop.call_soon_threadsafe(_settle, future, outcome, failed)
                except RuntimeError:  # the loop was closed by stop(): nobody awaits this reply any more
                    pass
                continue
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                future.set_exception(exc)

    def shutdown(self, wait=True, *, cancel_futures=False):
        for _ in self.threads:
            self.queue.put(None)


def _settle(future, outcome, failed):
    """On the loop: hand a request thread's outcome to the future awaiting it (unless it was cancelled)."""
    if future.cancelled():
        return
    if failed:
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
