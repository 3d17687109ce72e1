"""Symmetric uniform quantizers (docs/method.md §5):

    Q(x) = s * clamp(round(x / s), -2^(b-1), 2^(b-1) - 1)

Weights: per output channel (rows of W (N, K)), static. Activations: per token (last dim), dynamic,
scale from the token's max |x|. `clip` (<= 1) shrinks the range before the scale is taken (learned
clipping passes a tensor). `round_ste` is the straight-through estimator used in training. The scale
and code primitives are the kernels' (faircalib.kernels.quantizer): one definition of the int codes.
"""
from __future__ import annotations

import torch

from faircalib.kernels.packing import qrange
from faircalib.kernels.quantizer import quantize_codes, symmetric_scale

__all__ = ["fake_quant", "quantize_activation", "quantize_codes", "quantize_weight", "round_ste", "symmetric_scale"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity gradient backward."""
    return (x.round() - x).detach() + x


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
