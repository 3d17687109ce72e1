"""The symmetric per-row scale and integer codes (docs/method.md §5), the one definition the kernels,
the runtime modules and fake quantization (faircalib.quant.quantizer) share:

    s = max|x| * clip / qmax (per row of the last dim),   q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1)
"""
from __future__ import annotations

import torch
from faircalib.kernels.packing import qrange

_EPS = 1e-8


def symmetric_scale(x: torch.Tensor, bits: int, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Scale per row of the last dim: max|x| * clip / qmax. x: (..., K) -> (..., 1)."""
    qmax = qrange(bits)[1]
    return (x.abs().amax(dim=-1, keepdim=True) * clip).clamp(min=_EPS) / qmax


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (as x's float dtype) in [-2^(b-1), 2^(b-1)-1]; no gradient."""
    lo, hi = qrange(bits)
    q = x / scale  # a fresh tensor: rounded and clamped in place when no gradient flows (same values)
    if q.requires_grad:
        return torch.clamp(torch.round(q), lo, hi)
    return q.round_().clamp_(lo, hi)
