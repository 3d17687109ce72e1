"""`faircalib fetch`: a job's artifacts, downloaded and verified against the job store.

The reference is what the job store recorded when each object was uploaded (name, sha256, size per
artifact row, the top-level `_manifest.json` included), not the bucket's manifest: whoever can rewrite
an object can rewrite the manifest next to it, but not the job database. Every recorded object is
downloaded and hashed; the bucket's manifest is cross-checked against the store too. A disagreement
is reported as one line naming the object and which source disagrees (the object, the manifest, or
both rewritten together), and the bad copy is kept next to the good ones as `NAME.corrupt`.

Boundary: reads the store and the storage; writes only under DEST.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faircalib.service.errors import StorageError
from faircalib.service.storage import MANIFEST, open_storage, sha256_file


class FetchVerificationError(StorageError):
    """Fetched objects disagree with the job store's records; `problems` lists every disagreement."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Fetched:
    objects: int
    bytes: int
    uri: str


def check_dest(dest: Path, force: bool) -> None:
    """DEST must be new or empty unless `force` (then files in it are overwritten)."""
    if dest.exists() and not dest.is_dir():
        raise StorageError(f"DEST {dest} exists and is not a directory; choose a new or empty directory")
    if dest.is_dir() and not force:
        entries = sorted(p.name for p in dest.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise StorageError(f"DEST {dest} is not empty ({len(entries)} entries: {shown}); choose a new or "
                               "empty directory, or pass --force to overwrite the files in it")


def _short(sha: str | None) -> str:
    return f"{sha[:12]}..." if sha else "none"


def fetch_job(store, job, dest: str | Path, *, force: bool = False,
              progress: Callable[[dict], None] | None = None) -> Fetched:
    """Download every object the job store recorded for `job` into dest and verify each against the
    store's sha256 and size (and the bucket's manifest against the store). StorageError on the first
    disagreement, after every object was checked (the line gives the count). progress: faircalib.progress
    `transfer` events (direction "download", bytes done / total, after each object)."""
    dest = Path(dest)
    check_dest(dest, force)
    recorded = {a["name"]: a for a in store.artifacts(job.id)}
    manifest_rec = recorded.pop(MANIFEST, None)
    if manifest_rec is None:
        raise StorageError(f"job {job.id} ({job.state.value}) has not uploaded its artifacts yet (no manifest "
                           "recorded in the job store); wait for it to succeed or retry it")
    storage = open_storage(job.storage_uri).child(job.id)
    problems: list[str] = []

    raw = storage.get_bytes(MANIFEST)
    manifest_ok = hashlib.sha256(raw).hexdigest() == manifest_rec["sha256"] and len(raw) == manifest_rec["size"]
    try:
        listed = json.loads(raw).get("objects", {})
    except (json.JSONDecodeError, AttributeError):
        listed = {}
    if not manifest_ok:
        problems.append(f"{storage.url(MANIFEST)} is not the manifest this job uploaded (job store recorded "
                        f"sha256 {_short(manifest_rec['sha256'])}, the bucket has {_short(hashlib.sha256(raw).hexdigest())})")
    for key in sorted(set(listed) - set(recorded)):
        problems.append(f"the bucket's manifest lists {key}, which the job store never recorded for this job")

    dest.mkdir(parents=True, exist_ok=True)
    total, expected_total = 0, sum(int(a["size"]) for a in recorded.values())
    for key in sorted(recorded):
        want = recorded[key]
        if progress is not None and total:
            progress({"event": "transfer", "direction": "download", "key": key, "done": total,
                      "total": expected_total})
        target = dest / key
        try:
            storage.get_file(key, target)
        except StorageError as e:
            problems.append(f"{storage.url(key)}: {e}")
            continue
        got, size = sha256_file(target), target.stat().st_size
        total += size
        if got == want["sha256"] and size == want["size"]:
            continue
        claim = (listed.get(key) or {}).get("sha256")
        bad = target.with_name(target.name + ".corrupt")
        os.replace(target, bad)
        if claim == got:
            who = "the object and the bucket's manifest were both rewritten after upload"
        elif claim == want["sha256"]:
            who = "the object was modified or corrupted in the bucket (the manifest still agrees with the job store)"
        else:
            who = "the object differs from both the job store's record and the bucket's manifest"
        problems.append(f"{storage.url(key)}: {who}: job store recorded sha256 {_short(want['sha256'])} "
                        f"({want['size']} B) at upload, downloaded {_short(got)} ({size} B); kept as {bad}")
    if progress is not None:
        progress({"event": "transfer", "direction": "download", "key": MANIFEST, "done": expected_total,
                  "total": expected_total})
    if problems:
        more = f" ({len(problems)} disagreements in all)" if len(problems) > 1 else ""
        raise FetchVerificationError(f"fetch of job {job.id} failed verification against the job store: "
                                     f"{problems[0]}{more}; do not use {dest}", problems)
    (dest / MANIFEST).write_bytes(raw)
    return Fetched(objects=len(recorded), bytes=total, uri=storage.uri)
