"""``python -m queueconfig``: the same as the ``queueconfig`` command."""
import sys

from queueconfig.cli import main

sys.exit(main())
