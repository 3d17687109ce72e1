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
from collections.abc import Callable, Iterable, Sequence
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

    def key(self) -> str:
        """Equal for tasks whose setup builds the same state (a warm actor reuses it)."""
        import json

        fn = self.setup
        where = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}" if fn else "-"
        return f"{self.name}|{where}|{json.dumps(self.setup_kwargs, sort_keys=True, default=str)}"


def _states_capacity() -> int:
    try:
        return max(1, int(os.environ.get("FAIRCALIB_WORKER_STATES", "2")))
    except ValueError:
        return 2


@ray.remote
class ShardWorker:
    """One pool actor. Setup states live as long as the actor process (rebuilt after a restart), keyed
    by ShardTask.key(), the most recent FAIRCALIB_WORKER_STATES (default 2) of them: a warm actor
    (WarmPool) serves many stages and jobs, and the models their setups load are cached per process
    (faircalib.workers.models)."""

    def __init__(self, task: ShardTask | None, worker_index: int):
        from collections import OrderedDict

        self.task, self.index = task, worker_index
        self.states: OrderedDict[str, Any] = OrderedDict()

    def info(self) -> dict:
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(), "gpu_ids": ray.get_gpu_ids(),
                "worker": self.index, "node_id": ray.get_runtime_context().get_node_id()}

    def run_shard(self, shard: int, items: list, attempt: int, queue, task: ShardTask | None = None,
                  tag: str | None = None) -> tuple[int, Any, dict]:
        task = task or self.task
        key = task.key()
        warm = key in self.states
        if warm:
            self.states.move_to_end(key)
        else:
            self.states[key] = task.setup(**task.setup_kwargs) if task.setup else None
            while len(self.states) > _states_capacity():
                self.states.popitem(last=False)
        where = {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "warm": warm}

        def report(data: Event) -> None:
            try:
                queue.put_nowait({"kind": "progress", "shard": shard, "attempt": attempt,
                                  "worker": self.index, **({"run": tag} if tag else {}), **data})
            except Exception:  # noqa: BLE001 - progress is best effort; never fail a shard for it
                pass

        return shard, task.run(self.states[key], items, report), where


@dataclass
class _Slot:
    id: int
    actor: Any
    resources: WorkerResources


