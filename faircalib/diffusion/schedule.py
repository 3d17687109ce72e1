"""How many tokens each step commits (docs/method.md §1), per row.

- LLaDA (`generate.py` `get_num_transfer_tokens`): per semi-autoregressive block, the block's masked
  count split evenly over the block's steps, remainder to the earliest steps.
- Dream (`diffusion_generate`): timesteps = linspace(1, eps, steps + 1) (float32); at step i with
  t = ts[i], s = ts[i+1] transfer int(n_mask * (1 - s/t)) tokens, all remaining at the last step.
  The official code uses the batch-mean mask count; we count per row, which is identical when rows
  have equal mask counts (always the case here: every row has the same window and commits the same
  counts) and stays correct if they ever differ.

Module boundary: integer bookkeeping only, no model.
"""
from __future__ import annotations

import torch


def llada_transfer_counts(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """n_masked: (B,) masked tokens in the block at its start -> (B, steps) int64 counts per step."""
    n = n_masked.long().view(-1, 1)  # (B, 1)
    base, rem = n // steps, n % steps
    idx = torch.arange(steps, device=n.device).view(1, -1)  # (1, steps)
    return base + (idx < rem).long()  # (B, steps)


def dream_timesteps(steps: int, eps: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(steps + 1,) float32, as the official code (linspace on the model device, default dtype float32)."""
    return torch.linspace(1, eps, steps + 1, device=device, dtype=torch.float32)


def dream_transfer_count(n_masked: torch.Tensor, step: int, steps: int, timesteps: torch.Tensor) -> torch.Tensor:
    """n_masked: (B,) currently masked -> (B,) int64 tokens to transfer at `step` (float32 arithmetic)."""
    if step == steps - 1:
        return n_masked.long()
    t, s = timesteps[step], timesteps[step + 1]
    frac = 1 - s / t  # float32 scalar tensor
    return (n_masked.to(torch.float32) * frac).long()  # int() truncation; values are >= 0


def dream_transfer_prob(step: int, steps: int, timesteps: torch.Tensor) -> float:
    """`origin`: each masked position transfers with probability 1 - s/t (1 at the last step)."""
    if step == steps - 1:
        return 1.0
    return float(1 - timesteps[step + 1] / timesteps[step])


def schedule_counts(schedule: str, gen_length: int, steps: int, block_length: int | None = None,
                    eps: float = 1e-3) -> list[int]:
    """The per-step commit counts of a fully masked window when every step commits exactly its count
    (all policies except `origin`). Handy for documentation, tests and probing budgets."""
    block = block_length or gen_length
    if schedule == "llada":
        spb = steps // (gen_length // block)
        per_block = llada_transfer_counts(torch.tensor([block]), spb)[0].tolist()
        return per_block * (gen_length // block)
    ts = dream_timesteps(steps, eps)
    remaining, out = torch.tensor([gen_length]), []
    for i in range(steps):
        k = dream_transfer_count(remaining, i, steps, ts)
        out.append(int(k))
        remaining = remaining - k
    return out
