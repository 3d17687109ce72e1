"""The job store's schema (SQLAlchemy Core tables). The Alembic migrations in `migrations/versions`
create exactly these tables; change both together (a new revision per change, never edit an old one).

  jobs        one row per job: state, config (JSON), attempt (the fencing token of a claim), owner
  stages      one row per (job, stage): state, output summary (JSON), error
  events      append-only log of transitions, stage changes and worker progress
  artifacts   objects a job wrote to storage: URI, sha256, size
  priors      the Stage I prior cache: key -> storage URI (+ who is building it)
  baselines   the FP baseline cache: key (model hash, task, settings) -> the FP result, reuse count
  schedulers  running schedulers and their heartbeats (the lease that reconciliation checks)
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()
_BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

jobs = Table(
    "jobs", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("model", String(1024), nullable=False),
    Column("method", String(32), nullable=False),
    Column("bits", String(16), nullable=False),
    Column("config_json", Text, nullable=True),
    Column("config_text", Text, nullable=True),
    Column("labels_json", Text, nullable=False, default="{}"),
    Column("storage_uri", String(2048), nullable=True),
    Column("sweep_id", String(32), nullable=True),
    Column("prior_key", String(64), nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("scheduler_id", String(64), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("reason", Text, nullable=True),
    Column("results_json", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("queued_at", DateTime, nullable=True),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Index("ix_jobs_state_created", "state", "created_at"),
    Index("ix_jobs_sweep", "sweep_id"),
)

stages = Table(
    "stages", metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("output_json", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
)

events = Table(
    "events", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("ts", DateTime, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("stage", String(32), nullable=True),
    Column("message", Text, nullable=False),
    Column("data_json", Text, nullable=True),
    Index("ix_events_job", "job_id", "id"),
)

artifacts = Table(
    "artifacts", metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("stage", String(32), nullable=False),
    Column("uri", String(2048), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

priors = Table(
    "priors", metadata,
    Column("key", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("uri", String(2048), nullable=True),
    Column("job_id", String(32), nullable=True),
    Column("metadata_json", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

baselines = Table(
    "baselines", metadata,
    Column("key", String(64), primary_key=True),
    Column("task", String(256), nullable=False),
    Column("model_hash", String(64), nullable=False),
    Column("result_json", Text, nullable=False),
    Column("job_id", String(32), nullable=True),
    Column("hits", Integer, nullable=False, default=0),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

schedulers = Table(
    "schedulers", metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("stopped_at", DateTime, nullable=True),
)
