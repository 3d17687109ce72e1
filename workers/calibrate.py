"""Calibration actor work (Stage II): one actor loads the FP model and runs the library's method run,
`faircalib.pipeline.run_method`, with the job's MethodConfig and its Stage I prior (fetched from
storage), keeping a per-block state directory that is uploaded after every finished block (so a rerun
anywhere resumes at the next block), then `faircalib.checkpoint.save_quantized` and uploads the
checkpoint (manifest last).

Boundary: a thin wrapper over faircalib.pipeline / faircalib.checkpoint plus storage I/O (the actor
may run on another node: it reads and writes storage itself).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def calibrate_request(state: Any, requests: list[dict], report: Callable[[dict], None]) -> dict:
    """requests: one dict from orchestrator.stages.run_calibrate (model, method_config = MethodConfig.to_dict(),
    prior_uri, workdir, state_uri, checkpoint_uri, storage_hint, threads, dtype) -> the uploads' summary."""
    from faircalib.service.errors import StorageError
    from faircalib.service.storage import fetch_tree, open_storage, read_manifest, upload_tree
    from faircalib.workers.actor import prepare_actor
    from faircalib.workers.models import load_modifiable

    from faircalib.checkpoint import save_quantized
    from faircalib.errors import DataError
    from faircalib.pipeline import MethodConfig, run_method
    from faircalib.probe import PositionPrior

    [req] = requests
    hint = req.get("storage_hint") or {}  # service.storage.endpoint_hint of the scheduler
    device = prepare_actor(req["threads"])
    cfg = MethodConfig.from_dict(req["method_config"])
    work = Path(req["workdir"])
    state_dir, ckpt_dir = work / "state", work / "checkpoint"
    # never the cache's shared model: it is quantized in place
    loaded = load_modifiable(req["model"], "cpu", req.get("dtype", "auto"))
    if cfg.needs_calibration_data and loaded.tokenizer is None:
        raise DataError(f"model {req['model']!r} ships no tokenizer; calibration data cannot be tokenized")
    prior = None
    if req.get("prior_uri"):
        fetch_tree(open_storage(req["prior_uri"], **hint), work / "prior")
        prior = PositionPrior.load(work / "prior")
    state_store = open_storage(req["state_uri"], **hint)
    try:  # resume: the blocks a previous attempt finished (wherever it ran)
        fetch_tree(state_store, state_dir)
        report({"message": f"resuming from {state_store.uri}"})
    except StorageError:
        state_dir.mkdir(parents=True, exist_ok=True)

    from faircalib.progress import event_line

    def progress(e: dict) -> None:
        ev = e.get("event")
        if ev == "block_done":
            upload_tree(state_store, state_dir, meta={"blocks_done": e["block"] + 1})
            report({"message": f"block {e['block'] + 1}/{e['n_blocks']} done"
                               + (" (resumed)" if e.get("resumed") else f", loss {e.get('final_loss')}"),
                    **e, "pid": os.getpid()})
        elif ev in ("start", "done", "fallback"):
            report({"message": f"calibration {ev}", **e})
        elif ev in ("block_start", "epoch"):  # the CLI's stage bar (blocks + epochs, current loss)
            report({"message": event_line(e), **e})

    model, info = run_method(loaded.model, loaded.tokenizer, cfg, prior=prior, state_dir=state_dir,
                             progress=progress, device=device, inplace=True)
    # a fresh directory: an earlier attempt in this workdir (e.g. a killed scheduler's actor that finished
    # before Ray reaped it) may have left a checkpoint and its upload's local _manifest.json, which
    # save_quantized would otherwise list among the checkpoint's files
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    save_quantized(model, ckpt_dir, meta={"source": req["model"], "method_config": cfg.to_dict(),
                                          "prior": info.get("prior"), "prior_uri": req.get("prior_uri")},
                   tokenizer=loaded.tokenizer)
    up = upload_tree(open_storage(req["checkpoint_uri"], **hint), ckpt_dir,
                     meta={"method": cfg.method, "bits": cfg.bits})
    try:
        state_objects = read_manifest(state_store)["objects"]
    except StorageError:
        state_objects = {}
    quant = getattr(model, "faircalib_quant", {}) or {}
    return {"checkpoint": up, "state_objects": state_objects, "fallbacks": quant.get("fallbacks", []),
            "wall_time_s": (quant.get("calibration") or {}).get("wall_time_s"),
            "checkpoint_bytes": sum(o["size"] for o in up["objects"].values())}