class WarmPool:
    """Long-lived ShardWorker actors shared by a scheduler's stages and jobs (several at once): actor
    start-up (a process, torch, faircalib) and each model load (faircalib.workers.models) are paid
    once per scheduler, not once per stage.

    - `acquire(n, resources)` gives between 1 and n actors with that Ray request: idle ones first (most
      recently used), new ones while every actor of this pool still fits the cluster's CPU / GPU totals
      (so concurrent jobs never wait on each other's idle actors); when nothing fits, the least
      recently used idle actor of another shape is stopped to make room, else it waits for a release.
    - `release(slots, broken=...)`: back to idle; broken ones (died, or busy with an abandoned shard)
      are stopped. At most `max_idle` idle actors are kept (least recently used stopped first).
    - One progress queue for all runs; events carry the run's tag and are routed to their run.
    """

    def __init__(self, *, max_idle: int = 8, max_restarts: int = 2):
        import threading

        self.max_idle, self.max_restarts = max_idle, max_restarts
        self._cond = threading.Condition()
        self._idle: dict[int, _Slot] = {}      # insertion order = least recently used first
        self._busy: dict[int, _Slot] = {}
        self._next = 0
        self._queue = None
        self._buffers: dict[str, list[Event]] = {}
        self.created = 0

    # -------------------------------------------------------- progress events
    def queue(self):
        with self._cond:
            if self._queue is None:
                from ray.util.queue import Queue

                self._queue = Queue(actor_options={"num_cpus": 0})
            return self._queue

    def open_run(self, tag: str) -> None:
        with self._cond:
            self._buffers[tag] = []

    def drain(self, tag: str) -> list[Event]:
        """This run's events (others' stay buffered for their runs)."""
        from ray.util.queue import Empty

        with self._cond:
            while True:
                try:
                    e = self._queue.get_nowait()
                except Empty:
                    break
                except Exception:  # noqa: BLE001 - the queue actor is gone
                    break
                buf = self._buffers.get(e.pop("run", None))
                if buf is not None:
                    buf.append(e)
            out, self._buffers[tag] = self._buffers.get(tag, []), []
            return out

    def close_run(self, tag: str) -> list[Event]:
        out = self.drain(tag)
        with self._cond:
            self._buffers.pop(tag, None)
        return out

    # -------------------------------------------------------- actors
    def _fits(self, res: WorkerResources, taking: Sequence[_Slot] = ()) -> bool:
        """One more actor `res` fits the cluster next to every actor of this pool (`taking`: the ones an
        acquire is handing out, not yet busy)."""
        total = ray.cluster_resources()
        live = [*self._idle.values(), *self._busy.values(), *taking]
        cpus = sum(s.resources.num_cpus for s in live) + res.num_cpus
        gpus = sum(s.resources.num_gpus for s in live) + res.num_gpus
        return cpus <= total.get("CPU", 0.0) + 1e-9 and gpus <= total.get("GPU", 0.0) + 1e-9

    def _create(self, res: WorkerResources) -> _Slot:
        actor = ShardWorker.options(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_restarts=self.max_restarts,
                                    max_task_retries=0).remote(None, self._next)
        slot = _Slot(self._next, actor, res)
        self._next += 1
        self.created += 1
        return slot

    def acquire(self, n: int, resources: WorkerResources, *, should_stop: Callable[[], bool] | None = None,
                wait_s: float = 0.25) -> list[_Slot]:
        got: list[_Slot] = []
        with self._cond:
            while True:
                for sid in reversed(list(self._idle)):
                    if len(got) < n and self._idle[sid].resources == resources:
                        got.append(self._idle.pop(sid))
                while len(got) < n and self._fits(resources, got):
                    got.append(self._create(resources))
                if len(got) < n and not got:  # nothing of ours fits: stop an idle actor of another shape
                    other = next((sid for sid, sl in self._idle.items() if sl.resources != resources), None)
                    if other is not None:
                        ray.kill(self._idle.pop(other).actor, no_restart=True)
                        continue
                if got or not (self._busy or self._idle):
                    if not got:  # the cluster cannot fit even one: let Ray queue it (as before)
                        got.append(self._create(resources))
                    for sl in got:
                        self._busy[sl.id] = sl
                    return got
                if should_stop is not None and should_stop():
                    raise PoolCancelled("cancelled while waiting for a worker")
                self._cond.wait(wait_s)

    def release(self, slots: Sequence[_Slot], broken: Iterable[int] = ()) -> None:
        broken = set(broken)
        with self._cond:
            for sl in slots:
                self._busy.pop(sl.id, None)
                if sl.id in broken:
                    ray.kill(sl.actor, no_restart=True)
                else:
                    self._idle[sl.id] = sl
            while len(self._idle) > self.max_idle:
                ray.kill(self._idle.pop(next(iter(self._idle))).actor, no_restart=True)
            self._cond.notify_all()

    def size(self) -> dict[str, int]:
        with self._cond:
            return {"idle": len(self._idle), "busy": len(self._busy), "created": self.created}

    def shutdown(self) -> None:
        with self._cond:
            for sl in [*self._idle.values(), *self._busy.values()]:
                try:
                    ray.kill(sl.actor, no_restart=True)
                except Exception:  # noqa: BLE001 - Ray may be gone already
                    pass
            self._idle.clear()
            self._busy.clear()
            if self._queue is not None:
                try:
                    ray.kill(self._queue.actor, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
                self._queue = None


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
                poll_s: float = 0.25, restart_timeout_s: float = 300.0, pool: WarmPool | None = None) -> list[Any]:
    """Run task over items in shards on up to n_workers actors; list of shard results in shard order.
    A worker that died is pinged until Ray has restarted it (up to restart_timeout_s) before it gets
    another shard, so a slow restart does not burn the shard's retries. With `pool`, the actors are
    the pool's warm ones (between 1 and n_workers, as many as are free) and go back to it afterwards;
    without, they are created for this call and stopped at its end."""
    import uuid

    from ray.exceptions import RayActorError, RayTaskError
    from ray.util.queue import Empty, Queue

    emit = on_event or (lambda e: None)
    shards = make_shards(items, shard_size)
    if not shards:
        return []
    n_workers = max(1, min(n_workers, len(shards)))
    tag = uuid.uuid4().hex[:12]
    slots: list[_Slot] = []
    if pool is not None:
        slots = pool.acquire(n_workers, resources, should_stop=should_stop)
        actors = [sl.actor for sl in slots]
        n_workers = len(actors)
        queue = pool.queue()
        pool.open_run(tag)
    else:
        queue = Queue(actor_options={"num_cpus": 0})
        # The task travels inline in each actor's creation spec (it is small: functions by reference
        # plus their keyword arguments), so a restarted actor can always rebuild itself from the spec;
        # an object-store argument could be freed or lost before a restart. The progress queue's handle
        # goes with each shard call instead (as a constructor argument it would live in the object store).
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
        if pool is not None:
            for e in pool.drain(tag):
                emit(e)
            return
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
                call = (s, shards[s], attempts[s], queue) + ((task, tag) if pool is not None else ())
                inflight[actors[w].run_shard.remote(*call)] = (w, s)
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
                    _, value, where = ray.get(ref)
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
                emit({"kind": "shard_done", "shard": s, "done": len(results), "total": len(shards), **where,
                      "message": f"{task.name}: {len(results)}/{len(shards)} shards done (shard {s} on node "
                                 f"{where['node_id'][:8]}, pid {where['pid']}{', warm' if where['warm'] else ''})"})
        drain()
        return [results[s] for s in range(len(shards))]
    finally:
        if pool is not None:
            busy = {w for w, _ in inflight.values()}  # abandoned shards (cancel, failure) still run there
            broken = {slots[w].id for w in range(n_workers) if actor_failures[w] or w not in live or w in busy}
            for e in pool.close_run(tag):
                emit(e)
            pool.release(slots, broken=broken)
        else:
            for a in actors:
                ray.kill(a, no_restart=True)
            try:
                ray.kill(queue.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass


def run_single(task: ShardTask, item: Any, *, resources: WorkerResources = WorkerResources(),
               max_retries: int = 2, on_event: Callable[[Event], None] | None = None,
               should_stop: Callable[[], bool] | None = None, pool: WarmPool | None = None) -> Any:
    """One item on one actor (Stage II calibration, one evaluation), same retry/progress rules."""
    return run_sharded([item], task, shard_size=1, n_workers=1, resources=resources, max_retries=max_retries,
                       on_event=on_event, should_stop=should_stop, pool=pool)[0]


_RAY_INIT_LOCK = threading.Lock()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` (a running cluster: 'auto', 'ray://host:10001', 'host:6379') or start a
    local Ray instance (loopback only, private token, state under $FAIRCALIB_HOME, reaped with this
    process: faircalib.workers.local_ray), unless this process is already connected. Thread-safe (a
    scheduler's jobs run side by side)."""
    if ray.is_initialized():
        return
    with _RAY_INIT_LOCK:
        if not ray.is_initialized():
            _connect_ray(address, num_cpus)


def _connect_ray(address: str | None, num_cpus: int | None) -> None:
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
