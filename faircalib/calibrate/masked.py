"""Masked calibration data: Stage II on the states a dLLM actually sees (beyond the paper).

Stage II as the paper specifies calibrates on fully observed text, so the quantizer never sees the
activation of a [MASK] position, yet every commit decision of a dLLM is made at one. This builder turns
fully observed calibration sequences into decoding-like states: the prompt/context stays visible and
the answer window (the last `window` positions, where the Stage I prior is placed) is masked at a ratio
t ~ U(t_min, 1) drawn per sequence -- the marginal of the states a masked-diffusion decoder visits
between its first (all masked) and last step. Teacher forcing is unchanged: the FP teacher and the
quantized student see the same masked sequence, and the loss is on every position (masked and
visible), weighted uniformly or by the prior as the method says.

Boundary: data only (token ids in, token ids + mask out); the engine (engine.py) is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from faircalib.errors import ConfigError



@dataclass(frozen=True)
class MaskedCalibration:
    ids: torch.Tensor  # (N, S) int64 calibration ids with [MASK] written into the window
    masked: torch.Tensor  # (N, S) bool, True where a [MASK] was written
    ratios: torch.Tensor  # (N,) float64 the mask ratio drawn for each sequence


def mask_window(ids: torch.Tensor, mask_token_id: int, window: int, seed: int = 0,
                t_min: float = 0.0) -> MaskedCalibration:
    """ids: (N, S) fully observed calibration ids -> MaskedCalibration with, per sequence, a ratio
    t ~ U(t_min, 1) and round(t * L') positions of the last L' = min(window, S) positions replaced by
    `mask_token_id` (uniformly chosen; at least one). Deterministic in `seed`; `ids` is not modified."""
    if ids.ndim != 2:
        raise ConfigError(f"mask_window: ids must be (N, S); got shape {tuple(ids.shape)}")
    if window < 1:
        raise ConfigError(f"mask_window: window={window} must be >= 1 (the decoding window L)")
    if not 0.0 <= t_min < 1.0:
        raise ConfigError(f"mask_window: t_min={t_min} must be in [0, 1)")
    N, S = ids.shape
    L = min(window, S)
    g = torch.Generator().manual_seed(int(seed))
    ratios = t_min + (1.0 - t_min) * torch.rand(N, generator=g, dtype=torch.float64)  # (N,)
    counts = (ratios * L).round().long().clamp(1, L)  # (N,)
    scores = torch.rand(N, L, generator=g)  # (N, L) random order of the window positions
    rank = scores.argsort(-1).argsort(-1)  # (N, L) rank of each position in that order
    win_masked = rank < counts.unsqueeze(-1)  # (N, L) exactly counts[n] True per row
    masked = torch.zeros(N, S, dtype=torch.bool)
    masked[:, S - L:] = win_masked
    out = ids.clone()
    out[masked] = int(mask_token_id)
    return MaskedCalibration(ids=out, masked=masked, ratios=ratios)
