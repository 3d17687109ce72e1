"""Answer-window tokens -> strings (cut at the first EOS, special tokens skipped).

Module boundary: tokenizer-facing output only.
"""
from __future__ import annotations

from typing import Any

import torch

from faircalib.diffusion.trajectory import Trajectory


def cut_at_eos(ids: list[int], eos_ids: set[int]) -> list[int]:
    for j, t in enumerate(ids):
        if t in eos_ids:
            return ids[:j]
    return ids


def decode_text(tokenizer: Any, traj: Trajectory | torch.Tensor, stop_at_eos: bool = True) -> list[str]:
    """One string per row of the answer window (a Trajectory or a (B, L) id tensor)."""
    tokens = traj.tokens if isinstance(traj, Trajectory) else traj
    eos = getattr(tokenizer, "eos_token_id", None)
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos]))
    out = []
    for row in tokens.detach().cpu().tolist():
        ids = cut_at_eos(row, eos_ids) if stop_at_eos else row
        out.append(tokenizer.decode(ids, skip_special_tokens=True))
    return out
