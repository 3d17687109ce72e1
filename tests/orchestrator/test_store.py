"""The job store on SQLite files and on a private PostgreSQL cluster: migrations, the transition
table, compare-and-set races, claims, fencing, reconciliation, cancel/retry, the prior cache."""
from __future__ import annotations

import threading
import time
from itertools import product

import pytest
from faircalib.orchestrator.config import JobConfig
from faircalib.orchestrator.errors import InvalidTransition, JobNotFound, StoreError, TransitionConflict
from faircalib.orchestrator.store import TRANSITIONS, JobState, JobStore, mask_url

CFG = JobConfig.from_dict({"model": "zoo:tiny-llada", "method": "fp", "storage": "file:///tmp/fc-art"})


def _store_in(db_url, state: JobState) -> tuple[JobStore, str]:
    """A job driven into `state` through legal transitions only."""
    store = JobStore(db_url)
    job = store.create_job(CFG)
    if state is JobState.QUEUED:
        return store, job
    if state is JobState.CANCELLED:
        store.transition(job, "queued", "cancelled")
        return store, job
    store.claim("s1")
    if state is not JobState.RUNNING:
        store.transition(job, "running", state)
    return store, job


def test_migrations_idempotent_and_concurrent_open(db_url):
    errors = []

    def open_it():
        try:
            JobStore(db_url)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    store = JobStore(db_url)
    store.migrate()  # again: a no-op
    assert store.schema_revision() == "0002"  # 0002: the FP baseline cache
    assert store.baseline_put("k", task="fidelity", model_hash="h", result={"nll": 1.0}, job_id="j")
    assert not store.baseline_put("k", task="fidelity", model_hash="h", result={"nll": 2.0}, job_id="j2")
    store.baseline_hit(["k", "absent"])
    assert store.baselines(["k", "absent"]) == {"k": {"nll": 1.0}}  # the first writer's result stays
    assert store.baseline_stats() == {"entries": 1, "hits": 1}


@pytest.mark.parametrize("src, dst", list(product(list(JobState), list(JobState))))
def test_transition_table_is_enforced(sqlite_url, src, dst):
    store, job = _store_in(sqlite_url, src)
    if dst in TRANSITIONS[src]:
        row = store.transition(job, src, dst, reason="r")
        assert row.state is dst
        if dst.is_terminal():
            assert row.finished_at is not None
        if dst is JobState.RUNNING:
            assert row.attempt == 1 and row.started_at is not None
    else:
        with pytest.raises(InvalidTransition):
            store.transition(job, src, dst)
        assert store.get_job(job).state is src


def test_terminal_states_only_left_by_retry(db_url):
    store, job = _store_in(db_url, JobState.SUCCEEDED)
    for new in JobState:
        with pytest.raises(InvalidTransition, match="not allowed; from succeeded: none"):
            store.transition(job, "succeeded", new)
    store2, failed = _store_in(db_url, JobState.FAILED)
    with pytest.raises(InvalidTransition):
        store2.transition(failed, "failed", "running")
    assert store2.retry(failed).state is JobState.QUEUED


def test_stale_expected_state_conflicts_and_events_are_appended(db_url):
    store, job = _store_in(db_url, JobState.QUEUED)
    store.transition(job, "queued", "cancelled", reason="user")
    with pytest.raises(TransitionConflict, match="expected queued but it is cancelled"):
        store.transition(job, "queued", "running")
    msgs = [e.message for e in store.events(job) if e.kind == "state"]
    assert msgs == ["submitted as 'tiny-llada-fp': queued", "queued -> cancelled: user"]
    with pytest.raises(JobNotFound):
        store.transition("nope", "queued", "running")


def test_compare_and_set_race_has_one_winner(db_url):
    store = JobStore(db_url)
    jobs = [store.create_job(CFG) for _ in range(5)]
    wins: dict[str, list[str]] = {j: [] for j in jobs}
    barrier = threading.Barrier(8)

    def racer(i: int):
        s = JobStore(db_url)
        barrier.wait()
        for j in jobs:
            try:
                s.transition(j, "queued", "running", scheduler_id=f"r{i}")
                wins[j].append(f"r{i}")
            except TransitionConflict:
                pass

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(len(w) == 1 for w in wins.values()), wins
    for j in jobs:
        row = store.get_job(j)
        assert row.state is JobState.RUNNING and row.attempt == 1 and row.scheduler_id == wins[j][0]
        assert sum(e.message.startswith("queued -> running") for e in store.events(j)) == 1


