"""Calibration actor work (Stage II): one actor loads the FP model, samples the calibration sequences,
aligns the Stage I prior (FAIR-Calib), runs `faircalib.quant.quantize` with a per-block state directory,
uploads that state after every finished block (so a rerun anywhere resumes at the next block), then
`faircalib.checkpoint.save_quantized` and uploads the checkpoint (manifest last).

Boundary: a thin wrapper over faircalib.quant / faircalib.checkpoint; storage via the orchestrator's
storage module (the actor may run on another node: it reads and writes storage itself).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

BITS = {"w4a4": (4, 4), "w3a4": (3, 4), "w8a8": (8, 8)}


def _device() -> str:
    import ray
    import torch

    return "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"


def calibrate_request(state: Any, requests: list[dict], report: Callable[[dict], None]) -> dict:
    """requests: one dict (see orchestrator.stages.run_calibrate) -> summary of the checkpoint upload."""
    import torch
    from faircalib.orchestrator.errors import StorageError
    from faircalib.orchestrator.storage import fetch_tree, open_storage, upload_tree

    from faircalib.checkpoint import save_quantized
    from faircalib.data import sample_token_sequences
    from faircalib.errors import DataError
    from faircalib.models import load_dllm
    from faircalib.quant import CalibConfig, QuantConfig, quantize

    [req] = requests
    hint = req.get("storage_hint") or {}  # orchestrator.storage.endpoint_hint of the scheduler
    torch.set_num_threads(max(1, int(req["threads"])))
    torch.set_flush_denormal(True)
    device = _device()
    work = Path(req["workdir"])
    state_dir, ckpt_dir = work / "state", work / "checkpoint"
    loaded = load_dllm(req["model"], device="cpu")
    w_bits, a_bits = BITS[req["bits"]]
    qcfg = QuantConfig(method=req["method"], w_bits=w_bits, a_bits=a_bits, seed=req["seed"])
    ccfg = CalibConfig(epochs=req["epochs"], batch_size=req["batch_size"], lr=req["lr"])
    calib_ids = None
    if qcfg.needs_data:
        if loaded.tokenizer is None:
            raise DataError(f"model {req['model']!r} ships no tokenizer; calibration data cannot be tokenized")
        calib_ids = sample_token_sequences(loaded.tokenizer, req["data"], req["n"], req["seq_len"],
                                           seed=req["seed"])  # (N, S)
    weights = None
    if req.get("prior_uri"):
        from faircalib.probe import PositionPrior

        fetch_tree(open_storage(req["prior_uri"], **hint), work / "prior")
        prior = PositionPrior.load(work / "prior")
        weights = prior.aligned(req["seq_len"], floor=req["floor"])  # (S,)
    state_store = open_storage(req["state_uri"], **hint)
    try:  # resume: the blocks a previous attempt finished (wherever it ran)
        fetch_tree(state_store, state_dir)
        report({"message": f"resuming from {state_store.uri}"})
    except StorageError:
        state_dir.mkdir(parents=True, exist_ok=True)

    def progress(e: dict) -> None:
        ev = e.get("event")
        if ev == "block_done":
            upload_tree(state_store, state_dir, meta={"blocks_done": e["block"] + 1})
            report({"message": f"block {e['block'] + 1}/{e['n_blocks']} done"
                               + (" (resumed)" if e.get("resumed") else f", loss {e.get('final_loss')}"),
                    "block": e["block"], "resumed": e.get("resumed"), "pid": os.getpid()})
        elif ev in ("start", "done", "fallback"):
            report({"message": f"calibration {ev}", **{k: v for k, v in e.items() if k != "event"}})

    quantize(loaded.model, qcfg, calib_ids, position_weights=weights, calib_cfg=ccfg, state_dir=state_dir,
             progress=progress, device=device)
    save_quantized(loaded.model, ckpt_dir, meta={"source": req["model"], "prior_uri": req.get("prior_uri")},
                   tokenizer=loaded.tokenizer)
    up = upload_tree(open_storage(req["checkpoint_uri"], **hint), ckpt_dir, meta={"method": req["method"],
                                                                         "bits": req["bits"]})
    info = getattr(loaded.model, "faircalib_quant", {}) or {}
    calib = info.get("calibration") or {}
    return {"objects": up["objects"], "manifest_object": up["manifest_object"],
            "state_objects": {k: o for k, o in _manifest_objects(state_store).items()},
            "fallbacks": info.get("fallbacks", []), "wall_time_s": calib.get("wall_time_s"),
            "checkpoint_bytes": sum(o["size"] for o in up["objects"].values())}


def _manifest_objects(storage) -> dict:
    from faircalib.orchestrator.errors import StorageError
    from faircalib.orchestrator.storage import read_manifest

    try:
        return read_manifest(storage)["objects"]
    except StorageError:
        return {}
