"""Symmetric uniform quantizers (SPEC.md §2):

    Q(x) = s * clamp(round(x / s), -2^(b-1), 2^(b-1) - 1)

Weights: per output channel (rows of W (N, K)), static. Activations: per token (last dim), dynamic,
scale from the token's max |x|. `clip` (<= 1) shrinks the range before the scale is taken (learned
clipping passes a tensor). `round_ste` is the straight-through estimator used in training.
"""
from __future__ import annotations

import torch

from faircalib.quant.packing import qrange

_EPS = 1e-8


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity gradient backward."""
    return (x.round() - x).detach() + x


def symmetric_scale(x: torch.Tensor, bits: int, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Scale per row of the last dim: max|x| * clip / qmax. x: (..., K) -> (..., 1)."""
    qmax = qrange(bits)[1]
    return (x.abs().amax(dim=-1, keepdim=True) * clip).clamp(min=_EPS) / qmax


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (as x's float dtype) in [-2^(b-1), 2^(b-1)-1]; no gradient."""
    lo, hi = qrange(bits)
    return torch.clamp(torch.round(x / scale), lo, hi)


def fake_quant(x: torch.Tensor, bits: int, clip: torch.Tensor | float = 1.0, ste: bool = True) -> torch.Tensor:
    """Quantize-dequantize along the last dim (per row / per token). bits >= 16 returns x unchanged."""
    if bits >= 16:
        return x
    lo, hi = qrange(bits)
    s = symmetric_scale(x, bits, clip)
    q = round_ste(x / s) if ste else torch.round(x / s)
    return torch.clamp(q, lo, hi) * s


def quantize_weight(w: torch.Tensor, bits: int, clip: torch.Tensor | float = 1.0):
    """w: (N, K) -> (codes int8 (N, K), scales (N,) float32), per output channel."""
    s = symmetric_scale(w.float(), bits, clip)  # (N, 1)
    return quantize_codes(w.float(), s, bits).to(torch.int8), s.squeeze(-1)


def quantize_activation(x: torch.Tensor, bits: int, clip: float = 1.0):
    """x: (..., K) -> (codes int8 (..., K), scales (..., 1) float32), per token."""
    s = symmetric_scale(x.float(), bits, clip)
    return quantize_codes(x.float(), s, bits).to(torch.int8), s
