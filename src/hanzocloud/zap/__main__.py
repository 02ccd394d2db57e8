"""`python -m hanzocloud.zap generate|check|fmt`: zapc run from the repository it is in."""

from __future__ import annotations

import sys
from pathlib import Path

from hanzocloud.zap.cli import find_root, run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], root=find_root(Path.cwd())))
