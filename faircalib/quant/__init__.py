"""Quantization: quantizers, transforms, baselines (see SPEC.md §2).

Public entry points (imported lazily to keep `faircalib.quant.*` submodules free of import cycles):
`quantize`, `QuantConfig`, `CalibConfig`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CalibConfig", "QuantConfig", "quantize"]


def __getattr__(name: str) -> Any:
    if name == "quantize":
        from faircalib.quant.api import quantize

        return quantize
    if name in ("QuantConfig", "CalibConfig"):
        from faircalib.quant import config

        return getattr(config, name)
    raise AttributeError(name)
