"""The SQL job store: jobs and their state machine, stages, events, artifacts, the prior cache and
scheduler leases. SQLite file by default, PostgreSQL by URL (`postgresql+psycopg://...`).

Boundary: persistence and concurrency control only. Nothing here runs a stage or touches storage.

State machine (one `transition()` does every change, as a compare-and-set UPDATE). Every move belongs
to a named action, and a transition made for an action (`action="retry"`) must be one of its moves:

    claim    queued -> running                      cancel   queued | running -> cancelled
    finish   running -> succeeded | failed | cancelled
    requeue  running -> queued (reconciliation of a dead scheduler, or a scheduler handing its job back)
    retry    failed | cancelled -> queued           (succeeded is final)

So `retry` of a running job is refused by the state machine itself, not by its callers.

`attempt` is the fencing token: a claim increments it, and every later write by the claiming
scheduler (stage changes, the final transition) includes `attempt = :mine`, so a scheduler whose job
was reconciled away cannot overwrite the new owner's work.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from faircalib.orchestrator import db
from faircalib.orchestrator.errors import InvalidTransition, JobNotFound, StoreError, TransitionConflict
from faircalib.orchestrator.redact import (
    redact_message,
    redact_text,
    redact_url,
    redact_urls_in,
    split_url,
    userinfo_parts,
)
from sqlalchemy import Connection, and_, create_engine, event, func, insert, or_, select, text, update
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 7243001  # pg_advisory_xact_lock key: one migrator at a time


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


Q, R, S, F, C = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
ACTIONS: dict[str, frozenset[tuple[JobState, JobState]]] = {
    "claim": frozenset({(Q, R)}),
    "cancel": frozenset({(Q, C), (R, C)}),
    "finish": frozenset({(R, S), (R, F), (R, C)}),
    "requeue": frozenset({(R, Q)}),
    "retry": frozenset({(F, Q), (C, Q)}),
}
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    src: frozenset(b for moves in ACTIONS.values() for a, b in moves if a is src) for src in JobState}
RETRYABLE = frozenset(a for a, _ in ACTIONS["retry"])
STAGE_STATES = ("pending", "running", "succeeded", "failed")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def mask_url(url: str) -> str:
    """The database URL with any password replaced by ***, safe for logs, errors and rows (redacted on
    the parsed URL: an unescaped "@" or ":" in a password does not leak its tail)."""
    return redact_url(url)


def parse_db_url(url: str) -> URL:
    """A database URL as SQLAlchemy's URL object, its userinfo split at the last "@" (redact.split_url),
    so a password with an unescaped "@" is passed whole; StoreError (one line, masked) if malformed."""
    from sqlalchemy.exc import ArgumentError

    hint = "use sqlite:///PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB (percent-encode @ : / in passwords)"
    parts = split_url(str(url))
    if parts is None:
        raise StoreError(f"job database URL {mask_url(str(url))!r} is not a URL; {hint}")
    scheme, userinfo, rest = parts
    try:
        u = make_url(f"{scheme}://{rest}")
        if u.get_backend_name() != "sqlite" and not u.host:
            raise ValueError("no host")
    except (ArgumentError, ValueError) as e:
        raise StoreError(f"job database URL {mask_url(str(url))!r} is malformed ({_first_line(e)}); {hint}") from None
    if userinfo is not None:
        user, password = userinfo_parts(userinfo)
        u = u.set(username=user or None, password=password)
    return u


@dataclass(frozen=True)
class JobRow:
    id: str
    name: str
    state: JobState
    model: str
    method: str
    bits: str
    config_json: str | None
    config_text: str | None
    labels: dict
    storage_uri: str | None
    sweep_id: str | None
    prior_key: str | None
    attempt: int
    scheduler_id: str | None
    cancel_requested: bool
    reason: str | None
    results: dict | None
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def config(self):
        from faircalib.orchestrator.config import JobConfig

        if self.config_json is None:
            raise StoreError(f"job {self.id} has no valid configuration (rejected at submit: {self.reason})")
        return JobConfig.from_json(self.config_json)

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("config_json", "config_text")}
        d["state"] = self.state.value
        for k, v in d.items():
            if isinstance(v, datetime):
                d[k] = v.isoformat() + "Z"
        return d


@dataclass(frozen=True)
class StageRow:
    job_id: str
    name: str
    position: int
    state: str
    attempt: int
    output: dict | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class EventRow:
    id: int
    job_id: str
    ts: datetime
    kind: str
    stage: str | None
    message: str
    data: dict | None


@dataclass(frozen=True)
class PriorRow:
    key: str
    state: str
    uri: str | None
    job_id: str | None
    metadata: dict | None
    updated_at: datetime


def _job(row) -> JobRow:
    m = row._mapping
    return JobRow(
        id=m["id"], name=m["name"], state=JobState(m["state"]), model=m["model"], method=m["method"],
        bits=m["bits"], config_json=m["config_json"], config_text=m["config_text"],
        labels=json.loads(m["labels_json"] or "{}"), storage_uri=m["storage_uri"], sweep_id=m["sweep_id"],
        prior_key=m["prior_key"], attempt=m["attempt"], scheduler_id=m["scheduler_id"],
        cancel_requested=bool(m["cancel_requested"]), reason=m["reason"],
        results=json.loads(m["results_json"]) if m["results_json"] else None,
        created_at=m["created_at"], updated_at=m["updated_at"], queued_at=m["queued_at"],
        started_at=m["started_at"], finished_at=m["finished_at"])


def _stage(row) -> StageRow:
    m = row._mapping
    return StageRow(job_id=m["job_id"], name=m["name"], position=m["position"], state=m["state"],
                    attempt=m["attempt"], output=json.loads(m["output_json"]) if m["output_json"] else None,
                    error=m["error"], started_at=m["started_at"], finished_at=m["finished_at"])


def stored_text(text: str | None) -> str | None:
    """A job or sweep file as the store keeps it: credentials replaced by *** (redact.redact_text), with a
    first line saying so when anything was replaced. Raw secrets never reach the database."""
    if text is None:
        return None
    red, n = redact_text(text)
    return red if n == 0 else f"# faircalib: {n} credential value(s) replaced by *** before storing\n{red}"


def _dumps(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, sort_keys=True, default=str)


def _make_engine(url: str) -> Engine:
    u = parse_db_url(url)
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":  # default to psycopg 3 (the postgres extra), not psycopg2
            u = u.set(drivername="postgresql+psycopg")
        try:
            return create_engine(u, pool_pre_ping=True, pool_size=4, max_overflow=4)
        except ModuleNotFoundError as e:
            raise StoreError(f"PostgreSQL job database {mask_url(url)} needs a driver ({e.name} is missing); "
                             "install it with: pip install 'faircalib[postgres]'") from e
        except ArgumentError as e:  # e.g. an unknown +driver
            raise StoreError(f"job database {mask_url(url)}: {_first_line(e)}; use postgresql+psycopg://...") from None
    if u.get_backend_name() != "sqlite":
        raise StoreError(f"job database {mask_url(url)}: unsupported backend {u.get_backend_name()!r}; "
                         "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    if u.database and u.database != ":memory:":
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(u, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA journal_mode=WAL")  # racing first openers: JobStore.migrate retries "locked"
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Take the write lock up front: two schedulers' claims serialise instead of failing on a
        # read->write lock upgrade (SQLITE_BUSY_SNAPSHOT), which busy_timeout cannot wait out.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def default_db_url() -> str:
    """FAIRCALIB_DB if set, else a SQLite file under $FAIRCALIB_HOME."""
    from faircalib.service.paths import home

    return os.environ.get("FAIRCALIB_DB") or f"sqlite:///{home() / 'jobs.db'}"


class JobStore:
    """All reads and writes of the job database. Thread-safe (one engine, a connection per call)."""

    def __init__(self, url: str | None = None, *, migrate: bool = True):
        self.url = url or default_db_url()
        self.url_masked = mask_url(self.url)
        self.engine = _make_engine(self.url)
        self._password = self.engine.url.password
        self.is_postgres = self.engine.dialect.name == "postgresql"
        if migrate:
            self.migrate()

    # ------------------------------------------------------------ setup
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; safe with concurrent openers)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        try:
            for attempt in range(20):
                try:
                    with self.engine.begin() as conn:
                        if self.is_postgres:
                            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                        cfg.attributes["connection"] = conn
                        command.upgrade(cfg, "head")
                    break
                except OperationalError as e:  # SQLite: switching a new file to WAL or the migration's write
                    # lock can fail at once ("database is locked", no busy wait) when first openers race
                    if self.is_postgres or "locked" not in str(e.orig) or attempt == 19:
                        raise
                    time.sleep(0.1 * (attempt + 1))
        except OperationalError as e:
            raise StoreError(f"cannot open job database {self.url_masked}: {self._scrub(_first_line(e.orig))}") from e
        except SQLAlchemyError as e:
            raise StoreError(f"cannot migrate job database {self.url_masked}: {self._scrub(_first_line(e))}") from e

    def _scrub(self, message: str) -> str:
        """A driver's error text without the password (or any URL's password) in it."""
        message = redact_urls_in(message)
        return message.replace(self._password, "***") if self._password else message

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ jobs
    def create_job(self, config, *, config_text: str | None = None, sweep_id: str | None = None,
                   prior_key: str | None = None) -> str:
        """Insert a validated JobConfig as a queued job; returns its id."""
        job_id = new_job_id()
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(insert(db.jobs).values(
                id=job_id, name=config.name, state=Q.value, model=config.model, method=config.method,
                bits=config.bits, config_json=config.to_json(), config_text=stored_text(config_text),
                labels_json=_dumps(dict(config.labels)), storage_uri=config.storage, sweep_id=sweep_id,
                prior_key=prior_key, attempt=0, cancel_requested=False, created_at=now, updated_at=now,
                queued_at=now))
            self._event(conn, job_id, "state", f"submitted as {config.name!r}: queued")
        return job_id

    def record_rejected(self, reason: str, *, config_text: str | None, name: str = "rejected",
                        model: str = "?", method: str = "?", bits: str = "?", sweep_id: str | None = None) -> str:
        """A job that failed validation at submit: a failed row keeping the raw input and the reason."""
        job_id = new_job_id()
        now = utcnow()
        reason = redact_message(reason)
        name, model, method, bits = (redact_message(str(v)) for v in (name, model, method, bits))
        with self.engine.begin() as conn:
            conn.execute(insert(db.jobs).values(
                id=job_id, name=str(name)[:100], state=F.value, model=str(model)[:1024], method=str(method)[:32],
                bits=str(bits)[:16], config_json=None, config_text=stored_text(config_text), labels_json="{}",
                sweep_id=sweep_id, attempt=0, cancel_requested=False, reason=reason, created_at=now,
                updated_at=now, finished_at=now))
            self._event(conn, job_id, "error", f"rejected at submit: {reason}")
        return job_id

    def get_job(self, job_id: str) -> JobRow:
        with self.engine.connect() as conn:
            row = conn.execute(select(db.jobs).where(db.jobs.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"no job {job_id!r} in {self.url_masked}; list jobs with `faircalib status`")
        return _job(row)

    def resolve(self, prefix: str) -> str:
        """A full job id from a unique prefix of it."""
        with self.engine.connect() as conn:
            ids = conn.execute(select(db.jobs.c.id).where(db.jobs.c.id.startswith(prefix, autoescape=True))
                               .limit(3)).scalars().all()
        if not ids:
            raise JobNotFound(f"no job {prefix!r} in {self.url_masked}; list jobs with `faircalib status`")
        if len(ids) > 1:
            raise JobNotFound(f"job id prefix {prefix!r} is ambiguous ({', '.join(ids)}, ...); give more characters")
        return ids[0]

    def resolve_sweep(self, prefix: str) -> str:
        """A full sweep id from a unique prefix of it."""
        with self.engine.connect() as conn:
            ids = conn.execute(select(db.jobs.c.sweep_id).where(db.jobs.c.sweep_id.startswith(prefix, autoescape=True))
                               .distinct().limit(3)).scalars().all()
        if not ids:
            raise JobNotFound(f"no sweep {prefix!r} in {self.url_masked}; `faircalib sweep FILE` prints the ids")
        if len(ids) > 1:
            raise JobNotFound(f"sweep id prefix {prefix!r} is ambiguous ({', '.join(ids)}, ...); give more characters")
        return ids[0]

    def list_jobs(self, *, state: str | None = None, sweep_id: str | None = None, limit: int = 100) -> list[JobRow]:
        q = select(db.jobs).order_by(db.jobs.c.created_at.desc(), db.jobs.c.id).limit(limit)
        if state:
            q = q.where(db.jobs.c.state == state)
        if sweep_id:
            q = q.where(db.jobs.c.sweep_id == sweep_id)
        with self.engine.connect() as conn:
            return [_job(r) for r in conn.execute(q)]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.jobs.c.state, func.count()).group_by(db.jobs.c.state)).all()
        return {s: n for s, n in rows}

    def transition(self, job_id: str, expected: JobState | str, new: JobState | str, *,
                   reason: str | None = None, attempt: int | None = None, scheduler_id: str | None = None,
                   action: str | None = None, conn: Connection | None = None) -> JobRow:
        """Move a job from `expected` to `new` with one compare-and-set UPDATE; raises InvalidTransition
        for a move the table forbids (or, with `action`, that is not one of that action's moves) and
        TransitionConflict when the job is no longer in `expected` (or, with `attempt`, was claimed
        again since)."""
        expected, new = JobState(expected), JobState(new)
        if new not in TRANSITIONS[expected]:
            allowed = ", ".join(sorted(s.value for s in TRANSITIONS[expected])) or "none (terminal)"
            raise InvalidTransition(f"job {job_id}: {expected.value} -> {new.value} is not allowed; "
                                    f"from {expected.value}: {allowed}")
        if action is not None and (expected, new) not in ACTIONS[action]:
            moves = ", ".join(sorted(f"{a.value} -> {b.value}" for a, b in ACTIONS[action]))
            raise InvalidTransition(f"job {job_id}: {action} does not move {expected.value} -> {new.value}; "
                                    f"{action} moves only {moves}")
        if conn is None:
            with self.engine.begin() as conn:
                return self.transition(job_id, expected, new, reason=reason, attempt=attempt,
                                       scheduler_id=scheduler_id, action=action, conn=conn)
        now = utcnow()
        values: dict[str, Any] = {"state": new.value, "updated_at": now, "reason": reason}
        if new is R:
            values.update(started_at=now, finished_at=None, attempt=db.jobs.c.attempt + 1,
                          scheduler_id=scheduler_id, cancel_requested=False)
        elif new is Q:
            values.update(queued_at=now, finished_at=None, scheduler_id=None, cancel_requested=False)
        else:
            values.update(finished_at=now)
        cond = [db.jobs.c.id == job_id, db.jobs.c.state == expected.value]
        if attempt is not None:
            cond.append(db.jobs.c.attempt == attempt)
        res = conn.execute(update(db.jobs).where(and_(*cond)).values(**values))
        if res.rowcount != 1:
            cur = conn.execute(select(db.jobs.c.state, db.jobs.c.attempt).where(db.jobs.c.id == job_id)).first()
            if cur is None:
                raise JobNotFound(f"no job {job_id!r} in {self.url_masked}")
            raise TransitionConflict(
                f"job {job_id}: expected {expected.value}" + (f" (attempt {attempt})" if attempt is not None else "")
                + f" but it is {cur.state} (attempt {cur.attempt}); {expected.value} -> {new.value} not applied")
        row = _job(conn.execute(select(db.jobs).where(db.jobs.c.id == job_id)).one())
        msg = f"{expected.value} -> {new.value}"
        if new is R:
            msg += f" (attempt {row.attempt}, scheduler {scheduler_id})"
        if reason:
            msg += f": {reason}"
        self._event(conn, job_id, "state", msg)
        return row

    def claim(self, scheduler_id: str, job_ids: Iterable[str] | None = None) -> JobRow | None:
        """Atomically take the oldest queued job for `scheduler_id` (queued -> running, attempt + 1),
        among `job_ids` when given (e.g. `faircalib quickstart` runs only its own job).
        PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so concurrent schedulers pick different jobs.
        SQLite: the transaction holds the write lock (BEGIN IMMEDIATE), so select + CAS are atomic."""
        only = None if job_ids is None else list(job_ids)
        for _ in range(8):
            with self.engine.begin() as conn:
                q = select(db.jobs.c.id, db.jobs.c.attempt).where(db.jobs.c.state == Q.value)
                if only is not None:
                    q = q.where(db.jobs.c.id.in_(only))
                q = q.order_by(db.jobs.c.created_at, db.jobs.c.id).limit(1)
                if self.is_postgres:
                    q = q.with_for_update(skip_locked=True)
                cand = conn.execute(q).first()
                if cand is None:
                    return None
                try:
                    return self.transition(cand.id, Q, R, attempt=cand.attempt, scheduler_id=scheduler_id,
                                           action="claim", conn=conn)
                except TransitionConflict:
                    continue  # someone else got it first (only without row locks); try the next one
        return None

    def next_queued(self, job_ids: Iterable[str] | None = None) -> JobRow | None:
        """The job `claim` would take next (a hint: another scheduler may take it first)."""
        q = select(db.jobs).where(db.jobs.c.state == Q.value)
        if job_ids is not None:
            q = q.where(db.jobs.c.id.in_(list(job_ids)))
        with self.engine.connect() as conn:
            r = conn.execute(q.order_by(db.jobs.c.created_at, db.jobs.c.id).limit(1)).first()
        return _job(r) if r is not None else None

    def request_cancel(self, job_id: str) -> JobState:
        """Cancel a queued job now; ask a running one to stop (its scheduler moves it to cancelled)."""
        job = self.get_job(job_id)
        if job.state is Q:
            try:
                return self.transition(job_id, Q, C, reason="cancelled by user", action="cancel").state
            except TransitionConflict:
                job = self.get_job(job_id)
        if job.state is R:
            with self.engine.begin() as conn:
                res = conn.execute(update(db.jobs).where(and_(db.jobs.c.id == job_id, db.jobs.c.state == R.value))
                                   .values(cancel_requested=True, updated_at=utcnow()))
                if res.rowcount == 1:
                    self._event(conn, job_id, "state", "cancel requested; the scheduler stops it at the next check")
                    return R
            job = self.get_job(job_id)
        raise InvalidTransition(f"job {job_id} is already {job.state.value}; nothing to cancel")

    def cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(db.jobs.c.cancel_requested).where(db.jobs.c.id == job_id)).scalar())

    def retry(self, job_id: str) -> JobRow:
        """failed/cancelled -> queued (the `retry` action); stages that succeeded are kept (their artifacts
        are reused). A queued, running or succeeded job is refused: InvalidTransition."""
        job = self.get_job(job_id)
        if job.config_json is None:
            raise InvalidTransition(f"job {job_id} was rejected at submit ({job.reason}); "
                                    "fix the job file and submit it again")
        if job.state not in RETRYABLE:
            why = {R: f"it is running (attempt {job.attempt}); cancel it first (faircalib cancel {job_id}) or "
                      "wait for it to end",
                   Q: "it is queued already", S: "it succeeded (a succeeded job is final; submit it again to rerun)"}
            raise InvalidTransition(f"job {job_id} cannot be retried: {why[job.state]}; only failed or cancelled "
                                    "jobs can be retried")
        with self.engine.begin() as conn:
            row = self.transition(job_id, job.state, Q, reason=f"retry (was {job.state.value}: {job.reason})"
                                  if job.reason else "retry", action="retry", conn=conn)
            conn.execute(update(db.stages).where(and_(db.stages.c.job_id == job_id,
                                                      db.stages.c.state != "succeeded"))
                         .values(state="pending", error=None, started_at=None, finished_at=None))
        return row

    def set_results(self, job_id: str, results: dict, *, attempt: int) -> None:
        with self.engine.begin() as conn:
            res = conn.execute(update(db.jobs).where(and_(db.jobs.c.id == job_id, db.jobs.c.attempt == attempt,
                                                          db.jobs.c.state == R.value))
                               .values(results_json=_dumps(results), updated_at=utcnow()))
            if res.rowcount != 1:
                raise TransitionConflict(f"job {job_id}: no longer running attempt {attempt}; results not written")

    def set_prior_key(self, job_id: str, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.jobs).where(db.jobs.c.id == job_id).values(prior_key=key))

    # ------------------------------------------------------------ stages
    def ensure_stages(self, job_id: str, names: Iterable[str]) -> list[StageRow]:
        """Create pending rows for the plan's stages (existing rows keep their state)."""
        names = list(names)
        with self.engine.begin() as conn:
            have = set(conn.execute(select(db.stages.c.name).where(db.stages.c.job_id == job_id)).scalars())
            for i, name in enumerate(names):
                if name not in have:
                    conn.execute(insert(db.stages).values(job_id=job_id, name=name, position=i, state="pending",
                                                          attempt=0))
        return self.stages(job_id)

    def stages(self, job_id: str) -> list[StageRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.stages).where(db.stages.c.job_id == job_id)
                                .order_by(db.stages.c.position)).all()
        return [_stage(r) for r in rows]

    def set_stage(self, job_id: str, name: str, state: str, *, attempt: int, output: dict | None = None,
                  error: str | None = None) -> None:
        """Change a stage of a running job; fenced by the job's `attempt` (TransitionConflict if lost)."""
        if state not in STAGE_STATES:
            raise ValueError(f"stage state {state!r}; allowed: {', '.join(STAGE_STATES)}")
        now = utcnow()
        values: dict[str, Any] = {"state": state, "error": error}
        if state == "running":
            values.update(started_at=now, finished_at=None, attempt=attempt)
        elif state in ("succeeded", "failed"):
            values.update(finished_at=now)
        if output is not None:
            values["output_json"] = _dumps(output)
        fence = select(db.jobs.c.id).where(and_(db.jobs.c.id == job_id, db.jobs.c.attempt == attempt,
                                                db.jobs.c.state == R.value)).exists()
        with self.engine.begin() as conn:
            res = conn.execute(update(db.stages).where(and_(db.stages.c.job_id == job_id, db.stages.c.name == name,
                                                            fence)).values(**values))
            if res.rowcount != 1:
                raise TransitionConflict(f"job {job_id}: stage {name!r} not updated; the job is no longer "
                                         f"running attempt {attempt} (reconciled or cancelled elsewhere)")
            msg = f"stage {name}: {state}" + (f": {error}" if error else "")
            self._event(conn, job_id, "stage", msg, stage=name)

    # ------------------------------------------------------------ events
    def add_event(self, job_id: str, kind: str, message: str, *, stage: str | None = None,
                  data: dict | None = None) -> None:
        with self.engine.begin() as conn:
            self._event(conn, job_id, kind, message, stage=stage, data=data)

    def _event(self, conn: Connection, job_id: str, kind: str, message: str, *, stage: str | None = None,
               data: dict | None = None) -> None:
        conn.execute(insert(db.events).values(job_id=job_id, ts=utcnow(), kind=kind, stage=stage,
                                              message=message, data_json=_dumps(data)))

    def events(self, job_id: str, *, after_id: int = 0, limit: int | None = None) -> list[EventRow]:
        q = (select(db.events).where(and_(db.events.c.job_id == job_id, db.events.c.id > after_id))
             .order_by(db.events.c.id))
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [EventRow(id=r.id, job_id=r.job_id, ts=r.ts, kind=r.kind, stage=r.stage, message=r.message,
                             data=json.loads(r.data_json) if r.data_json else None) for r in conn.execute(q)]

    # ------------------------------------------------------------ artifacts
    def add_artifacts(self, job_id: str, stage: str, objects: Iterable[tuple[str, str, str, int]]) -> None:
        """Record (name, uri, sha256, size) objects of a job (replacing same-name rows)."""
        now = utcnow()
        with self.engine.begin() as conn:
            for name, uri, sha, size in objects:
                conn.execute(db.artifacts.delete().where(and_(db.artifacts.c.job_id == job_id,
                                                              db.artifacts.c.name == name)))
                conn.execute(insert(db.artifacts).values(job_id=job_id, name=name, stage=stage, uri=uri,
                                                         sha256=sha, size=size, created_at=now))

    def artifacts(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.artifacts).where(db.artifacts.c.job_id == job_id)
                                .order_by(db.artifacts.c.name)).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------ prior cache
    def prior(self, key: str) -> PriorRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(db.priors).where(db.priors.c.key == key)).first()
        if r is None:
            return None
        return PriorRow(key=r.key, state=r.state, uri=r.uri, job_id=r.job_id,
                        metadata=json.loads(r.metadata_json) if r.metadata_json else None, updated_at=r.updated_at)

    def prior_begin(self, key: str, job_id: str, *, stale_s: float) -> tuple[str, PriorRow | None]:
        """Reserve building the prior `key` for `job_id`. Returns ("ready", row) when cached,
        ("mine", None) when this job must build it, ("busy", row) while another job builds it (a build
        whose heartbeat is older than stale_s, or that failed, is taken over)."""
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(db.priors).values(key=key, state="building", job_id=job_id, created_at=now,
                                                      updated_at=now))
            return "mine", None
        except IntegrityError:
            pass
        row = self.prior(key)
        if row is None:  # deleted in between: try once more
            return self.prior_begin(key, job_id, stale_s=stale_s)
        if row.state == "ready":
            return "ready", row
        if row.job_id == job_id or row.state == "failed" or row.updated_at < now - timedelta(seconds=stale_s):
            with self.engine.begin() as conn:
                res = conn.execute(update(db.priors).where(and_(db.priors.c.key == key,
                                                                db.priors.c.updated_at == row.updated_at,
                                                                db.priors.c.state != "ready"))
                                   .values(state="building", job_id=job_id, updated_at=now))
            if res.rowcount == 1:
                return "mine", None
            return self.prior_begin(key, job_id, stale_s=stale_s)
        return "busy", row

    def prior_touch(self, key: str, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.priors).where(and_(db.priors.c.key == key, db.priors.c.job_id == job_id,
                                                      db.priors.c.state == "building")).values(updated_at=utcnow()))

    def prior_finish(self, key: str, job_id: str, *, uri: str, metadata: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.priors).where(db.priors.c.key == key)
                         .values(state="ready", uri=uri, job_id=job_id, metadata_json=_dumps(metadata),
                                 updated_at=utcnow()))

    def prior_abandon(self, key: str, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.priors).where(and_(db.priors.c.key == key, db.priors.c.job_id == job_id,
                                                      db.priors.c.state == "building"))
                         .values(state="failed", updated_at=utcnow()))

    # ------------------------------------------------------------ FP baseline cache
    def baselines(self, keys: Iterable[str]) -> dict[str, dict]:
        """{key: FP result} of the cached keys among `keys`."""
        keys = list(keys)
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(db.baselines.c.key, db.baselines.c.result_json)
                                .where(db.baselines.c.key.in_(keys))).all()
        return {k: json.loads(v) for k, v in rows}

    def baseline_hit(self, keys: Iterable[str]) -> None:
        """Count one reuse of each key."""
        keys = list(keys)
        if keys:
            with self.engine.begin() as conn:
                conn.execute(update(db.baselines).where(db.baselines.c.key.in_(keys))
                             .values(hits=db.baselines.c.hits + 1, updated_at=utcnow()))

    def baseline_put(self, key: str, *, task: str, model_hash: str, result: dict, job_id: str) -> bool:
        """Store an FP result; False when the key is already cached (the first writer's result stays)."""
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(db.baselines).values(key=key, task=task, model_hash=model_hash,
                                                         result_json=_dumps(result), job_id=job_id, hits=0,
                                                         created_at=now, updated_at=now))
            return True
        except IntegrityError:
            return False

    def baseline_stats(self) -> dict[str, int]:
        """{"entries", "hits"} over the whole cache."""
        with self.engine.connect() as conn:
            n, hits = conn.execute(select(func.count(), func.coalesce(func.sum(db.baselines.c.hits), 0))
                                   .select_from(db.baselines)).one()
        return {"entries": int(n), "hits": int(hits)}

    # ------------------------------------------------------------ schedulers
    def register_scheduler(self) -> str:
        sid = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(insert(db.schedulers).values(id=sid, host=socket.gethostname()[:255], pid=os.getpid(),
                                                      started_at=now, heartbeat_at=now))
        return sid

    def heartbeat(self, scheduler_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.schedulers).where(db.schedulers.c.id == scheduler_id)
                         .values(heartbeat_at=utcnow()))

    def stop_scheduler(self, scheduler_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.schedulers).where(db.schedulers.c.id == scheduler_id)
                         .values(stopped_at=utcnow()))

    def live_schedulers(self, lease_s: float) -> list[str]:
        cutoff = utcnow() - timedelta(seconds=lease_s)
        with self.engine.connect() as conn:
            return list(conn.execute(select(db.schedulers.c.id).where(and_(
                db.schedulers.c.stopped_at.is_(None), db.schedulers.c.heartbeat_at >= cutoff))).scalars())

    def reconcile(self, lease_s: float) -> list[str]:
        """Requeue running jobs whose scheduler stopped or has not heartbeat within `lease_s`; their
        unfinished stages go back to pending (finished stages are kept and resumed from)."""
        cutoff = utcnow() - timedelta(seconds=lease_s)
        live = select(db.schedulers.c.id).where(and_(db.schedulers.c.stopped_at.is_(None),
                                                     db.schedulers.c.heartbeat_at >= cutoff))
        with self.engine.connect() as conn:
            orphans = conn.execute(select(db.jobs.c.id, db.jobs.c.attempt, db.jobs.c.scheduler_id).where(and_(
                db.jobs.c.state == R.value,
                or_(db.jobs.c.scheduler_id.is_(None), db.jobs.c.scheduler_id.not_in(live))))).all()
        requeued = []
        for job_id, attempt, owner in orphans:
            try:
                self.requeue(job_id, attempt=attempt,
                             reason=f"requeued: scheduler {owner} stopped or missed its {lease_s:.0f}s lease")
                requeued.append(job_id)
            except TransitionConflict:
                continue  # it finished or was reconciled by someone else meanwhile
        return requeued

    def requeue(self, job_id: str, *, attempt: int, reason: str) -> JobRow:
        """running (attempt `attempt`) -> queued, its running stage back to pending (finished stages are
        kept): reconciliation of a dead scheduler, or a scheduler handing back its job when interrupted."""
        with self.engine.begin() as conn:
            row = self.transition(job_id, R, Q, attempt=attempt, conn=conn, action="requeue", reason=reason)
            conn.execute(update(db.stages).where(and_(db.stages.c.job_id == job_id, db.stages.c.state == "running"))
                         .values(state="pending", started_at=None))
        return row


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__
