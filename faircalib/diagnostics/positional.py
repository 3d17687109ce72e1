"""Per-example and per-window-position error of a student (e.g. a quantized model) against its FP teacher,
on the teacher's own default-policy trajectory (teacher forcing, as teacher_forced.py), so that error
can be laid over the Stage I prior curve position by position -- the paper's central picture.

For every teacher step s and window position i:
  - flip: at the step where the teacher commits i, the student's argmax differs from the teacher's
    written token (each position is committed once, so the flip indicator is per (example, position));
  - KL(FP || Q) of the two next-token distributions at every still-masked position (before the commit),
    averaged over the steps i stays masked.
Both use the policies' view of the logits ([MASK] excluded).

Per example: flips (count), KL (mean over its masked (step, position) events). Per position: flip rate
and mean KL over examples. Plus `never_agree_per_sequence` on a model's own trajectory (stability.py's
post-commit mismatch, per row).

Boundary: one joint replay of teacher and student (faircalib.diffusion.iter_replay); tensors out.
"""
from __future__ import annotations

import torch

from faircalib.diagnostics.stability import _post_commit
from faircalib.diagnostics.teacher_forced import _policy_view


@torch.no_grad()
def positional_errors(student, teacher, teacher_traj, chunk: int = 32) -> dict:
    """-> {"flips": (B,) int64, "kl": (B,) float64, "flip_by_pos": (L,) float64 rate, "kl_by_pos": (L,)
    float64, "flip_matrix": (B, L) bool}. `teacher_traj`: the FP teacher's own trajectory (Trajectory)."""
    from faircalib.diffusion import iter_replay

    mask_id = int(student.mask_token_id)
    B, L = teacher_traj.batch_size, teacher_traj.gen_length
    flip = torch.zeros(B, L, dtype=torch.bool)
    kl_sum = torch.zeros(B, L, dtype=torch.float64)
    kl_cnt = torch.zeros(B, L, dtype=torch.float64)
    for r0 in range(0, B, chunk):
        sub = teacher_traj.select(slice(r0, r0 + chunk))
        rows = slice(r0, r0 + sub.batch_size)
        for st_q, st_t in zip(iter_replay(student, sub), iter_replay(teacher, sub)):
            zq = _policy_view(st_q.logits.float(), mask_id)  # (b, L, V)
            zt = _policy_view(st_t.logits.float(), mask_id)
            committed = st_q.committed.cpu()  # (b, L)
            pred = zq.argmax(-1).cpu()
            flip[rows] |= committed & (pred != st_q.teacher_tokens.cpu())
            lq, lt = torch.log_softmax(zq, -1), torch.log_softmax(zt, -1)
            pt = lt.exp()
            kl = torch.where(pt > 0, pt * (lt - lq), torch.zeros_like(pt)).sum(-1).double().cpu()  # (b, L)
            m = st_q.masked.cpu()
            kl_sum[rows] += torch.where(m, kl, torch.zeros_like(kl))
            kl_cnt[rows] += m.double()
    kl_pos = kl_sum / kl_cnt.clamp_min(1)  # (B, L) mean KL of each position while masked
    return {"flips": flip.sum(1), "kl": kl_sum.sum(1) / kl_cnt.sum(1).clamp_min(1),
            "flip_by_pos": flip.double().mean(0), "kl_by_pos": kl_pos.mean(0), "flip_matrix": flip}


def never_agree_per_sequence(top1: torch.Tensor, commit_step: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """top1 (S, B, L), commit_step / tokens (B, L) of a model's own trajectory -> (B,) float64: the fraction
    of the row's committed positions (with >= 1 later step) whose later top-1 never equals the committed
    token; NaN for a row with no such position."""
    post, disagree, valid = _post_commit(top1, commit_step, tokens)
    never = valid & (disagree.sum(0) == post.sum(0))  # (B, L)
    n = valid.sum(1).double()
    return torch.where(n > 0, never.sum(1).double() / n.clamp_min(1), torch.full_like(n, float("nan")))
