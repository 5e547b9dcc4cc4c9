"""Where a server lives: its home directory and its default address.

Apart from :mod:`minipanda.server.process` so that the ``minipanda`` commands that only talk to a server over HTTP
(or print their help) find the home without importing the server.
"""
import os

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 25080


def home_dir(explicit=None):
    """--home, else $MINIPANDA_HOME, else ~/.minipanda."""
    return os.path.abspath(explicit or os.environ.get("MINIPANDA_HOME") or os.path.expanduser("~/.minipanda"))
