"""`faircalib fetch` on a real SeaweedFS bucket: every object is verified against the sha256 the job store
recorded at upload, so a rewritten object is caught even when the bucket's manifest was rewritten with
it (which the manifest alone cannot catch), the disagreeing source is named in one line, and a non-empty
DEST is refused unless --force."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner
from faircalib.orchestrator.cli import main
from faircalib.orchestrator.config import JobConfig
from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
from faircalib.service.storage import MANIFEST, S3Storage, StorageOptions, fetch_tree
from faircalib.orchestrator.store import JobStore

_spec = importlib.util.spec_from_file_location("fc_sched_worker", Path(__file__).with_name("sched_worker.py"))
sw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sw)


def _fetch(*args, ok: bool = True):
    res = CliRunner().invoke(main, ["fetch", "--quiet", *map(str, args)], catch_exceptions=False)
    assert (res.exit_code == 0) == ok, res.output
    return res.output


def _succeeded_job(store, bucket, tmp_path) -> str:
    cfg = JobConfig.from_dict({"model": "zoo:x", "method": "fp", "name": "f", "storage": f"s3://{bucket}/jobs"})
    job = store.create_job(cfg)
    Scheduler(store, registry=sw.make_registry(str(tmp_path / "counts")),
              options=SchedulerOptions(preflight=False, poll_s=0.05)).run(once=True)
    assert store.get_job(job).state.value == "succeeded"
    return job


def test_fetch_verifies_against_the_job_store_and_names_the_disagreeing_source(s3_env, sqlite_url, tmp_path):
    store = JobStore(sqlite_url)
    job = _succeeded_job(store, s3_env, tmp_path)
    bucket = S3Storage(s3_env, f"jobs/{job}", StorageOptions(attempts=3, backoff_s=0.1))
    recorded = {a["name"]: a["sha256"] for a in store.artifacts(job)}
    key = "second/digest.txt"

    out = _fetch(job, tmp_path / "d1", "--db", sqlite_url)
    assert "all sha256 verified against the job store's upload records" in out
    assert hashlib.sha256((tmp_path / "d1" / key).read_bytes()).hexdigest() == recorded[key]

    # DEST must be empty unless --force
    out = _fetch(job, tmp_path / "d1", "--db", sqlite_url, ok=False)
    assert out.count("\n") == 1 and "is not empty" in out and "pass --force" in out
    (tmp_path / "d1" / key).write_text("local edit")
    _fetch(job, tmp_path / "d1", "--force", "--db", sqlite_url)
    assert hashlib.sha256((tmp_path / "d1" / key).read_bytes()).hexdigest() == recorded[key]

    original, manifest = bucket.get_bytes(key), bucket.get_bytes(MANIFEST)
    # 1. the object alone is rewritten: the manifest still agrees with the store
    bucket.put_bytes(key, b"tampered")
    out = _fetch(job, tmp_path / "d2", "--db", sqlite_url, ok=False)
    assert out.count("\n") == 1 and f"{bucket.url(key)}: the object was modified or corrupted in the bucket" in out
    assert f"job store recorded sha256 {recorded[key][:12]}..." in out
    assert (tmp_path / "d2" / "second" / "digest.txt.corrupt").read_bytes() == b"tampered"

    # 2. object and manifest rewritten together: the manifest check alone passes, the store's does not
    m = json.loads(manifest)
    m["objects"][key] = {"sha256": hashlib.sha256(b"tampered").hexdigest(), "size": len(b"tampered")}
    bucket.put_bytes(MANIFEST, json.dumps(m, indent=1, sort_keys=True).encode())
    fetch_tree(bucket, tmp_path / "bucket-only")  # what fetch used to trust: no complaint
    out = _fetch(job, tmp_path / "d3", "--db", sqlite_url, ok=False)
    assert f"{bucket.url(MANIFEST)} is not the manifest this job uploaded" in out
    assert "(2 disagreements in all)" in out
    problems = _problems(store, job, tmp_path / "d4")
    assert problems[1].startswith(f"{bucket.url(key)}: the object and the bucket's manifest were both rewritten "
                                  "after upload")

    # 3. restored: verified again
    bucket.put_bytes(key, original)
    bucket.put_bytes(MANIFEST, manifest)
    assert "all sha256 verified" in _fetch(job, tmp_path / "d5", "--db", sqlite_url)


def _problems(store, job, dest) -> list[str]:
    import pytest
    from faircalib.orchestrator.fetch import FetchVerificationError, fetch_job

    with pytest.raises(FetchVerificationError) as e:
        fetch_job(store, store.get_job(job), dest)
    return e.value.problems
