"""``python -m monitor``: the same as the ``creator-monitor`` console script."""

from __future__ import annotations

import sys

from monitor.cli.main import main

sys.exit(main())
