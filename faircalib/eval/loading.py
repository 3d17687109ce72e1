"""Loading anything an evaluation can run on: a model directory, `zoo:NAME`, or a quantized checkpoint
directory (the one home of these helpers; faircalib.eval.harness and faircalib.eval.lm both use them).
Decoding defaults are `faircalib.models.model_decoding` (recorded: `decoding_defaults`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from faircalib.errors import ConfigError

QUANT_MARKERS = ("quant_config.json", "manifest.json")


def is_quantized_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in QUANT_MARKERS)


def load_for_eval(source: str | Path, device: str = "auto", dtype: str | torch.dtype | None = None):
    """A model directory, `zoo:NAME` or a quantized checkpoint directory (has quant_config.json or
    manifest.json) -> LoadedDLLM on `device` (auto | cpu | cuda | cuda:N, faircalib.devices)."""
    s = str(source)
    if not s.startswith("zoo:") and is_quantized_dir(s):
        from faircalib.checkpoint import load_quantized

        return load_quantized(s, device=device)
    from faircalib.models import load_dllm

    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"dtype: {dtype!r} is not a torch dtype (e.g. float32, bfloat16)", field="dtype")
        dtype = getattr(torch, dtype)
    return load_dllm(s, dtype=dtype, device=device)
