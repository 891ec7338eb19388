"""`python -m sia_monitor.cli` is `sia-monitor`."""

import sys

from sia_monitor.cli import main

sys.exit(main())
