"""The ``minipanda`` command line: ``serve`` and ``token`` locally, everything else over the HTTP API."""
from minipanda.cli.commands import main

__all__ = ["main"]
