"""A generic Ray actor pool that runs a job stage's work in shards, with bounded retries and progress.

Boundary: distribution only. What a shard computes is a `ShardTask` passed in (setup once per actor,
then one call per shard); this module never imports torch or faircalib algorithm code.

    results = run_sharded(items, ShardTask(setup=load_model, run=probe_shard, setup_kwargs={...}),
                          shard_size=16, n_workers=2, resources=WorkerResources(num_cpus=1, num_gpus=0.5),
                          max_retries=2, on_event=store_event)

- Items are cut into contiguous shards; results come back as a list in shard order, however the
  shards were scheduled, retried or finished, so merging is exact and order-independent.
- Actors are created with `max_restarts=max_retries`: an actor process that dies (OOM, SIGKILL, node
  loss) is restarted by Ray and its shard is resubmitted by this loop (to a healthy worker: a
  restarting one is pinged until it answers), at most `max_retries` times per shard. A shard that raises a FaircalibError (bad input: deterministic) fails at once; other
  exceptions are retried like crashes.
- Progress: shard code calls `report({...})`; events travel through a `ray.util.queue.Queue` to the
  driver, which passes them to `on_event` (the scheduler writes them to the store), together with the
  pool's own events (shard started/finished/retried, CPU fallback).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from faircalib.service.errors import PoolCancelled, WorkerError
from faircalib.workers.local_ray import init_ray_with_retry, is_loopback_address, loopback_only, start_local_ray

from faircalib.errors import FaircalibError

log = logging.getLogger(__name__)
Event = dict[str, Any]


@dataclass(frozen=True)
class WorkerResources:
    """Ray resource request per actor. num_gpus may be fractional (<= 1) to pack actors on one GPU."""
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0 or (self.num_gpus > 1 and self.num_gpus != int(self.num_gpus)):
            raise ValueError(f"invalid resources {self}: num_gpus must be in [0, 1] or whole")


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def resolve_resources(num_cpus: float, num_gpus: float) -> tuple[WorkerResources, str | None]:
    """The request to use on this cluster: GPUs fall back to 0 (CPU) when the cluster has none.
    Returns (resources, a note for the job's events when a fallback happened)."""
    if num_gpus > 0 and cluster_gpus() <= 0:
        return (WorkerResources(num_cpus, 0.0),
                f"no GPU in the Ray cluster; workers run on CPU (requested {num_gpus:g} GPU per worker)")
    return WorkerResources(num_cpus, num_gpus), None


@dataclass(frozen=True)
class ShardTask:
    """setup(**setup_kwargs) -> state, once per actor (e.g. load the model); run(state, items, report)
    -> result, once per shard. Both must be importable (or picklable) functions."""
    setup: Callable[..., Any] | None
    run: Callable[[Any, Sequence[Any], Callable[[Event], None]], Any]
    setup_kwargs: dict = field(default_factory=dict)
    name: str = "shard"


@ray.remote
class ShardWorker:
    """One pool actor. State from `setup` lives as long as the actor process (rebuilt after restart)."""

    def __init__(self, task: ShardTask, worker_index: int):
        self.task, self.index = task, worker_index
        self.state, self.ready = None, False

    def info(self) -> dict:
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(), "gpu_ids": ray.get_gpu_ids(),
                "worker": self.index}

    def run_shard(self, shard: int, items: list, attempt: int, queue) -> tuple[int, Any]:
        if not self.ready:
            self.state = self.task.setup(**self.task.setup_kwargs) if self.task.setup else None
            self.ready = True

        def report(data: Event) -> None:
            try:
                queue.put_nowait({"kind": "progress", "shard": shard, "attempt": attempt,
                                       "worker": self.index, **data})
            except Exception:  # noqa: BLE001 - progress is best effort; never fail a shard for it
                pass

        return shard, self.task.run(self.state, items, report)


