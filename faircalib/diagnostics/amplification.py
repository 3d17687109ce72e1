"""Error amplification after the first false commit (docs/method.md §7, paper §5.4 / Figure 3).

The student decodes with its own (default) policy; at every step the teacher is run on the *same*
state and the per-step discrepancy is

    d_s = mean over window positions i of  sum_v (p_student(v | x_s, i) - p_teacher(v | x_s, i))^2

(probabilities over the policies' view, [MASK] excluded). The first false commit of a row is the step
at which the student first writes a token that differs from the teacher's token at that position (the
teacher's own trajectory on the same prompt). Traces are aligned at that step (offset 0) and averaged
over the rows that have one. Because discrepancy falls as a window fills up, the before/after means are
confounded with the step index; `excess_after` / `excess_before` compare each false-commit row with
the mean of the rows *without* a false commit at the same absolute step (the step-matched excess).

Boundary: `rollout_with_teacher` (one generate call with a teacher hook) + pure alignment functions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def prob_discrepancy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     mask_token_id: int | None = None) -> torch.Tensor:
    """(B, L, V) x2 -> (B,) mean over positions of the squared L2 distance between the distributions."""
    from faircalib.diagnostics.teacher_forced import _policy_view

    ps = F.softmax(_policy_view(student_logits.float(), mask_token_id), -1)
    pt = F.softmax(_policy_view(teacher_logits.float(), mask_token_id), -1)
    return (ps - pt).pow(2).sum(-1).mean(-1)


def first_false_commit(tokens: torch.Tensor, commit_step: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """(B, L) student tokens / commit steps, (B, L) teacher tokens -> (B,) int64 step of the first written
    token that differs from the teacher's (-1 if none)."""
    wrong = tokens.cpu() != teacher_tokens.cpu()  # (B, L)
    big = torch.iinfo(torch.int64).max
    first = torch.where(wrong, commit_step.long().cpu(), torch.full_like(commit_step.long().cpu(), big)).amin(-1)
    return torch.where(first == big, torch.full_like(first, -1), first)


@dataclass
class AlignedTrace:
    offsets: list[int]  # step - first false commit step
    mean: list[float]  # mean discrepancy at each offset over the rows that reach it
    count: list[int]  # rows contributing at each offset
    n_rows: int
    n_false: int  # rows with a false commit
    mean_before: float  # mean d_s over (row, step) with step < first false commit
    mean_after: float  # ... with step >= first false commit
    mean_clean: float  # mean d_s over rows without a false commit
    mean_all: float
    excess_before: float  # mean over (false row, step < f) of d - (clean rows' mean d at that step)
    excess_after: float  # ... over (false row, step >= f); NaN when every row has a false commit

    @property
    def jump(self) -> float:
        return self.mean_after - self.mean_before

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["jump"] = self.jump
        d["false_commit_rate"] = self.n_false / self.n_rows if self.n_rows else float("nan")
        return d


def _nanmean(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else float("nan")


def align_traces(trace: torch.Tensor, first_false: torch.Tensor) -> AlignedTrace:
    """trace: (B, S) per-step discrepancy; first_false: (B,) (-1 = none) -> AlignedTrace over offsets
    -(S-1) .. S-1 (only offsets some row reaches are listed)."""
    trace = trace.double().cpu()
    B, S = trace.shape
    f = first_false.long().cpu()
    has = f >= 0
    offsets = list(range(-(S - 1), S))
    sums = torch.zeros(2 * S - 1, dtype=torch.float64)
    counts = torch.zeros(2 * S - 1, dtype=torch.long)
    steps = torch.arange(S)
    for b in torch.nonzero(has).flatten().tolist():
        idx = steps - int(f[b]) + (S - 1)  # offset index of every step
        sums.index_add_(0, idx, trace[b])
        counts.index_add_(0, idx, torch.ones(S, dtype=torch.long))
    keep = counts > 0
    pre = steps.view(1, S) < f[has].view(-1, 1)  # (n_false, S)
    before, after = trace[has][pre], trace[has][~pre]
    clean = trace[~has].mean(0) if bool((~has).any()) else torch.full((S,), float("nan"), dtype=torch.float64)
    excess = trace[has] - clean.view(1, S)  # (n_false, S)
    return AlignedTrace(
        offsets=[o for o, k in zip(offsets, keep.tolist()) if k],
        mean=(sums[keep] / counts[keep]).tolist(), count=counts[keep].tolist(), n_rows=B, n_false=int(has.sum()),
        mean_before=_nanmean(before), mean_after=_nanmean(after), mean_clean=_nanmean(trace[~has]),
        mean_all=_nanmean(trace), excess_before=_nanmean(excess[pre]), excess_after=_nanmean(excess[~pre]))


@torch.no_grad()
def rollout_with_teacher(student, teacher, prompts, config, record=("top1",), teacher_rows: int | None = None):
    """Decode `prompts` with `student` under `config` (a DecodeConfig; policy None = the student's default)
    while running `teacher` on every pre-commit state -> (trajectory with `record`, (B', S) discrepancy).
    teacher_rows: only the first k rows get the teacher (B' = k; saves a forward on the rest), None = all."""
    from faircalib.diffusion import generate, window_logits

    mask_id = int(student.mask_token_id)
    per_step: list[torch.Tensor] = []

    def on_step(st) -> None:
        k = st.ids.shape[0] if teacher_rows is None else min(teacher_rows, st.ids.shape[0])
        am = st.attention_mask[:k]
        t_logits = window_logits(teacher, st.ids[:k], None if bool(am.all()) else am, st.window_start)  # (k, L, V)
        per_step.append(prob_discrepancy(st.logits[:k], t_logits, mask_id).cpu())

    traj = generate(student, prompts, config=config, record=record, on_step=on_step)
    return traj, torch.stack(per_step, 1)  # (B, S)
