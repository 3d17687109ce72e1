"""Cross-corpus rank consistency of two prior curves (docs/method.md §7, paper App. D.2): Spearman (Pearson on
average ranks, ties shared) and Pearson between two equal-length mean curves.

Boundary: pure tensor functions.
"""
from __future__ import annotations

import torch


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values get the mean of their ranks. (n,) -> (n,) float64."""
    x = x.double().reshape(-1)
    n = x.numel()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty(n, dtype=torch.float64)
    xs = x[order]
    i = 0
    while i < n:
        j = i
        while j + 1 < n and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    if a.numel() != b.numel() or a.numel() < 2:
        raise ValueError(f"pearson needs two curves of the same length >= 2 (got {a.numel()} and {b.numel()})")
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return pearson(average_ranks(a), average_ranks(b))


def rank_consistency(curve_a: torch.Tensor, curve_b: torch.Tensor) -> dict:
    """{"spearman": ..., "pearson": ...} between two prior curves (e.g. `PositionPrior.curve` probed on
    two corpora with the same model, T and L)."""
    return {"spearman": spearman(curve_a, curve_b), "pearson": pearson(curve_a, curve_b)}