def test_concurrent_claims_take_each_job_once(db_url):
    store = JobStore(db_url)
    jobs = {store.create_job(CFG) for _ in range(24)}
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(name: str):
        s = JobStore(db_url)
        while (row := s.claim(name)) is not None:
            with lock:
                claimed.append((row.id, name))

    threads = [threading.Thread(target=claimer, args=(f"c{i}",)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    ids = [c[0] for c in claimed]
    assert sorted(ids) == sorted(jobs) and len(set(ids)) == len(ids)
    assert store.counts() == {"running": 24}


def test_claim_can_be_restricted_to_given_jobs(sqlite_url):
    store = JobStore(sqlite_url)
    older, mine = store.create_job(CFG), store.create_job(CFG)
    assert store.claim("s1", job_ids=[]) is None
    assert store.claim("s1", job_ids=[mine]).id == mine  # the older queued job is not taken
    assert store.claim("s1", job_ids=[mine]) is None
    assert store.get_job(older).state is JobState.QUEUED
    assert store.claim("s1").id == older


def test_attempt_fences_stale_writers(db_url):
    store = JobStore(db_url)
    job = store.create_job(CFG)
    store.ensure_stages(job, ["evaluate", "upload"])
    first = store.claim("old")
    assert first.attempt == 1
    store.transition(job, "running", "queued", attempt=1, reason="reconciled")
    second = store.claim("new")
    assert second.attempt == 2
    with pytest.raises(TransitionConflict):
        store.set_stage(job, "evaluate", "succeeded", attempt=1, output={"x": 1})
    with pytest.raises(TransitionConflict):
        store.transition(job, "running", "succeeded", attempt=1)
    with pytest.raises(TransitionConflict):
        store.set_results(job, {"m": 1}, attempt=1)
    store.set_stage(job, "evaluate", "succeeded", attempt=2, output={"x": 2})
    assert store.stages(job)[0].output == {"x": 2}
    assert store.transition(job, "running", "succeeded", attempt=2).scheduler_id == "new"


def test_reconcile_requeues_jobs_of_dead_schedulers_only(db_url):
    store = JobStore(db_url)
    live, dead = store.register_scheduler(), store.register_scheduler()
    j_live, j_dead = store.create_job(CFG), store.create_job(CFG)
    assert store.claim(live).id == j_live
    assert store.claim(dead).id == j_dead
    store.ensure_stages(j_dead, ["evaluate", "upload"])
    store.set_stage(j_dead, "evaluate", "succeeded", attempt=1)
    store.set_stage(j_dead, "upload", "running", attempt=1)
    store.stop_scheduler(dead)
    assert store.reconcile(lease_s=30) == [j_dead]
    assert store.get_job(j_live).state is JobState.RUNNING
    row = store.get_job(j_dead)
    assert row.state is JobState.QUEUED and "requeued: scheduler" in row.reason
    assert [(s.name, s.state) for s in store.stages(j_dead)] == [("evaluate", "succeeded"), ("upload", "pending")]
    # a scheduler that stops heartbeating loses its lease
    time.sleep(1.2)
    store.heartbeat(dead)  # a stopped scheduler stays stopped
    assert store.reconcile(lease_s=1.0) == [j_live]
    assert store.live_schedulers(lease_s=30) == [live]


def test_cancel_and_retry(db_url):
    store = JobStore(db_url)
    queued = store.create_job(CFG)
    assert store.request_cancel(queued) is JobState.CANCELLED
    with pytest.raises(InvalidTransition, match="already cancelled; nothing to cancel"):
        store.request_cancel(queued)
    running = store.create_job(CFG)
    store.claim("s")
    assert store.request_cancel(running) is JobState.RUNNING
    assert store.cancel_requested(running)
    store.ensure_stages(running, ["evaluate", "upload"])
    store.set_stage(running, "evaluate", "succeeded", attempt=1, output={"m": 1})
    store.set_stage(running, "upload", "failed", attempt=1, error="boom")
    store.transition(running, "running", "cancelled", attempt=1, reason="cancelled")
    row = store.retry(running)
    assert row.state is JobState.QUEUED and not row.cancel_requested
    assert [(s.name, s.state) for s in store.stages(running)] == [("evaluate", "succeeded"), ("upload", "pending")]


def test_rejected_job_keeps_input_and_cannot_be_retried(db_url):
    store = JobStore(db_url)
    job = store.record_rejected("bits: 'w2' is not allowed", config_text="model: m\nbits: w2\n", model="m")
    row = store.get_job(job)
    assert row.state is JobState.FAILED and row.config_text == "model: m\nbits: w2\n"
    assert row.reason == "bits: 'w2' is not allowed"
    with pytest.raises(InvalidTransition, match="rejected at submit"):
        store.retry(job)


def test_prior_cache_protocol(db_url):
    store = JobStore(db_url)
    a, b = store.create_job(CFG), store.create_job(CFG)
    assert store.prior_begin("k1", a, stale_s=60) == ("mine", None)
    status, row = store.prior_begin("k1", b, stale_s=60)
    assert status == "busy" and row.job_id == a
    store.prior_abandon("k1", a)  # a failed build is taken over
    assert store.prior_begin("k1", b, stale_s=60) == ("mine", None)
    store.prior_finish("k1", b, uri="s3://x/priors/k1", metadata={"n": 4})
    status, row = store.prior_begin("k1", a, stale_s=60)
    assert status == "ready" and row.uri == "s3://x/priors/k1" and row.metadata == {"n": 4}
    assert store.prior_begin("k2", a, stale_s=0.5) == ("mine", None)
    time.sleep(1.1)  # builder silent past stale_s: taken over
    assert store.prior_begin("k2", b, stale_s=0.5) == ("mine", None)


def test_resolve_prefix_and_errors(sqlite_url):
    store = JobStore(sqlite_url)
    job = store.create_job(CFG)
    assert store.resolve(job[:6]) == job
    with pytest.raises(JobNotFound, match="no job 'zzz'"):
        store.resolve("zzz")


def test_credentials_are_masked():
    assert mask_url("postgresql+psycopg://fc:s3cret@db:5432/jobs") == "postgresql+psycopg://fc:***@db:5432/jobs"


def test_bad_database_url_is_one_line_without_password(pg_cluster):
    url = f"postgresql+psycopg://nobody:hunter2@127.0.0.1:{pg_cluster.port}/missing_db"
    with pytest.raises(StoreError) as e:
        JobStore(url)
    msg = str(e.value)
    assert "hunter2" not in msg and "\n" not in msg and msg.startswith("cannot open job database")
    with pytest.raises(StoreError, match="unsupported backend 'mysql'"):
        JobStore("mysql://u:p@h/db")


# ---------------------------------------------------------------- hardening (issue 16)
def test_retry_is_refused_unless_the_job_failed_or_was_cancelled(db_url):
    """Retry is the state machine's `retry` action (failed | cancelled -> queued): a running job is not
    requeued behind its scheduler's back (that ran attempt 1 and attempt 2 at once), nor a queued or a
    succeeded one; nothing about the job changes."""
    store, running = _store_in(db_url, JobState.RUNNING)
    before = store.events(running)
    with pytest.raises(InvalidTransition, match=r"cannot be retried: it is running \(attempt 1\); cancel it first"):
        store.retry(running)
    with pytest.raises(InvalidTransition, match="retry does not move running -> queued"):
        store.transition(running, "running", "queued", action="retry")
    row = store.get_job(running)
    assert (row.state, row.attempt) == (JobState.RUNNING, 1) and store.events(running) == before
    assert store.claim("s2", job_ids=[running]) is None  # no second scheduler can take it
    queued, done = store.create_job(CFG), store.create_job(CFG)
    store.claim("s3", job_ids=[done])
    store.transition(done, "running", "succeeded", attempt=1, action="finish")
    for job, state, why in ((queued, JobState.QUEUED, "it is queued already"),
                            (done, JobState.SUCCEEDED, "it succeeded")):
        with pytest.raises(InvalidTransition, match=why):
            store.retry(job)
        assert store.get_job(job).state is state
    # once it ended (here: failed), retry is allowed and the next claim is attempt 2
    store.transition(running, "running", "failed", attempt=1, reason="boom", action="finish")
    assert store.retry(running).state is JobState.QUEUED
    assert store.claim("s2", job_ids=[running]).attempt == 2


def test_actions_cover_exactly_the_transition_table():
    from faircalib.orchestrator.store import ACTIONS

    moves = {(a, b) for pairs in ACTIONS.values() for a, b in pairs}
    assert moves == {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert ACTIONS["retry"] == {(JobState.FAILED, JobState.QUEUED), (JobState.CANCELLED, JobState.QUEUED)}
    assert TRANSITIONS[JobState.SUCCEEDED] == frozenset()


def test_password_with_unescaped_at_and_colon_is_parsed_and_masked_whole(pg_cluster):
    """`u:Pa:ss@w0rd@host`: the userinfo ends at the last '@', so the password is `Pa:ss@w0rd` and the host
    is 127.0.0.1 (the private cluster trusts any password: the store really connects), and no part of
    the password appears in the masked URL or in a connection error."""
    from faircalib.orchestrator.store import parse_db_url

    db = pg_cluster.create_database("t_atpw")
    url = db.replace("postgresql+psycopg://fc@", "postgresql+psycopg://fc:Pa:ss@w0rd@")
    u = parse_db_url(url)
    assert (u.username, u.password, u.host, u.port) == ("fc", "Pa:ss@w0rd", "127.0.0.1", pg_cluster.port)
    store = JobStore(url)
    assert store.create_job(CFG) and store.url_masked == f"postgresql+psycopg://fc:***@127.0.0.1:{pg_cluster.port}/t_atpw"
    bad = url.replace(str(pg_cluster.port), "1")  # nothing listens there
    with pytest.raises(StoreError) as e:
        JobStore(bad)
    assert "fc:***@127.0.0.1:1/t_atpw" in str(e.value)
    for part in ("Pa", "ss", "w0rd"):
        assert part not in str(e.value)
    assert mask_url("postgresql://u:Pa:ss@w0rd@host/db") == "postgresql://u:***@host/db"


@pytest.mark.parametrize("url, expect", [
    ("foo", "'foo' is not a URL"),
    ("postgresql://u:pw@host:notaport/db", "is malformed (invalid literal for int()"),
    ("postgresql+nodriver://u:pw@host/db", "Can't load plugin: sqlalchemy.dialects:postgresql.nodriver"),
    ("postgresql:///db", "is malformed (no host)"),
    ("mysql://u:pw@h/db", "unsupported backend 'mysql'"),
])
def test_malformed_database_urls_are_one_line_errors(url, expect):
    with pytest.raises(StoreError) as e:
        JobStore(url)
    msg = str(e.value)
    assert expect in msg and "\n" not in msg and ":pw@" not in msg


def test_rejected_job_text_is_stored_without_its_secrets(db_url):
    """A rejected job file keeps its input for diagnosis, but credentials in it (secret-looking keys, URL
    passwords, AWS key ids) are replaced by *** before the row is written, in the text and the reason."""
    text = ("model: zoo:tiny-llada\nstorage: s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI@bucket/x\n"
            "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG\ndb_password: \"hunter 2\"\nlabels: {team: a, token: t0k3n}\n"
            "evaluation: {max_tokens: 64}\n")
    store = JobStore(db_url)
    job = store.record_rejected("storage: 's3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI@bucket/x' is not allowed",
                                config_text=text, model="zoo:tiny-llada")
    row = store.get_job(job)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "hunter 2", "t0k3n"):
        assert secret not in row.config_text and secret not in row.reason
    assert row.config_text.startswith("# faircalib: 5 credential value(s) replaced by *** before storing\n")
    assert "db_password: \"***\"" in row.config_text and "max_tokens: 64" in row.config_text
    assert "model: zoo:tiny-llada" in row.config_text and row.reason.startswith("storage: 's3://***:***@bucket/x'")
