"""`python -m hanzocloud` is the `hanzocloud` command."""

from __future__ import annotations

import sys

from hanzocloud.cli import main

sys.exit(main())
