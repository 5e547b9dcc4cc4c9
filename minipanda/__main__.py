import sys

from minipanda.cli import main

sys.exit(main())
