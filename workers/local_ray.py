"""The local Ray instance a scheduler starts for itself (no --ray-address): private to this machine and
to the scheduler's lifetime.

- Loopback only: every Ray process (GCS, raylet, agents, workers, the driver) binds to 127.0.0.1. Ray
  advertises the host's address for a local node unless its cluster mode is off
  (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read once when ray is imported, so it is also set on the imported
  constants module); every process it starts gets --node-ip-address=127.0.0.1.
- Token auth with a private token: unless RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH are set, Ray is pointed
  at $FAIRCALIB_HOME/ray/auth_token, created with mode 0600 (Ray's own default, ~/.ray/auth_token, is
  written world-readable). RAY_AUTH_MODE is left to Ray (token by default; the user may disable it).
- State under $FAIRCALIB_HOME/ray: sessions, logs, sockets, spilled objects (via a short symlink when
  the path is too long for unix sockets).
- Workers at the scheduler's own priority: Ray starts its worker processes at nice 15 by default (so the
  driver and raylet stay responsive), but here the workers do all of a job's work, and at nice 15 any
  other busy process on the host starves them (a Dream-7B-shape service job stalled next to a benchmark).
  The local node starts them at nice 0 unless RAY_worker_niceness is set. A cluster joined with
  --ray-address keeps its own setting (`RAY_worker_niceness=0 ray start ...`, infra/README.md).
- No orphans: a reaper process (faircalib.workers.ray_reaper) ends every process of this Ray when the
  scheduler exits, SIGKILL included.
"""
from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
OWNER_VAR = "FAIRCALIB_RAY_OWNER"
_reaper: dict = {}  # the pipe's write end and the reaper process of this process's local Ray
NICENESS_VAR = "RAY_worker_niceness"  # Ray's own override of its worker niceness (default 15)
WORKER_NICENESS = 0  # the local node's workers run at the scheduler's priority (module docstring)
_SESSION_PATH_LEN = 64  # longest path Ray puts under its temp dir: /session_<date>_<pid>/sockets/plasma_store


def ray_dir() -> Path:
    from faircalib.service.paths import home

    path = home() / "ray"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_token_file(path: Path) -> Path:
    """A token file readable by its owner only (0600), created with a fresh random token if missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        if path.read_text().strip():
            return path
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path


def is_loopback_address(address: str) -> bool:
    """'127.0.0.1:6379', 'localhost:6379', '[::1]:6379' -> True."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    return host in ("localhost", "::1") or host.startswith("127.")


def loopback_only() -> None:
    """Make this process's Ray use 127.0.0.1 as its node address (for a new local node, or to join one
    that listens on loopback only: Ray would otherwise rewrite 127.0.0.1 to the host's address)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray read the variable at import: make it take effect now


def _private_token() -> None:
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return  # the user's own token source
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(private_token_file(ray_dir() / "auth_token"))
    try:  # drop a token the loader may have cached before the variable was set
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass


def start_reaper(mark: str) -> subprocess.Popen | None:
    """The reaper of the processes carrying `mark` ("NAME=VALUE" in their environment), started in its
    own session and tied to this process by a pipe. None where /proc is missing (not Linux)."""
    if not os.path.isdir("/proc"):
        return None
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != OWNER_VAR}
    proc = subprocess.Popen([sys.executable, "-m", "faircalib.workers.ray_reaper", mark], stdin=read_end,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
                            close_fds=True)
    os.close(read_end)
    _reaper.update(fd=write_end, proc=proc)  # held open (not inherited) for this process's lifetime
    return proc


def start_local_ray(num_cpus: int | None = None) -> dict:
    """ray.init of a new local node as described in the module docstring; returns what it set up."""
    from faircalib.service.paths import short_path

    loopback_only()
    _private_token()
    temp = short_path(ray_dir() / "sessions", longest_name=_SESSION_PATH_LEN)
    (ray_dir() / "sessions").mkdir(mode=0o700, exist_ok=True)
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    mark = f"{OWNER_VAR}={owner}"
    start_reaper(mark)
    os.environ[OWNER_VAR] = owner  # inherited by every process Ray starts now (and only by those)
    system = {} if NICENESS_VAR in os.environ else {"_system_config": {"worker_niceness": WORKER_NICENESS}}
    try:
        init_ray_with_retry(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp),
                            **system)
    finally:
        os.environ.pop(OWNER_VAR, None)
    return {"temp_dir": str(temp), "owner": owner, "token_path": os.environ.get("RAY_AUTH_TOKEN_PATH")}


def init_ray_with_retry(attempts: int = 3, **kwargs: Any) -> None:
    """ray.init(**kwargs) (re-exported by faircalib.workers.pool), retried when a local node fails to come up in time: Ray gives a starting
    raylet a fixed 30 s to register with its GCS, which a heavily loaded machine can miss."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(**kwargs)
            return
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == attempts:
                raise
            log.warning("local Ray node did not start in time (attempt %d/%d); retrying", attempt, attempts)
            ray.shutdown()
