"""Verifying a job's objects before its final manifest seals it.

Every object the job store recorded for the job (the stages' uploads, with their sha256 and size) is
read back from the bucket and hashed. An object that was corrupted, rewritten or deleted since its stage
uploaded it is repaired from the job's local copy when that copy still matches the record (delete +
upload: the idempotent upload would skip an object whose metadata still claims the right hash), else
the job fails with a one-line reason naming the object. So a job that succeeded had every artifact
verified end to end at that moment; later damage is what `faircalib fetch` (verified against the same
records) reports.

Boundary: storage reads/writes of one job's prefix; no store writes (the caller records events).
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from faircalib.service.errors import StorageError
from faircalib.service.storage import Storage, sha256_file


def _remote(storage: Storage, key: str, scratch: Path) -> tuple[str, int] | None:
    """(sha256, size) of the object as the bucket serves it now, or None when it is missing."""
    target = scratch / "object"
    if storage.head(key) is None:
        return None
    storage.get_file(key, target)
    return sha256_file(target), target.stat().st_size


def _short(sha: str | None) -> str:
    return f"{sha[:12]}..." if sha else "none"


def verify_recorded(storage: Storage, recorded: dict[str, dict], local_root: Path,
                    emit: Callable[[str], None] | None = None) -> list[str]:
    """Check every {key: {"sha256", "size"}} of `recorded` in `storage`; repair from local_root/key when
    possible. Returns the repaired keys; StorageError naming the first object that cannot be repaired."""
    scratch = Path(local_root) / ".verify"
    scratch.mkdir(parents=True, exist_ok=True)
    repaired: list[str] = []
    try:
        for key, want in sorted(recorded.items()):
            expected = (want["sha256"], int(want["size"]))
            got = _remote(storage, key, scratch)
            if got == expected:
                continue
            what = "is missing from the bucket" if got is None else (
                f"no longer matches what this job uploaded (job store recorded sha256 {_short(expected[0])}, "
                f"{expected[1]} B; the bucket has {_short(got[0])}, {got[1]} B)")
            local = Path(local_root) / key
            if local.is_file() and local.stat().st_size == expected[1] and sha256_file(local) == expected[0]:
                storage.delete(key)
                storage.put_file(local, key, sha256=expected[0])
                if _remote(storage, key, scratch) == expected:
                    repaired.append(key)
                    if emit:
                        emit(f"{storage.url(key)} {what}: re-uploaded from the job's local copy")
                    continue
            raise StorageError(f"{storage.url(key)} {what}, and no intact local copy is left to repair it; "
                               "the artifacts cannot be sealed: resubmit the job")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return repaired
