"""Where the service keeps its local state: $FAIRCALIB_HOME (default ~/.faircalib) holds the default
SQLite job database, per-job work directories and the embedded SeaweedFS server's data."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    path = Path(os.environ.get("FAIRCALIB_HOME") or Path.home() / ".faircalib").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
