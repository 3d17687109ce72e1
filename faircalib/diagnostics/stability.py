"""Stability lag and post-commit mismatch on a model's own trajectory (docs/method.md §7, paper App. D.1/D.4).

Both read the per-step top-1 record of a trajectory decoded with `record=("top1",)`: top1[s] is the
argmax at every window position on the state *before* step s's commit, so for a position committed at
step c with token y, the post-commit observations are steps s = c+1 .. S-1 (the committed token is part
of those states). Positions committed at the last step have no post-commit observation and are left
out (lag -1, excluded from the rates).

- stability lag: steps after the commit until top-1 equals y at every later step. 0 = top-1 agrees from
  the first post-commit step on; if top-1 still disagrees at the last step the lag is the number of
  observed post-commit steps (S-1-c) and the position is *censored* (never settled within the run).
- mean_disagree_rate: mean over committed positions of the fraction of post-commit steps whose top-1
  differs from y; never_agree_rate: fraction of committed positions whose top-1 never equals y.

Boundary: pure tensor functions on (S, B, L) records; no model calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _post_commit(top1: torch.Tensor, commit_step: torch.Tensor, tokens: torch.Tensor):
    """-> (post (S, B, L) bool: s > c, disagree (S, B, L) bool: post & top1 != y, valid (B, L): c < S-1)."""
    if top1.ndim != 3 or top1.shape[1:] != tokens.shape or commit_step.shape != tokens.shape:
        raise ValueError(f"top1 must be (S, B, L) and commit_step/tokens (B, L); got {tuple(top1.shape)}, "
                         f"{tuple(commit_step.shape)}, {tuple(tokens.shape)}")
    S = top1.shape[0]
    c = commit_step.long().cpu()  # (B, L)
    steps = torch.arange(S).view(S, 1, 1)
    post = steps > c.unsqueeze(0)  # (S, B, L)
    disagree = post & (top1.long().cpu() != tokens.long().cpu().unsqueeze(0))
    valid = (c >= 0) & (c < S - 1)
    return post, disagree, valid


def stability_lags(top1: torch.Tensor, commit_step: torch.Tensor, tokens: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """top1: (S, B, L) per-step argmax; commit_step, tokens: (B, L) -> (lags (B, L) int64, -1 where no
    post-commit step exists; censored (B, L) bool, top-1 still disagreeing at the last step)."""
    S = top1.shape[0]
    _post, disagree, valid = _post_commit(top1, commit_step, tokens)
    steps = torch.arange(S).view(S, 1, 1)
    last_bad = torch.where(disagree, steps, torch.full_like(steps, -1)).amax(0)  # (B, L), -1 = never disagrees
    c = commit_step.long().cpu()
    lags = torch.where(last_bad >= 0, last_bad - c, torch.zeros_like(c))
    censored = disagree[-1] & valid
    return torch.where(valid, lags, torch.full_like(lags, -1)), censored


@dataclass
class LagSummary:
    n_positions: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: int
    frac_unstable: float  # lag > 0
    frac_censored: float  # never settled within the run
    histogram: list[int]  # counts of lag 0, 1, ..., max

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def summarize_lags(lags: torch.Tensor, censored: torch.Tensor | None = None) -> LagSummary:
    """Distribution of the valid (>= 0) lags: mean, quantiles, tail fractions and the full histogram."""
    v = lags[lags >= 0].long().reshape(-1)
    if v.numel() == 0:
        return LagSummary(0, float("nan"), float("nan"), float("nan"), float("nan"), 0, float("nan"),
                          float("nan"), [])
    f = v.double()
    q = torch.quantile(f, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    cen = 0.0 if censored is None else float(censored[lags >= 0].double().mean())
    return LagSummary(int(v.numel()), float(f.mean()), float(q[0]), float(q[1]), float(q[2]), int(v.max()),
                      float((v > 0).double().mean()), cen, torch.bincount(v).tolist())


def post_commit_mismatch(top1: torch.Tensor, commit_step: torch.Tensor, tokens: torch.Tensor) -> dict:
    """-> {"mean_disagree_rate", "never_agree_rate", "n_positions"} over positions with >= 1 post-commit
    step (see the module docstring); also "per_sequence_disagree" (B,) list (mean over that row's positions,
    NaN for a row without valid positions)."""
    post, disagree, valid = _post_commit(top1, commit_step, tokens)
    n_post = post.sum(0).double()  # (B, L)
    n_bad = disagree.sum(0).double()
    rate = torch.where(valid, n_bad / n_post.clamp_min(1), torch.zeros_like(n_bad))  # (B, L)
    never = valid & (n_bad == n_post)
    n = int(valid.sum())
    per_seq = (rate.sum(1) / valid.sum(1).double()).tolist()
    if n == 0:
        return {"mean_disagree_rate": float("nan"), "never_agree_rate": float("nan"), "n_positions": 0,
                "per_sequence_disagree": per_seq}
    return {"mean_disagree_rate": float(rate[valid].mean()), "never_agree_rate": float(never[valid].double().mean()),
            "n_positions": n, "per_sequence_disagree": per_seq}
