"""``python -m pilot`` and the zipapp's entry point."""
import sys

from pilot.cli import main

sys.exit(main())
