"""Where the service keeps its local state: $FAIRCALIB_HOME (default ~/.faircalib) holds the default
SQLite job database, per-job work directories and the embedded SeaweedFS server's data."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    path = Path(os.environ.get("FAIRCALIB_HOME") or Path.home() / ".faircalib").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


UNIX_SOCKET_MAX = 100  # AF_UNIX paths are limited to 107 bytes on Linux (103 on macOS); keep a margin


def short_path(directory: Path, longest_name: int = 24) -> Path:
    """`directory` when sockets named up to `longest_name` characters fit in it; else a short symlink to
    it in the system temp directory (the files still live in `directory`, e.g. under $FAIRCALIB_HOME)."""
    import hashlib
    import tempfile

    directory = Path(directory)
    if len(str(directory)) + 1 + longest_name <= UNIX_SOCKET_MAX:
        return directory
    link = Path(tempfile.gettempdir()) / f"fc-{hashlib.sha256(str(directory).encode()).hexdigest()[:10]}"
    if not (link.is_symlink() and os.readlink(link) == str(directory)):
        link.unlink(missing_ok=True)
        link.symlink_to(directory, target_is_directory=True)
    return link