def _short_cause(e: BaseException) -> str:
    """': <last error line>' of an actor death caused by an exception (e.g. in setup), else ''."""
    lines = [ln.strip() for ln in str(e).splitlines() if "Error" in ln and ln.strip()]
    return f": {lines[-1][:200]}" if lines and "creation task" in str(e) else ""


def make_shards(items: Sequence[Any], shard_size: int) -> list[list[Any]]:
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return [list(items[i:i + shard_size]) for i in range(0, len(items), shard_size)]


def run_sharded(items: Sequence[Any], task: ShardTask, *, shard_size: int, n_workers: int,
                resources: WorkerResources = WorkerResources(), max_retries: int = 2,
                on_event: Callable[[Event], None] | None = None, should_stop: Callable[[], bool] | None = None,
                poll_s: float = 0.25, restart_timeout_s: float = 300.0) -> list[Any]:
    """Run task over items in shards on up to n_workers actors; list of shard results in shard order.
    A worker that died is pinged until Ray has restarted it (up to restart_timeout_s) before it gets
    another shard, so a slow restart does not burn the shard's retries."""
    from ray.exceptions import RayActorError, RayTaskError
    from ray.util.queue import Empty, Queue

    emit = on_event or (lambda e: None)
    shards = make_shards(items, shard_size)
    if not shards:
        return []
    n_workers = max(1, min(n_workers, len(shards)))
    queue = Queue(actor_options={"num_cpus": 0})
    # The task travels inline in each actor's creation spec (it is small: functions by reference plus
    # their keyword arguments), so a restarted actor can always rebuild itself from the spec; an
    # object-store argument could be freed or lost before a restart. The progress queue's handle goes
    # with each shard call instead (as a constructor argument it would live in the object store).
    actors = [ShardWorker.options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                  max_restarts=max_retries, max_task_retries=0).remote(task, i)
              for i in range(n_workers)]
    emit({"kind": "pool", "message": f"{task.name}: {len(shards)} shards of <= {shard_size} on {n_workers} "
                                     f"workers ({resources.num_cpus:g} CPU, {resources.num_gpus:g} GPU each)"})
    results: dict[int, Any] = {}
    attempts = [0] * len(shards)
    pending = deque(range(len(shards)))
    idle = deque(range(n_workers))
    actor_failures = [0] * n_workers  # deaths per worker; Ray restarts each at most max_retries times
    inflight: dict[Any, tuple[int, int]] = {}  # ref -> (worker, shard)

    def drain() -> None:
        while True:
            try:
                emit(queue.get_nowait())
            except Empty:
                return
            except Exception:  # noqa: BLE001 - the queue actor itself is gone: nothing more to drain
                return

    pings: dict[Any, int] = {}            # ref of info() on a restarting worker -> worker
    reping: dict[int, float] = {}         # worker -> when to ping it again
    restart_deadline: dict[int, float] = {}
    live = set(range(n_workers))

    def recover(w: int) -> None:
        """Use worker w again once Ray has restarted it (it answers a ping); drop it if it cannot."""
        if actor_failures[w] > max_retries:
            live.discard(w)
            return
        restart_deadline.setdefault(w, time.monotonic() + restart_timeout_s)
        pings[actors[w].info.remote()] = w

    try:
        while pending or inflight or pings or reping:
            if not live:
                raise WorkerError(f"{task.name}: every worker died more than {max_retries} times or did not "
                                  f"restart within {restart_timeout_s:.0f}s")
            while idle and pending:
                w, s = idle.popleft(), pending.popleft()
                inflight[actors[w].run_shard.remote(s, shards[s], attempts[s], queue)] = (w, s)
            now = time.monotonic()
            for w, t in list(reping.items()):
                if t <= now:
                    del reping[w]
                    recover(w)
            if not pending and not inflight:
                break  # only restarting workers left and nothing to give them
            ready, _ = ray.wait(list(inflight) + list(pings), num_returns=1, timeout=poll_s)
            drain()
            if should_stop is not None and should_stop():
                raise PoolCancelled(f"{task.name}: cancelled with {len(results)}/{len(shards)} shards done")
            for ref in ready:
                if ref in pings:
                    w = pings.pop(ref)
                    try:
                        ray.get(ref)
                        restart_deadline.pop(w, None)
                        idle.append(w)  # restarted and healthy
                    except RayActorError:
                        if time.monotonic() > restart_deadline[w]:
                            live.discard(w)
                        else:
                            reping[w] = time.monotonic() + 0.5
                    continue
                w, s = inflight.pop(ref)
                try:
                    _, value = ray.get(ref)
                except RayActorError as e:  # the actor process died mid-shard
                    actor_failures[w] += 1
                    attempts[s] += 1
                    cause = f"worker {w} died ({type(e).__name__}{_short_cause(e)})"
                    if attempts[s] > max_retries:
                        raise WorkerError(f"{task.name} shard {s} failed after {attempts[s]} attempts: {cause}") from e
                    emit({"kind": "retry", "shard": s, "attempt": attempts[s],
                          "message": f"{task.name} shard {s}: {cause}; retry {attempts[s]}/{max_retries}"})
                    pending.appendleft(s)
                    recover(w)
                    continue
                except RayTaskError as e:  # the shard code raised
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    if isinstance(cause, FaircalibError):
                        raise type(cause)(str(cause)) from e  # bad input: retrying cannot help
                    attempts[s] += 1
                    if attempts[s] > max_retries:
                        raise WorkerError(f"{task.name} shard {s} failed after {attempts[s]} attempts: "
                                          f"{type(cause).__name__}: {cause}") from e
                    emit({"kind": "retry", "shard": s, "attempt": attempts[s],
                          "message": f"{task.name} shard {s}: {type(cause).__name__}: {cause}; "
                                     f"retry {attempts[s]}/{max_retries}"})
                    pending.appendleft(s)
                    idle.append(w)
                    continue
                results[s] = value
                idle.append(w)
                emit({"kind": "shard_done", "shard": s, "done": len(results), "total": len(shards),
                      "message": f"{task.name}: {len(results)}/{len(shards)} shards done"})
        drain()
        return [results[s] for s in range(len(shards))]
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
        try:
            ray.kill(queue.actor, no_restart=True)
        except Exception:  # noqa: BLE001
            pass


