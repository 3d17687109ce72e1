"""Probe actor work (Stage I): load the FP teacher once per actor, then run `faircalib.probe.probe_shard`
on ranges of the global probe set and return the shard's `PositionPrior` (per-sample vectors keyed by
global prompt index), which the driver merges exactly with `PositionPrior.merge`.

Boundary: a thin wrapper over `faircalib.probe`; the prior math lives there.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def setup_probe(model: str, probe_config: dict, model_hash: str, threads: int = 1,
                dtype: str = "auto") -> dict[str, Any]:
    """probe_config: a faircalib.probe.ProbeConfig as `to_dict()`; dtype: JobConfig.resources.dtype."""
    from faircalib.workers.actor import prepare_actor

    from faircalib.workers.models import load_cached

    from faircalib.errors import DataError
    from faircalib.probe import ProbeConfig

    device = prepare_actor(threads)
    loaded = load_cached(model, device, dtype)  # warm: loaded once per worker process
    if loaded.tokenizer is None:
        raise DataError(f"model {loaded.source!r} ships no tokenizer; Stage I needs one to tokenize probe prompts")
    return {"m": loaded, "cfg": ProbeConfig.from_dict(probe_config), "model_hash": model_hash, "device": device}


def run_probe_ranges(state: dict, ranges: list[tuple[int, int]], report: Callable[[dict], None]) -> list:
    """ranges: [(start, stop)] of global prompt indices, each start a multiple of the probe batch size."""
    import os

    import ray

    from faircalib.probe import probe_shard

    m, cfg = state["m"], state["cfg"]
    out = []
    for start, stop in ranges:
        def progress(e: dict, start=start) -> None:
            # event/part/done/total: the rows of this range done so far, out of the whole probe set (the
            # CLI sums the parts into one bar per job)
            report({"message": f"probe rows {start + e.get('done', 0)}/{cfg.n_samples} (shard from {start})",
                    "event": "probe_batch", "part": start, "done": e.get("done"), "total": cfg.n_samples,
                    "rows_done": e.get("done"), "rows": e.get("total"), "start": start, "pid": os.getpid(),
                    "node_id": ray.get_runtime_context().get_node_id()})

        out.append(probe_shard(m.model, m.tokenizer, cfg, start, stop, model_hash=state["model_hash"],
                               progress=progress, device=state["device"]))
    return out
