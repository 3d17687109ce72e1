"""Writing and reading a quantized checkpoint directory.

    config.json                    the model's official config (unchanged architecture)
    tokenizer files                when a tokenizer is given
    quantized_linears.safetensors  per block linear: qweight (packed int4 nibbles along K, low nibble =
                                   even index, or int8), w_scale (N,) f32, act_clip () f32, bias
    transforms.safetensors         online activation transforms (FlatQuant diag/P1/P2, QuaRot rotations)
    fp.safetensors                 everything kept in floating point (embedding, norms, head, ...)
    quant_config.json              method, bits, seed, prior hash, calibration settings and report, code
                                   version, fallbacks, and `layout`: the spec of every module that differs
                                   from the plain architecture (what `load_quantized` rebuilds)
    manifest.json                  sha256 and size of every file; written first as {"complete": false}
                                   and replaced LAST, so an interrupted save is recognisably incomplete

Tensor names are the quantized model's state-dict names. Safetensors only.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

import faircalib
from faircalib.errors import CheckpointError
from faircalib.models.adapter import DLLMAdapter
from faircalib.models.base import DiffusionLM
from faircalib.models.config import read_config
from faircalib.models.io import build_model, load_tokenizer, open_safetensors
from faircalib.models.loader import LoadedDLLM
from faircalib.models.replace import set_submodule
from faircalib.quant.runtime import INFO_ATTR, QuantEmbedding, QuantLinear, build_module, module_spec

FORMAT = "faircalib-quantized"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
QUANT_CONFIG = "quant_config.json"
TENSOR_FILES = ("quantized_linears.safetensors", "transforms.safetensors", "fp.safetensors")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def model_layout(model: DiffusionLM) -> dict[str, dict[str, Any]]:
    """Specs of the modules that differ from a plain model of the same config (path -> spec)."""
    skeleton = dict(build_model(model.config, device="meta").named_modules())
    layout = {}
    for path, mod in model.named_modules():
        if not path:
            continue
        plain = skeleton.get(path)
        if plain is not None and type(plain) is type(mod):
            continue
        if any(path.startswith(p + ".") for p in layout):  # inside an already recorded module
            continue
        try:
            layout[path] = module_spec(mod)
        except TypeError as e:
            raise CheckpointError(f"cannot save module {path}: {e}") from None
    return layout


def _tensor_file(model: nn.Module, name: str) -> str:
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    if isinstance(owner, QuantLinear | QuantEmbedding):
        return TENSOR_FILES[0]
    if ".act_transforms." in f".{name}":
        return TENSOR_FILES[1]
    return TENSOR_FILES[2]


def save_quantized(model: DiffusionLM, directory: str | Path, meta: dict[str, Any] | None = None,
                   tokenizer=None) -> Path:
    """Write `model` (the result of `faircalib.calibrate.quantize`) as a checkpoint directory; returns it.

    meta: extra JSON-able facts to record (e.g. {"source": "zoo:tiny-llada", "prior": {...}}).
    """
    from faircalib.models.loader import require_dllm

    require_dllm(model, "faircalib.checkpoint.save_quantized()")
    directory = Path(directory)
    info = getattr(model, INFO_ATTR, None)
    if info is None:
        raise CheckpointError("save_quantized needs a model returned by faircalib.calibrate.quantize (no quantization "
                              "record found on it)")
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / MANIFEST, {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False})
    model.config.save(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    groups: dict[str, dict[str, torch.Tensor]] = {f: {} for f in TENSOR_FILES}
    for name, t in model.state_dict().items():
        groups[_tensor_file(model, name)][name] = t.detach().cpu().contiguous()
    for fname, tensors in groups.items():
        save_file(tensors, str(directory / fname), metadata={"format": FORMAT})
    qc = info["quant_config"]
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "code_version": faircalib.__version__,
        "quantized_with_version": info.get("code_version"),
        "arch": model.config.arch, "method": qc["method"], "w_bits": qc["w_bits"], "a_bits": qc["a_bits"],
        "seed": qc["seed"], "prior_hash": info.get("prior_hash"), "quant_config": qc,
        "calib_config": info.get("calib_config"), "calib_sequences": info.get("calib_sequences"),
        "fallbacks": info.get("fallbacks", []), "calibration": info.get("calibration"),
        "fp_dtype": str(model.dtype).removeprefix("torch."), "layout": model_layout(model), "meta": meta or {},
    }
    _write_json(directory / QUANT_CONFIG, record)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": True,
                "files": {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files}}
    _write_json(directory / MANIFEST, manifest)
    return directory


def verify_manifest(directory: str | Path) -> dict[str, Any]:
    """Check every file listed in manifest.json (size and sha256); CheckpointError names the first problem."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}; not a faircalib quantized checkpoint (or the save never "
                              f"finished) - re-export it with save_quantized")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e.msg}); re-export the checkpoint") from e
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {manifest.get('format_version')} is newer than this faircalib "
                              f"understands ({FORMAT_VERSION}); upgrade faircalib")
    if not manifest.get("complete"):
        raise CheckpointError(f"{directory}: the checkpoint is incomplete (the save was interrupted); re-export it")
    for required in (QUANT_CONFIG, "config.json", *TENSOR_FILES):
        if required not in manifest.get("files", {}):
            raise CheckpointError(f"{path}: {required} is not listed; the checkpoint is incomplete - re-export it")
    for name, entry in manifest["files"].items():
        f = directory / name
        if not f.is_file():
            raise CheckpointError(f"{directory}: {name} is missing (listed in {MANIFEST}); copy the whole directory")
        if f.stat().st_size != entry["bytes"]:
            raise CheckpointError(f"{directory}: {name} has {f.stat().st_size} bytes, manifest says {entry['bytes']}; "
                                  f"the file is truncated or modified - re-copy the checkpoint")
        if _sha256(f) != entry["sha256"]:
            raise CheckpointError(f"{directory}: {name} fails its sha256 check; the file is corrupt or modified - "
                                  f"re-copy the checkpoint")
    return manifest


