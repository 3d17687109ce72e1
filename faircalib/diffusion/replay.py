"""Teacher forcing: evaluate another model (e.g. a quantized one) on the exact pre-commit states of a
recorded trajectory, step by step, next to the teacher's commit masks and written tokens (the inputs of
the commit-flip, frontier-margin and error-amplification diagnostics in docs/method.md §7).

    for st in iter_replay(quant_model, teacher_traj):
        flips = (st.logits.argmax(-1) != st.teacher_tokens) & st.committed   # (B, L)

Module boundary: state reconstruction + batched forward; diagnostics live elsewhere.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from faircalib.diffusion.engine import window_logits
from faircalib.diffusion.prompts import model_device
from faircalib.diffusion.trajectory import Trajectory
from faircalib.errors import ConfigError


@dataclass
class ReplayStep:
    """One teacher state seen by the replayed model (tensors on the replayed model's device).

    ids / attention_mask: (B, P+L) the teacher's state before its commit at `step`; window_start = P.
    logits: (B, L, V) float32 raw, position-aligned window logits of the *replayed* model.
    masked: (B, L) bool masked before the step; committed: (B, L) bool, the teacher's commits at `step`.
    teacher_tokens: (B, L) int64 the teacher's final tokens (= the token it wrote, where committed).
    teacher_records: name -> (B, L[, V]) slice of the trajectory's records at this step (CPU), if any.
    """

    step: int
    steps: int
    ids: torch.Tensor
    attention_mask: torch.Tensor
    window_start: int
    logits: torch.Tensor
    masked: torch.Tensor
    committed: torch.Tensor
    teacher_tokens: torch.Tensor
    teacher_records: dict[str, torch.Tensor]

    @property
    def written(self) -> torch.Tensor:
        """(B, L) int64: the teacher's token where committed this step, -1 elsewhere."""
        return torch.where(self.committed, self.teacher_tokens, torch.full_like(self.teacher_tokens, -1))


@torch.no_grad()
def iter_replay(model: Any, trajectory: Trajectory, steps: Iterable[int] | None = None,
                skip_empty: bool = False) -> Iterator[ReplayStep]:
    """Yield a ReplayStep per teacher step (all of them, or `steps`), batched over the trajectory's rows.
    skip_empty=True skips steps at which the teacher committed nothing in any row (Dream schedules
    with many steps have some). Use `trajectory.select(rows)` to replay a large batch in chunks."""
    mask_id = int(model.mask_token_id)
    if mask_id != trajectory.mask_token_id:
        raise ConfigError(f"replayed model's mask_token_id={mask_id} differs from the trajectory's "
                          f"{trajectory.mask_token_id}; teacher forcing needs the same tokenizer")
    traj = trajectory.to(model_device(model))
    P, S = traj.prompt_len, traj.steps
    order = range(S) if steps is None else list(steps)
    for s in order:
        if not 0 <= s < S:
            raise ConfigError(f"replay step={s} is outside 0..{S - 1}")
        committed = traj.committed_at(s)  # (B, L)
        if skip_empty and not bool(committed.any()):
            continue
        state = traj.state(s)
        attn = None if bool(state.attention_mask.all()) else state.attention_mask
        logits = window_logits(model, state.ids, attn, P)  # (B, L, V)
        recs = {k: v[s] for k, v in trajectory.records.items()}
        yield ReplayStep(step=s, steps=S, ids=state.ids, attention_mask=state.attention_mask, window_start=P,
                         logits=logits, masked=state.masked, committed=committed, teacher_tokens=traj.tokens,
                         teacher_records=recs)


def replay(model: Any, trajectory: Trajectory, on_step: Callable[[ReplayStep], None],
           steps: Iterable[int] | None = None, skip_empty: bool = False) -> int:
    """Run `iter_replay` and hand every step to `on_step`; returns the number of steps replayed."""
    n = 0
    for st in iter_replay(model, trajectory, steps=steps, skip_empty=skip_empty):
        on_step(st)
        n += 1
    return n
