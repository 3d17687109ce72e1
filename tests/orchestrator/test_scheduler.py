"""The scheduler with real stage functions (tests/orchestrator/sched_worker.py) on real databases:
stage order, artifacts and results; failures with one-line reasons; retry resuming after the last
succeeded stage; cancel; a scheduler killed mid-job and reconciled by the next one; two scheduler
processes sharing one PostgreSQL (and one SQLite) database run every job exactly once."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from faircalib.orchestrator.config import JobConfig
from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
from faircalib.orchestrator.store import JobState, JobStore
from faircalib.service.storage import fetch_tree, open_storage

HELPER = Path(__file__).with_name("sched_worker.py")
_spec = importlib.util.spec_from_file_location("fc_sched_worker", HELPER)
sw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sw)


def _cfg(tmp_path, i: int = 0) -> JobConfig:
    return JobConfig.from_dict({"model": "zoo:whatever", "method": "fp", "name": f"job{i}",
                                "storage": f"file://{tmp_path / 'artifacts'}"})


def _sched(store, registry, **opts) -> Scheduler:
    return Scheduler(store, registry=registry, options=SchedulerOptions(preflight=False, poll_s=0.05, **opts))


def test_stages_run_in_order_with_artifacts_and_results(sqlite_url, tmp_path):
    store = JobStore(sqlite_url)
    counts = tmp_path / "counts"
    job = store.create_job(_cfg(tmp_path))
    ran = _sched(store, sw.make_registry(str(counts))).run(once=True)
    assert ran == [job]
    row = store.get_job(job)
    assert row.state is JobState.SUCCEEDED and row.reason is None
    assert [(j, s) for j, s, _ in sw.executions(counts)] == [(job, "first"), (job, "second")]
    assert set(row.results) == {"first", "second"}
    assert [(s.name, s.state) for s in store.stages(job)] == [("first", "succeeded"), ("second", "succeeded"),
                                                              ("upload", "succeeded")]
    names = {a["name"] for a in store.artifacts(job)}
    assert {"first/digest.txt", "second/digest.txt", "job.json", "logs/job.log", "_manifest.json"} <= names
    got = fetch_tree(open_storage(row.storage_uri).child(job), tmp_path / "fetched")
    assert json.loads((tmp_path / "fetched/job.json").read_text())["results"] == row.results
    assert "first/digest.txt" in got["objects"]
    log = (tmp_path / "fetched/logs/job.log").read_text()
    assert "[first] stage: stage first: running" in log


def test_failure_then_retry_resumes_after_last_succeeded_stage(db_url, tmp_path):
    store = JobStore(db_url)
    counts, fail = tmp_path / "counts", tmp_path / "fail"
    fail.write_text("x")
    reg = sw.make_registry(str(counts), fail_file=str(fail))
    job = store.create_job(_cfg(tmp_path))
    _sched(store, reg).run(once=True)
    row = store.get_job(job)
    assert row.state is JobState.FAILED
    assert row.reason == "block 3: non-finite loss (inf); lower calibration.lr"
    assert [(s.name, s.state, s.error) for s in store.stages(job)][:2] == \
        [("first", "succeeded", None), ("second", "failed", row.reason)]
    fail.unlink()
    store.retry(job)
    _sched(store, reg).run(once=True)
    assert store.get_job(job).state is JobState.SUCCEEDED
    assert store.get_job(job).attempt == 2
    # "first" ran once (its artifacts were reused), "second" failed once then succeeded
    assert Counter(s for _, s, _ in sw.executions(counts)) == {"first": 1, "second-failed": 1, "second": 1}
    assert any("already succeeded" in e.message for e in store.events(job))


def test_internal_error_is_one_line_with_traceback_in_the_log(sqlite_url, tmp_path):
    store = JobStore(sqlite_url)
    crash = tmp_path / "crash"
    crash.write_text("x")
    job = store.create_job(_cfg(tmp_path))
    _sched(store, sw.make_registry(str(tmp_path / "c"), crash_file=str(crash))).run(once=True)
    row = store.get_job(job)
    assert row.state is JobState.FAILED
    assert row.reason == "internal error in stage second: ValueError: unexpected shape (3, 4)"
    log = (Path(os.environ["FAIRCALIB_HOME"]) / "work" / job / "logs/job.log").read_text()
    assert "Traceback (most recent call last)" in log
    # the log of a failed job is uploaded too, so `faircalib logs --file` works from anywhere
    assert open_storage(row.storage_uri).child(job).head("logs/job.log") is not None


def test_cancel_a_running_job(sqlite_url, tmp_path):
    store = JobStore(sqlite_url)
    block = tmp_path / "block"
    block.write_text("x")
    job = store.create_job(_cfg(tmp_path))
    sched = _sched(store, sw.make_registry(str(tmp_path / "c"), block_file=str(block)), cancel_check_s=0.1)
    t = threading.Thread(target=sched.run, kwargs={"once": True})
    t.start()
    deadline = time.monotonic() + 30
    while not any(e.message == "second: started" for e in store.events(job)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.request_cancel(job) is JobState.RUNNING
    t.join(30)
    row = store.get_job(job)
    assert row.state is JobState.CANCELLED and row.reason == "cancelled: stopped in stage second"
    assert [s.state for s in store.stages(job)] == ["succeeded", "failed", "pending"]


N_JOBS = 20  # enough for both schedulers to race on claims throughout (each job is 3 stages, ~0.1-0.5 s)


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_killed_scheduler_is_reconciled_and_the_job_resumes(sqlite_url, tmp_path):
    store = JobStore(sqlite_url)
    counts, block = tmp_path / "counts", tmp_path / "block"
    block.write_text("x")
    job = store.create_job(_cfg(tmp_path))
    proc = _spawn([sqlite_url, str(counts), "--block", str(block), "--lease", "2"])
    try:
        deadline = time.monotonic() + 60
        while not any(e.message == "second: started" for e in store.events(job)):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)  # the scheduler dies mid-stage: no cleanup, no stop record
        proc.wait(10)
    block.unlink()
    assert store.get_job(job).state is JobState.RUNNING  # nobody knows yet
    time.sleep(2.2)  # the dead scheduler's lease (2 s) runs out
    sched = _sched(store, sw.make_registry(str(counts)), lease_s=2)
    assert sched.start() == [job]
    sched.run(once=True)
    row = store.get_job(job)
    assert row.state is JobState.SUCCEEDED and row.attempt == 2
    assert Counter(s for _, s, _ in sw.executions(counts)) == {"first": 1, "second": 1}  # resumed, not redone
    msgs = [e.message for e in store.events(job) if e.kind == "state"]
    assert any(m.startswith("running -> queued: requeued: scheduler") for m in msgs)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_two_scheduler_processes_run_each_job_exactly_once(backend, tmp_path, request):
    url = request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(url)
    jobs = [store.create_job(_cfg(tmp_path, i)) for i in range(N_JOBS)]
    counts, go = tmp_path / "counts", tmp_path / "go"
    readies = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [_spawn([url, str(counts), "--ready", str(r), "--go", str(go)]) for r in readies]
    deadline = time.monotonic() + 90
    while not all(r.exists() for r in readies):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.stderr.read() for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.write_text("go")  # both claim from now on
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    ex = sw.executions(counts)
    per_job = Counter((j, s) for j, s, _ in ex)
    assert set(per_job) == {(j, s) for j in jobs for s in ("first", "second")}
    assert set(per_job.values()) == {1}  # every stage of every job ran exactly once
    ran = [j for o in outs for j in o["ran"]]
    assert sorted(ran) == sorted(jobs)
    assert all(o["ran"] for o in outs), "both schedulers should have taken some jobs"
    assert store.counts() == {"succeeded": N_JOBS}
    pids = {j: {pid for jj, _, pid in ex if jj == j} for j in jobs}
    assert all(len(p) == 1 for p in pids.values())  # a job's stages all ran in the process that claimed it


@pytest.mark.parametrize("on_interrupt", ["requeue", "cancel"])
def test_interrupt_hands_the_job_back_or_cancels_it_with_an_event(on_interrupt, db_url, tmp_path):
    """Scheduler.interrupt (what SIGINT / SIGTERM handlers call) stops the running job at its next stop
    check: `run` requeues it (finished stages kept), `submit --run` cancels it; either way recorded as the
    transition's event, and run() returns."""
    store = JobStore(db_url)
    block = tmp_path / "block"
    block.write_text("x")
    job = store.create_job(_cfg(tmp_path))
    sched = _sched(store, sw.make_registry(str(tmp_path / "c"), block_file=str(block)), on_interrupt=on_interrupt,
                   interrupt_origin="`faircalib run`")
    t = threading.Thread(target=sched.run)  # not --once: it would keep polling but for the interrupt
    t.start()
    deadline = time.monotonic() + 30
    while not any(e.message == "second: started" for e in store.events(job)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sched.interrupt("SIGINT")
    t.join(30)
    assert not t.is_alive()
    row = store.get_job(job)
    if on_interrupt == "requeue":
        assert row.state is JobState.QUEUED and row.reason == ("requeued: `faircalib run` was interrupted by SIGINT "
                                                               "in stage second; finished stages are kept")
        assert [s.state for s in store.stages(job)] == ["succeeded", "pending", "pending"]
        assert f"running -> queued: {row.reason}" in [e.message for e in store.events(job)]
    else:
        assert row.state is JobState.CANCELLED and row.reason.startswith("cancelled: `faircalib run` was interrupted "
                                                                         "by SIGINT in stage second")
        assert [(s.state, s.error) for s in store.stages(job)][1] == ("failed", "interrupted by SIGINT")
    assert store.live_schedulers(lease_s=30) == []  # it stopped (and said so)


@pytest.mark.parametrize("max_jobs", [2, None])
def test_max_jobs_runs_jobs_side_by_side(sqlite_url, tmp_path, max_jobs):
    """--max-jobs 2: both jobs are inside stage `second` at the same time (the block is lifted only once
    both got there), each job's log holds only its own lines. Without --max-jobs, stages of unknown
    resources (a custom registry) run one job at a time."""
    store = JobStore(sqlite_url)
    block = tmp_path / "block"
    block.write_text("x")
    jobs = [store.create_job(_cfg(tmp_path, i)) for i in range(2)]
    sched = _sched(store, sw.make_registry(str(tmp_path / "counts"), block_file=str(block)), max_jobs=max_jobs)
    inside: dict[str, float] = {}

    def lift():
        deadline = time.monotonic() + (60 if max_jobs else 4)
        while time.monotonic() < deadline and len(inside) < 2:
            for j in jobs:
                if j not in inside and any(e.message == "second: started" for e in store.events(j)):
                    inside[j] = time.monotonic()
            time.sleep(0.05)
        block.unlink()

    t = threading.Thread(target=lift)
    t.start()
    ran = sched.run(once=True)
    t.join(10)
    assert sorted(ran) == sorted(jobs)
    assert all(store.get_job(j).state is JobState.SUCCEEDED for j in jobs)
    assert sched.peak_concurrency == (2 if max_jobs else 1)
    assert len(inside) == (2 if max_jobs else 1)  # side by side, or one at a time
    for a, b in (jobs, jobs[::-1]):
        log = (Path(os.environ["FAIRCALIB_HOME"]) / "work" / a / "logs" / "job.log").read_text()
        assert a in log and b not in log


def test_heartbeat_comes_well_inside_the_lease():
    """The scheduler reconciles every lease_s; a heartbeat slower than the lease would requeue its own jobs."""
    from faircalib.orchestrator.scheduler import SchedulerOptions

    assert SchedulerOptions(lease_s=2).heartbeat_s == 0.5
    assert SchedulerOptions().heartbeat_s == 5.0  # default lease 30 s: the default heartbeat stands
    assert SchedulerOptions(lease_s=60, heartbeat_s=1).heartbeat_s == 1
