"""Sealing a job: before the final manifest, every recorded object is read back from the bucket (real
SeaweedFS and file://); a corrupted object (even one whose metadata still claims the right hash) is
repaired from the job's local copy, or the job fails naming it; a job whose earlier stage's object was
corrupted while it ran still succeeds with artifacts identical to what its stages produced."""
from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from pathlib import Path

import pytest
from faircalib.orchestrator.config import JobConfig
from faircalib.service.errors import StorageError
from faircalib.orchestrator.fetch import fetch_job
from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
from faircalib.orchestrator.seal import verify_recorded
from faircalib.service.storage import MANIFEST, S3Storage, StorageOptions, open_storage, upload_tree
from faircalib.orchestrator.store import JobStore

_spec = importlib.util.spec_from_file_location("fc_sched_worker", Path(__file__).with_name("sched_worker.py"))
sw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sw)


def _corrupt(storage, key: str) -> None:
    """Overwrite the object's bytes but keep its metadata (at-rest damage the upload skip cannot see)."""
    if isinstance(storage, S3Storage):
        head = storage.client.head_object(Bucket=storage.bucket, Key=storage._key(key))
        storage.client.put_object(Bucket=storage.bucket, Key=storage._key(key), Body=b"garbage",
                                  Metadata=head.get("Metadata", {}))
    else:
        storage._path(key).write_bytes(b"garbage")


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path):
    if request.param == "file":
        return open_storage(f"file://{tmp_path / 'store'}/j")
    return S3Storage(request.getfixturevalue("s3_env"), "j", StorageOptions(attempts=3, backoff_s=0.1))


def test_verify_recorded_repairs_from_local_copies_or_names_the_object(storage, tmp_path):
    local = tmp_path / "work"
    (local / "stage" / "sub").mkdir(parents=True)
    (local / "stage" / "a.bin").write_bytes(b"a" * 1000)
    (local / "stage" / "sub" / "b.txt").write_text("b")
    up = upload_tree(storage.child("stage"), local / "stage")
    recorded = {f"stage/{k}": o for k, o in up["objects"].items()}
    recorded[f"stage/{MANIFEST}"] = up["manifest_object"]
    assert verify_recorded(storage, recorded, local) == []
    for key in ("stage/a.bin", f"stage/{MANIFEST}"):
        _corrupt(storage, key)
    events = []
    assert verify_recorded(storage, recorded, local, emit=events.append) == [f"stage/{MANIFEST}", "stage/a.bin"]
    assert storage.get_bytes("stage/a.bin") == b"a" * 1000 and len(events) == 2
    assert "no longer matches what this job uploaded" in events[0] and "re-uploaded from the job's local copy" in events[0]
    assert hashlib.sha256(storage.get_bytes(f"stage/{MANIFEST}")).hexdigest() == up["manifest_object"]["sha256"]
    _corrupt(storage, "stage/sub/b.txt")
    (local / "stage" / "sub" / "b.txt").write_text("changed locally too")
    with pytest.raises(StorageError, match=r"stage/sub/b.txt no longer matches what this job uploaded .*no intact "
                                           r"local copy is left to repair it; the artifacts cannot be sealed"):
        verify_recorded(storage, recorded, local)
    storage.delete("stage/sub/b.txt")
    with pytest.raises(StorageError, match="stage/sub/b.txt is missing from the bucket"):
        verify_recorded(storage, recorded, local)


def test_object_corrupted_while_the_job_runs_is_repaired_at_the_seal(s3_env, sqlite_url, tmp_path):
    store = JobStore(sqlite_url)
    block = tmp_path / "block"
    block.write_text("x")
    cfg = JobConfig.from_dict({"model": "zoo:x", "method": "fp", "name": "s", "storage": f"s3://{s3_env}/jobs"})
    job = store.create_job(cfg)
    sched = Scheduler(store, registry=sw.make_registry(str(tmp_path / "counts"), block_file=str(block)),
                      options=SchedulerOptions(preflight=False, poll_s=0.05))
    t = threading.Thread(target=sched.run, kwargs={"once": True})
    t.start()
    deadline = time.monotonic() + 60
    while not any(e.message == "second: started" for e in store.events(job)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    bucket = S3Storage(s3_env, f"jobs/{job}", StorageOptions(attempts=3, backoff_s=0.1))
    good = bucket.get_bytes("first/digest.txt")
    _corrupt(bucket, "first/digest.txt")  # stage "first" finished and uploaded it; "second" is running
    block.unlink()
    t.join(60)
    row = store.get_job(job)
    assert row.state.value == "succeeded", row.reason
    assert any(e.kind == "repair" and "first/digest.txt no longer matches" in e.message for e in store.events(job))
    assert bucket.get_bytes("first/digest.txt") == good
    got = fetch_job(store, row, tmp_path / "out")  # verified against the job store
    assert (tmp_path / "out" / "first" / "digest.txt").read_bytes() == good and got.objects >= 5
