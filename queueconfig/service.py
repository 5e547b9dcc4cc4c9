"""What the long-running commands share beyond the queue file: a quiet end when the reader of their output goes
away, systemd's notify socket, and the settings file of ``minipanda serve`` and ``harvester run``.

queueconfig is the one package both the server and harvester import, and these belong to neither: they are how
each process is configured and run as a service (see docs/operations.md, "Running it for months").
"""
import functools
import os
import select
import socket
import sys


# ---- a closed pipe -----------------------------------------------------------------------------------------------

def stdout_reader_gone():
    """True when stdout is a pipe or socket whose reading end is closed (``cmd | head -1`` after head exits)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file descriptor behind stdout
        return False


def quiet_on_closed_pipe(main):
    """Wrap a command's ``main(argv)``: when the reader of stdout goes away (``minipanda job list | head -1``),
    stop at once, print nothing more and exit 0, as ``head`` asked for no more. A broken pipe elsewhere (a
    socket, a child's stdin) is a real error and is raised as it is."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            code = main(argv)
            sys.stdout.flush()  # a buffered tail is written here, inside the try, not at exit
            return code
        except BrokenPipeError:
            if not stdout_reader_gone():
                raise
            # Python flushes stdout once more at exit: point it at /dev/null so that flush has nowhere to fail.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return wrapped
