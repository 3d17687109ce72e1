"""Identity hashes (sha256, hex): the one home of tensor, state-dict and model-directory hashing.

    tensor_hash(t)        dtype, shape and bytes of one tensor (calibration ids, position weights)
    tensors_hash(d)       a name -> tensor dict (a block's saved state)
    state_dict_hash(m)    an in-memory model: its config and every state-dict tensor (exact)
    weights_hash(source)  a model directory (or zoo:NAME) on disk: config.json + weight files; the
                          cheaper equivalent of state_dict_hash for a model that was loaded from there

Caches key on these: the Stage I prior (docs/method.md §4), Stage II resume state (§3).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from faircalib.models.io import weight_files
from faircalib.models.loader import resolve_source


def _tensor_bytes(t: torch.Tensor):
    """The tensor's bytes as a buffer sha256 reads in place (no copy: a (126464, 4096) bf16 embedding would
    otherwise be duplicated as 1 GB of Python bytes)."""
    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""


def tensor_hash(t: torch.Tensor | None) -> str | None:
    """sha256 of a tensor's dtype, shape and bytes (None -> None)."""
    if t is None:
        return None
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}".encode())
    h.update(_tensor_bytes(t))
    return h.hexdigest()


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update((tensor_hash(tensors[k]) or "").encode())
    return h.hexdigest()


@torch.no_grad()
def state_dict_hash(model: torch.nn.Module) -> str:
    """Exact sha256 over an in-memory model's config and state-dict bytes (name order)."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    to_official = getattr(cfg, "to_official", None)
    h.update(json.dumps(to_official() if callable(to_official) else repr(cfg), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def weights_hash(source: str | Path) -> str:
    """sha256 over config.json and the weight files (in name order): the model's identity for caches."""
    path = resolve_source(source)
    h = hashlib.sha256()
    h.update(json.dumps(json.loads((path / "config.json").read_text()), sort_keys=True).encode())
    for f in weight_files(path):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()
