"""testbed/progress.py: the progress bar on a terminal keeps its counts whole, however narrow the terminal."""
import io
import re

import pytest

from testbed.progress import Progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    """What rich writes to, taken for a terminal."""

    def isatty(self):
        return True


def last_frame(out):
    """The bar's last drawn frame as plain text (rich redraws after a carriage return)."""
    return ANSI.sub("", out.getvalue()).rsplit("\r", 1)[-1]


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_the_counts_come_first_and_whole_at_any_width(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    out = Terminal()
    progress = Progress(1000, out)
    progress.update({"jobs": {"finished": 20, "running": 5, "sent": 12, "activated": 963, "failed": 3},
                     "task": "running"}, 6)
    progress.close()
    frame = last_frame(out)
    first_line = frame.splitlines()[0]
    assert len(first_line) <= columns, frame
    assert re.match(r"jobs +20/1000 ", first_line), frame
    # The description may wrap onto further lines, but nothing of it is cut.
    words = " ".join(word for word in frame.split() if not set(word) <= set("━╺╸"))
    assert "5 running, 12 taken by pilots, 963 waiting, 3 failed (retried), 6 pilots; task running" in words, frame
