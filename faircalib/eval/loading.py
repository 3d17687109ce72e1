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
    manifest.json) -> LoadedDLLM on `device` (auto | cpu | cuda | cuda:N) with the FP weights in `dtype`
    (auto | bfloat16 | float32 | float16; both rules: faircalib.devices). A quantized checkpoint computes
    in the dtype it was calibrated in, so an explicit dtype for one is refused rather than ignored."""
    from faircalib.devices import resolve_dtype

    s = str(source)
    if not s.startswith("zoo:") and is_quantized_dir(s):
        from faircalib.checkpoint import load_quantized

        if resolve_dtype(dtype, "cpu") is not None:
            raise ConfigError(f"dtype={dtype!r}: {s} is a quantized checkpoint, which computes in the dtype it "
                              "was calibrated in (fp_dtype in its quant_config.json); drop the dtype, or quantize "
                              "from a model loaded in that dtype", field="dtype")
        return load_quantized(s, device=device)
    from faircalib.models import load_dllm

    return load_dllm(s, dtype=dtype, device=device)  # dtype: faircalib.devices.resolve_dtype
