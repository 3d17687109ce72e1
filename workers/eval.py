"""Eval actor work: load the FP model (and, for quantized jobs, the quantized checkpoint) once per
actor, then run evaluation tasks and return JSON-able results. Separate actors from calibration.

Boundary: a thin wrapper over `faircalib.eval`; no metric is computed here. Tasks:

  fidelity   faircalib.eval.compare_to_reference: masked-token NLL of the FP model on held-out
             sequences; with a quantized model also its NLL, KL(FP || quantized) and top-1 agreement.
  any other  an lm-eval task or group name (the offline suite, e.g. faircalib_suite / faircalib_arith,
             or lm-eval's registry), run by faircalib.eval.harness.run_lm_eval on the FP model and then
             on the quantized model with the same settings and decoding (the FP model card's defaults
             overridden by evaluation.decoding), so the two columns are comparable.

Each task returns {variant: result} with variant "fp" / "quantized"; lm-eval results are the library's
whole result dict (per-task metrics, per-task wall time, settings, decoding, versions), shaped for the
job by orchestrator.stages.run_evaluate.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BUILTIN_TASKS = ("fidelity",)


def _device() -> str:
    import ray
    import torch

    return "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"


def setup_eval(model: str, settings: dict, threads: int = 1, checkpoint: dict | None = None,
               lm_eval: dict | None = None) -> dict[str, Any]:
    """Per-actor state. checkpoint: {"storage": URI, "dest": local dir, "storage_hint": endpoint_hint} of a
    quantized checkpoint (fetched and checksum-verified here, so actors on other nodes need no shared disk). lm_eval: the
    run_lm_eval settings for lm-eval tasks (limit, mc_num, batch_size, gen_batch_size, check_greedy,
    bootstrap_iters, seed, decoding)."""
    import torch

    from faircalib.models import load_dllm

    torch.set_num_threads(max(1, int(threads)))
    torch.set_flush_denormal(True)
    device = _device()
    fp = load_dllm(model, device=device)
    state: dict[str, Any] = {"fp": fp, "settings": settings, "device": device, "quantized": None,
                             "lm_eval": dict(lm_eval or {}), "threads": torch.get_num_threads()}
    if checkpoint is not None:
        from faircalib.orchestrator.storage import fetch_tree, open_storage

        from faircalib.checkpoint import load_quantized

        dest = Path(checkpoint["dest"])
        fetch_tree(open_storage(checkpoint["storage"], **(checkpoint.get("storage_hint") or {})), dest)
        loaded = load_quantized(dest, device=device)  # a LoadedDLLM
        state["quantized"] = getattr(loaded, "model", loaded)
    return state


def _variants(state: dict) -> list[tuple[str, Any]]:
    out = [("fp", state["fp"].model)]
    if state["quantized"] is not None:
        out.append(("quantized", state["quantized"]))
    return out


def _eval_ids(state: dict):
    from faircalib.data import sample_token_sequences
    from faircalib.errors import DataError

    fp, s = state["fp"], state["settings"]
    if fp.tokenizer is None:
        raise DataError(f"model {fp.source!r} ships no tokenizer; the fidelity evaluation needs one to "
                        "tokenize its held-out text")
    return sample_token_sequences(fp.tokenizer, s["data"], s["n"], s["seq_len"], seed=s["seed"])  # (n, S)


def _fidelity(state: dict, report: Callable[[dict], None]) -> dict:
    from faircalib.eval import compare_to_reference

    ids = _eval_ids(state)
    seed = state["settings"]["seed"]
    fp_model = state["fp"].model
    t0 = time.perf_counter()
    out = {"fp": compare_to_reference(fp_model, ids, seed=seed).as_dict(),
           "sequences": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "data": state["settings"]["data"]}
    out["fp"]["wall_s"] = round(time.perf_counter() - t0, 3)
    report({"message": f"fidelity: FP nll {out['fp']['nll']:.4f}"})
    if state["quantized"] is not None:
        t0 = time.perf_counter()
        q = compare_to_reference(state["quantized"], ids, ref=fp_model, seed=seed).as_dict()
        q["wall_s"] = round(time.perf_counter() - t0, 3)
        out["quantized"] = q
        report({"message": f"fidelity: quantized nll {q['nll']:.4f}, KL {q['kl_to_ref']:.4g}"})
    return out


def _lm_eval(name: str, state: dict, report: Callable[[dict], None]) -> dict:
    """lm-eval task/group `name` on each variant: {"fp": run_lm_eval result, "quantized": ...}."""
    from faircalib.errors import ModelLoadError
    from faircalib.eval.harness import default_decoding, run_lm_eval

    fp, s = state["fp"], state["lm_eval"]
    if fp.tokenizer is None:
        raise ModelLoadError(f"model {fp.source!r} ships no tokenizer; lm-eval task {name!r} needs one")
    decoding = {**default_decoding(str(fp.source), fp.path), **(s.get("decoding") or {})}
    out: dict[str, Any] = {}
    for variant, model in _variants(state):
        def tagged(e: dict, variant=variant) -> None:
            report({**e, "message": f"[{variant}] {e.get('message', '')}"})

        out[variant] = run_lm_eval(model, fp.tokenizer, [name], limit=s.get("limit"), mc_num=s.get("mc_num", 128),
                                   batch_size=s.get("batch_size", 32), gen_batch_size=s.get("gen_batch_size", 16),
                                   decoding=decoding, seed=s.get("seed", 0), check_greedy=s.get("check_greedy", True),
                                   bootstrap_iters=s.get("bootstrap_iters", 1000), source=str(fp.source),
                                   progress=False, report=tagged)
    return out


def run_eval(state: dict, tasks: list[str], report: Callable[[dict], None]) -> dict[str, dict]:
    """Run the named tasks (a shard of the job's evaluation.tasks); {task: {variant: result, ...}}."""
    out = {}
    for name in tasks:
        report({"message": f"evaluating {name} on {state['device']} ({state['threads']} thread(s))"})
        out[name] = _fidelity(state, report) if name == "fidelity" else _lm_eval(name, state, report)
    return out
