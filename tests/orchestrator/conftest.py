"""Fixtures for the job service tests: real SQLite files, a private PostgreSQL 15 cluster, a real
SeaweedFS S3 server with SigV4 credentials, one shared Ray session, and a tiny model directory."""
from __future__ import annotations

import os
import uuid

import pytest
from faircalib.orchestrator.testing import TEST_S3_KEY as S3_KEY
from faircalib.orchestrator.testing import TEST_S3_SECRET as S3_SECRET
from faircalib.orchestrator.testing import postgres_bin_dir, session_s3_port


@pytest.fixture(autouse=True)
def fc_home(tmp_path, monkeypatch):
    """Every test gets its own FAIRCALIB_HOME, no ambient S3/DB settings, and fast S3 retries."""
    home = tmp_path / "fchome"
    monkeypatch.setenv("FAIRCALIB_HOME", str(home))
    for var in ("FAIRCALIB_DB", "FAIRCALIB_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        # an in-process Ray connect sets RAY_AUTH_TOKEN_PATH (workers/local_ray.py) and it would leak into later
        # tests' subprocesses: setenv first so monkeypatch restores the variable's original state at teardown
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("FAIRCALIB_S3_ATTEMPTS", "3")
    monkeypatch.setenv("FAIRCALIB_S3_BACKOFF", "0.1")
    return home


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(scope="session")
def pg_cluster():
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install -y postgresql); "
                    ".ci/run installs them")
    from faircalib.orchestrator.testing import PrivatePostgres

    pg = PrivatePostgres().start()
    yield pg
    pg.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh database in the shared private cluster."""
    return pg_cluster.create_database(f"t_{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3 server (SeaweedFS `weed mini`) enforcing SigV4 with the test credentials."""
    from faircalib.service.seaweed import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), s3_port=session_s3_port(),
                           env={"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """Client environment for the seaweed fixture; returns a fresh bucket name (created)."""
    from faircalib.service.storage import S3Storage, StorageOptions

    monkeypatch.setenv("FAIRCALIB_S3_ENDPOINT", seaweed.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    bucket = f"fc-{uuid.uuid4().hex[:12]}"
    S3Storage(bucket, "", StorageOptions(attempts=3, backoff_s=0.1)).ensure_bucket()
    return bucket


@pytest.fixture
def job_dict():
    """job_dict(model, storage, **overrides): a small valid job (method fp: evaluate + upload)."""
    def make(model, storage, **overrides) -> dict:
        d = {"model": str(model), "method": "fp", "storage": storage,
             "evaluation": {"n": 2, "seq_len": 24}, "resources": {"eval_workers": 1, "gpus_per_worker": 0}}
        d.update(overrides)
        return d
    return make


os.environ.setdefault("RAY_AUTH_MODE", "disabled")
