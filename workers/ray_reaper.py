"""The reaper of a scheduler's local Ray: a tiny process (stdlib only) started before `ray.init`, in its
own session, that blocks on a pipe from the scheduler. When the scheduler exits for any reason, SIGKILL
included, the kernel closes the pipe; the reaper then ends every process whose environment carries the
scheduler's owner mark (GCS, raylet, dashboard and runtime-env agents, workers: Ray started them all
with that mark), SIGTERM first and SIGKILL after a grace period, and exits. Ray's own fate-sharing
stops GCS and raylet with their parent, but its agents would linger for a minute or more.

    python -m faircalib.workers.ray_reaper OWNER_VAR=VALUE  < pipe
"""
from __future__ import annotations

import os
import signal
import sys
import time


def marked_pids(mark: bytes) -> list[int]:
    """Processes of this user whose initial environment holds `mark` (b"NAME=VALUE")."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if mark in env:
            out.append(int(entry))
    return out


def reap(mark: bytes, grace_s: float = 3.0) -> list[int]:
    """SIGTERM every marked process, SIGKILL those alive after grace_s; returns the pids it signalled."""
    pids = marked_pids(mark)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and marked_pids(mark):
        time.sleep(0.1)
    for pid in marked_pids(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def main(argv: list[str]) -> int:
    mark = argv[0].encode()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the terminal is the scheduler's to handle
    try:
        while sys.stdin.buffer.read(1 << 16):  # EOF: the scheduler is gone
            pass
    except OSError:
        pass
    if os.path.isdir("/proc"):
        reap(mark)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
