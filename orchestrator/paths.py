"""Where the service keeps its local state: $FAIRCALIB_HOME (default ~/.faircalib) holds the default
SQLite job database, per-job work directories and the embedded SeaweedFS server's data."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    path = Path(os.environ.get("FAIRCALIB_HOME") or Path.home() / ".faircalib").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_url() -> str:
    """FAIRCALIB_DB if set, else a SQLite file under $FAIRCALIB_HOME."""
    return os.environ.get("FAIRCALIB_DB") or f"sqlite:///{home() / 'jobs.db'}"


def work_dir(job_id: str) -> Path:
    path = home() / "work" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path