def load_quantized(directory: str | Path, device: str | torch.device = "cpu") -> LoadedDLLM:
    """Verify the manifest and rebuild the runnable quantized model (+ tokenizer) from `directory`."""
    directory = Path(directory)
    verify_manifest(directory)
    record = json.loads((directory / QUANT_CONFIG).read_text())
    cfg = read_config(directory)
    dtype = getattr(torch, record.get("fp_dtype", "float32"))
    # the FP skeleton on the meta device: its linears are replaced by quantized modules below and the FP
    # tensors are assigned from the files, so the full-precision model is never allocated (16 GB at 8B)
    model = build_model(cfg, device="meta", dtype=dtype)
    for path in sorted(record["layout"], key=lambda p: p.count(".")):
        try:
            set_submodule(model, path, build_module(record["layout"][path]))
        except (ValueError, AttributeError, KeyError) as e:
            raise CheckpointError(f"{directory}: cannot rebuild module {path} ({e}); the checkpoint was written by an "
                                  f"incompatible faircalib version") from None
    state: dict[str, torch.Tensor] = {}
    for fname in TENSOR_FILES:
        with open_safetensors(directory / fname, error=CheckpointError,
                              fix="re-fetch or re-export the checkpoint (`faircalib fetch` verifies it)") as sf:
            for key in sf.keys():  # noqa: SIM118 (safe_open is not a dict)
                state[key] = sf.get_tensor(key)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CheckpointError(f"{directory}: tensors do not match the recorded layout ({what}); re-export the "
                              f"checkpoint")
    for k, t in state.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{directory}: tensor {k} has shape {tuple(t.shape)}, layout implies "
                                  f"{tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{directory}: {left[0]} was not filled from the checkpoint; re-export it")
    model.requires_grad_(False)
    info = {"quant_config": record["quant_config"], "code_version": record.get("quantized_with_version"),
            "calib_config": record.get("calib_config"), "calibration": record.get("calibration"),
            "fallbacks": record.get("fallbacks", []), "prior_hash": record.get("prior_hash"),
            "calib_sequences": record.get("calib_sequences")}
    setattr(model, INFO_ATTR, info)
    from faircalib.devices import resolve_device

    model = model.to(resolve_device(device)).eval()
    return LoadedDLLM(model=model, tokenizer=load_tokenizer(directory), adapter=DLLMAdapter(model),
                      source=str(directory), path=directory)


__all__ = ["FORMAT", "MANIFEST", "QUANT_CONFIG", "load_quantized", "model_layout", "save_quantized",
           "verify_manifest"]
