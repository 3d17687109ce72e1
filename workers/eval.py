"""Eval actor work: load the FP model (and, for quantized jobs, the quantized checkpoint) once per
actor, then run evaluation tasks with the library's entry point, `faircalib.eval.evaluate_models`
(fidelity and lm-eval tasks, FP and quantized with the same settings and decoding: the FP model's
defaults overridden by the job's evaluation.decoding). Separate actors from calibration.

Boundary: a thin wrapper over `faircalib.eval`; no metric is computed here. Results are
{task: {variant: result}} (variant "fp" / "quantized"), shaped for the job by orchestrator.results.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def setup_eval(model: str, eval_config: dict, threads: int = 1, checkpoint: dict | None = None,
               dtype: str = "auto") -> dict[str, Any]:
    """Per-actor state. eval_config: a faircalib.eval.EvalConfig as `to_dict()`. checkpoint: {"storage": URI,
    "dest": local dir, "storage_hint": endpoint_hint} of a quantized checkpoint (fetched and
    checksum-verified here, so actors on other nodes need no shared disk)."""
    import torch
    from faircalib.workers.actor import prepare_actor

    from faircalib.workers.models import load_cached

    from faircalib.eval.settings import EvalConfig
    from faircalib.models import model_decoding

    device = prepare_actor(threads)
    fp = load_cached(model, device, dtype)  # warm: shared with this process's probe / calibrate / other jobs
    state: dict[str, Any] = {"fp": fp, "cfg": EvalConfig.from_dict(eval_config), "device": device, "quantized": None,
                             "decoding": model_decoding(str(fp.source), fp.path).values, "threads": torch.get_num_threads()}
    if checkpoint is not None:
        from faircalib.service.storage import fetch_tree, open_storage

        from faircalib.checkpoint import load_quantized

        dest = Path(checkpoint["dest"])
        fetch_tree(open_storage(checkpoint["storage"], **(checkpoint.get("storage_hint") or {})), dest)
        state["quantized"] = load_quantized(dest, device=device).model
    return state


def run_eval(state: dict, items: list, report: Callable[[dict], None]) -> dict[str, dict]:
    """Run a shard of the job's evaluation.tasks: items are task names, or (task, cached FP result or
    None) pairs (the FP baseline cache); {task: {variant: result, ...}}."""
    from faircalib.eval.run import evaluate_models

    pairs = [(it, None) if isinstance(it, str) else (it[0], it[1]) for it in items]
    tasks = [t for t, _ in pairs]
    cached = {t: r for t, r in pairs if r is not None}
    fp = state["fp"]
    report({"message": f"evaluating {', '.join(tasks)} on {state['device']} ({state['threads']} thread(s))"
                       + (f"; FP baseline cached for {', '.join(cached)}" if cached else "")})
    last = {"t": -1e18}

    def forward(e: dict) -> None:  # request-row progress: at most one job event per 2 s (and each last one)
        if e.get("event") == "eval_requests":
            now = time.monotonic()
            if now - last["t"] < 2.0 and e.get("done") != e.get("total"):
                return
            last["t"] = now
        report(e)

    return evaluate_models(fp.model, fp.tokenizer, state["cfg"], quantized=state["quantized"], tasks=tasks,
                           decoding=state["decoding"], source=str(fp.source), report=forward,
                           fp_results=cached)