def run_single(task: ShardTask, item: Any, *, resources: WorkerResources = WorkerResources(),
               max_retries: int = 2, on_event: Callable[[Event], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> Any:
    """One item on one dedicated actor (Stage II calibration, one evaluation), same retry/progress rules."""
    return run_sharded([item], task, shard_size=1, n_workers=1, resources=resources, max_retries=max_retries,
                       on_event=on_event, should_stop=should_stop)[0]


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` (a running cluster: 'auto', 'ray://host:10001', 'host:6379') or start a
    local Ray instance (loopback only, private token, state under $FAIRCALIB_HOME, reaped with this
    process: faircalib.workers.local_ray), unless this process is already connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    keep_sigterm = None  # a SIGTERM handler this process installed itself (the scheduler's) survives ray.init
    if threading.current_thread() is threading.main_thread() and callable(signal.getsignal(signal.SIGTERM)):
        keep_sigterm = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    if address and address.startswith("ray://"):
        ray.init(address=address)  # Ray Client: the cluster's own settings apply
    elif address:
        if is_loopback_address(address):  # a loopback-only Ray on this machine (e.g. another scheduler's)
            loopback_only()
        ray.init(address=address, log_to_driver=False)
    else:
        start_local_ray(num_cpus=num_cpus)
    if keep_sigterm is not None:  # ray.init replaced it with its own (exit at once)
        signal.signal(signal.SIGTERM, keep_sigterm)
    log.info("ray ready in %.1fs: %s", time.monotonic() - t0, ray.cluster_resources())
