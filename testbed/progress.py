"""The progress of the demo task: a rich bar on a terminal, plain lines elsewhere."""
import time


class Progress:
    """A rich progress bar on a terminal; elsewhere one plain line every few seconds and when a tenth is done."""

    # A pilot takes several short jobs per getJob: those it holds but has not started yet are "sent", told apart
    # from the running ones so "running" never reads more than the pilots can run at once.
    RUNNING = ("starting", "running", "holding", "transferring", "merging")

    def __init__(self, total, out):
        self.total, self.out = total, out
        self.started = time.monotonic()
        self.bar = None
        self._last_line, self._last_done = 0.0, -1
        if out.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn
            from rich.table import Column

            # The counts first, never cut: on a narrow terminal only the description (the one column that may
            # wrap) gives way, onto a second line; the bar keeps a small fixed width at the end.
            fixed = Column(no_wrap=True)
            self.bar = RichProgress(TextColumn("[bold]jobs", table_column=fixed),
                                    MofNCompleteColumn(table_column=fixed), TimeElapsedColumn(table_column=fixed),
                                    TextColumn("{task.description}", table_column=Column()),
                                    BarColumn(bar_width=10, table_column=fixed),
                                    console=Console(file=out), transient=False)
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def text(self, state, pilots):
        jobs = state["jobs"]
        running = sum(jobs.get(s, 0) for s in self.RUNNING)
        waiting = sum(jobs.get(s, 0) for s in ("defined", "activated", "pending", "assigned"))
        failed = jobs.get("failed", 0)
        return (f"{running} running, {jobs.get('sent', 0)} taken by pilots, {waiting} waiting, "
                f"{failed} failed (retried), {pilots} pilots; task {state['task']}")

    def update(self, state, pilots):
        done = state["jobs"].get("finished", 0)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=self.text(state, pilots))
            return
        now = time.monotonic()
        tenth = done * 10 // max(1, self.total)
        if now - self._last_line >= 5 or tenth != self._last_done:
            self._last_line, self._last_done = now, tenth
            print(f"[{now - self.started:6.1f} s] {done}/{self.total} jobs finished; {self.text(state, pilots)}",
                  file=self.out, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
