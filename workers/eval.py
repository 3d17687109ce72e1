"""Eval actor work: load the FP model (and, for quantized jobs, the quantized checkpoint) once per
actor, then run evaluation tasks and return JSON-able metrics. Separate actors from calibration.

Boundary: a thin wrapper over `faircalib.eval`; no metric is computed here. Wired tasks:

  fidelity   faircalib.eval.compare_to_reference: masked-token NLL of the FP model on held-out
             sequences; with a quantized model also its NLL, KL(FP || quantized) and top-1 agreement.

Loading a quantized model needs `faircalib.checkpoint.load_quantized(dir)` (not in this installation
yet: jobs with a quantizing method are not offered until it lands, see orchestrator/stages.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

WIRED_TASKS = ("fidelity",)


def _device() -> str:
    import ray
    import torch

    return "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"


def setup_eval(model: str, settings: dict, threads: int = 1, checkpoint: dict | None = None) -> dict[str, Any]:
    """Per-actor state. checkpoint: {"storage": URI, "dest": local dir} of a quantized checkpoint
    (fetched and checksum-verified here, so actors on other nodes need no shared disk)."""
    import torch

    from faircalib.models import load_dllm

    torch.set_num_threads(max(1, int(threads)))
    torch.set_flush_denormal(True)
    device = _device()
    fp = load_dllm(model, device=device)
    state: dict[str, Any] = {"fp": fp, "settings": settings, "device": device, "quantized": None}
    if checkpoint is not None:
        from faircalib.orchestrator.storage import fetch_tree, open_storage

        from faircalib.checkpoint import load_quantized

        dest = Path(checkpoint["dest"])
        fetch_tree(open_storage(checkpoint["storage"]), dest)
        loaded = load_quantized(dest, device=device)  # a LoadedDLLM
        state["quantized"] = getattr(loaded, "model", loaded)
    return state


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
    out = {"fp": compare_to_reference(fp_model, ids, seed=seed).as_dict(),
           "sequences": int(ids.shape[0]), "seq_len": int(ids.shape[1]), "data": state["settings"]["data"]}
    report({"message": f"fidelity: FP nll {out['fp']['nll']:.4f}"})
    if state["quantized"] is not None:
        q = compare_to_reference(state["quantized"], ids, ref=fp_model, seed=seed).as_dict()
        out["quantized"] = q
        report({"message": f"fidelity: quantized nll {q['nll']:.4f}, KL {q['kl_to_ref']:.4g}"})
    return out


TASKS: dict[str, Callable[[dict, Callable[[dict], None]], dict]] = {"fidelity": _fidelity}


def run_eval(state: dict, tasks: list[str], report: Callable[[dict], None]) -> dict[str, dict]:
    """Run the named tasks (a shard of the job's evaluation.tasks); {task: metrics}."""
    out = {}
    for name in tasks:
        report({"message": f"evaluating {name} on {state['device']}"})
        out[name] = TASKS[name](state, report)
    return out
