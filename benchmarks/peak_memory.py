"""Peak resident memory of a stretch of work in this process (Linux /proc), for the memory benchmarks:

    base = reset_peak()          # VmHWM := VmRSS; returns that RSS in bytes
    ...work...
    added = peak_bytes() - base  # the most resident memory the work added
"""
from __future__ import annotations

from pathlib import Path


def status_bytes(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM, ...) in bytes."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def reset_peak() -> int:
    """Reset the peak counter (VmHWM) to the current RSS -> that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_bytes("VmRSS")


def peak_bytes() -> int:
    return status_bytes("VmHWM")
