"""The Stage I prior cache: one prior per key, shared by every job (and sweep member) with that key.

The key is the library's own `PositionPrior.cache_key()` (faircalib.probe.probe_cache_key computes it
before probing): the model's weights (faircalib.models.weights_hash), the probe data and every probe
setting (docs/method.md §4). Stage II settings such as the floor are not part of it. The `priors`
table maps key -> storage URI; `obtain_prior` implements the protocol:

  ready  -> fetch it (checksums verified) and reuse it
  absent -> reserve it (insert 'building'), build it, upload it with its manifest, mark it ready
  busy   -> another job is building it: wait; take over if its builder stops heartbeating or fails
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faircalib.service.errors import JobCancelled
from faircalib.service.storage import fetch_tree, open_storage, upload_tree


def model_key(config, model_hash: str | None = None) -> str:
    """What a job's cached results (prior, FP baselines) depend on about its model: the weights hash, plus
    resources.dtype when the job sets one (a float32 teacher's prior and FP scores are not a bf16 one's)."""
    from faircalib.devices import resolve_dtype
    from faircalib.models import weights_hash

    h = model_hash or weights_hash(config.model)
    dtype = resolve_dtype(config.resources.dtype)
    return h if dtype is None else f"{h}:{str(dtype).removeprefix('torch.')}"


def job_prior_key(config, model_hash: str | None = None) -> str | None:
    """The prior cache key of a JobConfig (None when its method uses no prior); model_hash: weights_hash."""
    from faircalib.models import inspect_model
    from faircalib.probe import probe_cache_key

    if not config.uses_prior:
        return None
    policy = inspect_model(config.model)["default_policy"]
    return probe_cache_key(config.run.probe, policy, model_key(config, model_hash))


@dataclass(frozen=True)
class PriorResult:
    key: str
    local_dir: Path
    uri: str
    cached: bool
    metadata: dict


def obtain_prior(ctx, key: str, build: Callable[[Path], dict], *, stale_s: float = 120.0,
                 poll_s: float = 1.0) -> PriorResult:
    """Return the prior `key`, from the cache or by calling build(local_dir) -> metadata once.
    ctx: the StageContext (store, job, storage root, emit, should_stop, stage_dir)."""
    store, job_id = ctx.store, ctx.job.id
    local = ctx.stage_dir("probe") / "prior"
    storage = ctx.root_storage.child("priors", key)
    waited = False
    while True:
        status, row = store.prior_begin(key, job_id, stale_s=stale_s)
        if status == "ready":
            fetch_tree(open_storage(row.uri), local)
            ctx.emit("prior", f"reusing cached prior {key[:12]} from {row.uri}")
            return PriorResult(key, local, row.uri, True, row.metadata or {})
        if status == "mine":
            break
        if not waited:
            ctx.emit("prior", f"prior {key[:12]} is being built by job {row.job_id}; waiting for it")
            waited = True
        if ctx.should_stop():
            raise JobCancelled(f"job {job_id}: cancelled while waiting for prior {key[:12]}")
        time.sleep(poll_s)

    stop = threading.Event()

    def _touch() -> None:  # keep the reservation alive while building (others take over if we die)
        while not stop.wait(stale_s / 4):
            store.prior_touch(key, job_id)

    toucher = threading.Thread(target=_touch, daemon=True, name=f"prior-touch-{key[:8]}")
    toucher.start()
    try:
        local.mkdir(parents=True, exist_ok=True)
        metadata = build(local)
        upload_tree(storage, local, meta={"prior_key": key, **metadata})
        store.prior_finish(key, job_id, uri=storage.uri, metadata=metadata)
    except BaseException:
        store.prior_abandon(key, job_id)
        raise
    finally:
        stop.set()
        toucher.join(timeout=5)
    ctx.emit("prior", f"built prior {key[:12]} and stored it at {storage.uri}")
    return PriorResult(key, local, storage.uri, False, metadata)
