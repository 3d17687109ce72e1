"""The scheduler's own local Ray, as `faircalib submit --run` / `faircalib run` start it (subprocesses,
no --ray-address): every process it started listens on loopback only (read from /proc: the TCP LISTEN
sockets of the scheduler and of every process carrying its Ray owner mark), the auth token file is
private (0600) and the session lives under $FAIRCALIB_HOME; SIGINT / SIGTERM of `submit --run` cancel
the running job with a recorded reason; and neither an interrupt nor SIGKILL of the scheduler leaves
any Ray process behind."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from faircalib.orchestrator.store import JobStore
from faircalib.orchestrator.testing import is_loopback, listening_sockets, processes_with_env
from faircalib.workers.local_ray import OWNER_VAR, WORKER_NICENESS

FAIRCALIB = Path(sys.executable).with_name("faircalib")
# long enough that the signal always lands mid-calibration (two blocks, 40 epochs each)
CALIB = {"data": "builtin:kjv:train", "n": 8, "seq_len": 48, "epochs": 40, "batch_size": 4}


def _job_file(tmp_path, model) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump({"model": str(model), "method": "flatquant", "storage": f"file://{tmp_path / 'art'}",
                                 "calibration": CALIB, "evaluation": {"n": 2, "seq_len": 24},
                                 "resources": {"gpus_per_worker": 0, "calibration_gpus": 0}}))
    return p


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's default: token auth
    env.pop("RAY_TMPDIR", None)
    return env


def _wait_for(store, predicate, proc, timeout=240.0):
    deadline = time.monotonic() + timeout
    while True:
        jobs = store.list_jobs()
        if jobs and predicate(store, jobs[0].id):
            return jobs[0].id
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the job did not get there in time"
        time.sleep(0.1)


def _calibrating(store, job) -> bool:
    return any(e.message == "calibration start" for e in store.events(job))


def _ray_processes(pid: int) -> list[int]:
    return processes_with_env(f"{OWNER_VAR}={pid}-")


def _assert_gone(pid: int, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while _ray_processes(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ray_processes(pid) == [], "Ray processes of the scheduler outlived it"


def _assert_loopback_and_private(pid: int, home: Path) -> None:
    ray_pids = _ray_processes(pid)
    socks = listening_sockets([pid, *ray_pids])
    names = {p: Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace") for p in socks}
    listening = {p: s for p, s in socks.items() if s}
    # the driver, gcs_server, raylet, the dashboard and runtime-env agents and the calibration worker
    assert len(listening) >= 5, (names, socks)
    assert any("gcs_server" in names[p] for p in listening) and any("raylet" in names[p] for p in listening)
    public = {names[p]: [a for a in s if not is_loopback(a[0])] for p, s in listening.items()}
    assert all(not bad for bad in public.values()), public
    token = home / "ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    raylet = next(p for p in listening if "raylet" in names[p])  # Ray's processes read that token file
    assert f"RAY_AUTH_TOKEN_PATH={token}".encode() in Path(f"/proc/{raylet}/environ").read_bytes().split(b"\0")
    assert list((home / "ray" / "sessions").glob("session_*/logs/raylet.out"))  # the session is under FAIRCALIB_HOME
    # Ray's workers ("ray::<actor>" processes) run at the scheduler's own priority, not 15 above it
    # (Ray's default worker niceness; workers/local_ray.py)
    workers = {p: os.getpriority(os.PRIO_PROCESS, p) for p in ray_pids
               if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::")}
    assert workers and set(workers.values()) == {os.getpriority(os.PRIO_PROCESS, pid) + WORKER_NICENESS}, workers


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_submit_run_interrupted_cancels_the_job_on_a_loopback_only_ray(sig, tmp_path, sqlite_url, tiny_model_dir,
                                                                       fc_home):
    store = JobStore(sqlite_url)
    proc = subprocess.Popen([str(FAIRCALIB), "submit", str(_job_file(tmp_path, tiny_model_dir)), "--run", "--db",
                             sqlite_url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        job = _wait_for(store, _calibrating, proc)
        _assert_loopback_and_private(proc.pid, fc_home)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, out
    row = store.get_job(job)
    assert row.state.value == "cancelled"
    assert row.reason == (f"cancelled: `faircalib submit --run` was interrupted by {name} in stage calibrate; "
                          f"`faircalib retry {job}` resumes after its last finished stage")
    assert f"interrupted by {name}: job {job} cancelled: {row.reason}" in out
    assert f"running -> cancelled: {row.reason}" in [e.message for e in store.events(job)]
    assert next((s.name, s.state, s.error) for s in store.stages(job)) == ("calibrate", "failed",
                                                                          f"interrupted by {name}")
    _assert_gone(proc.pid)


def test_killed_scheduler_leaves_no_ray_processes_and_is_reconciled(tmp_path, sqlite_url, tiny_model_dir):
    store = JobStore(sqlite_url)
    job = store.create_job(__import__("faircalib.orchestrator.config", fromlist=["JobConfig"]).JobConfig.from_dict(
        yaml.safe_load(_job_file(tmp_path, tiny_model_dir).read_text())))
    proc = subprocess.Popen([str(FAIRCALIB), "run", "--once", "--db", sqlite_url, "--lease-s", "2", "--heartbeat-s",
                             "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        _wait_for(store, _calibrating, proc)
        assert len(_ray_processes(proc.pid)) >= 4
    finally:
        proc.kill()  # SIGKILL: the scheduler runs no cleanup at all
        proc.wait(10)
    _assert_gone(proc.pid)  # the reaper took its Ray (agents included) down with it
    time.sleep(2.2)  # the dead scheduler's lease runs out
    assert store.reconcile(lease_s=2) == [job]
    assert store.get_job(job).state.value == "queued"
