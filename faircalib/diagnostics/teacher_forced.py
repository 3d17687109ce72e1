"""Teacher-forced diagnostics (docs/method.md §7, paper §5.4 and App. D.3): a student (e.g. a quantized model)
is evaluated on the exact pre-commit states of the FP teacher's own default-policy trajectory.

- commit-step flips: at every teacher step, for the positions the teacher commits, count where the
  student's argmax differs from the token the teacher wrote; summed per sequence.
- frontier margin: for every teacher commit event (step s, position i, written token y*), the student's
  logit margin z(y*) - max_{v != y*} z(v) on that pre-commit state; averaged over commit events.

Both use the policies' view of the logits ([MASK] excluded: no policy ever writes it), and one replay
pass computes both.

Boundary: per-step functions on tensors + one replay loop (faircalib.diffusion.iter_replay).
"""
from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _policy_view(logits: torch.Tensor, mask_token_id: int | None) -> torch.Tensor:
    if mask_token_id is not None and 0 <= mask_token_id < logits.shape[-1]:
        logits = logits.clone()
        logits[..., mask_token_id] = NEG_INF
    return logits


def step_flips(logits: torch.Tensor, committed: torch.Tensor, written: torch.Tensor,
               mask_token_id: int | None = None) -> torch.Tensor:
    """logits: (B, L, V) student logits on the teacher's state; committed: (B, L) teacher commits this step;
    written: (B, L) the teacher's tokens -> (B,) int64 flips at this step."""
    pred = _policy_view(logits, mask_token_id).argmax(-1)  # (B, L)
    return ((pred != written.to(pred.device)) & committed.to(pred.device)).sum(-1).cpu()


def step_margins(logits: torch.Tensor, committed: torch.Tensor, written: torch.Tensor,
                 mask_token_id: int | None = None) -> torch.Tensor:
    """-> (n_events,) float32 margins z(y*) - max_{v != y*} z(v) at the committed positions (row-major)."""
    z = _policy_view(logits.float(), mask_token_id)  # (B, L, V)
    y = written.to(z.device).long().unsqueeze(-1)  # (B, L, 1)
    zy = z.gather(-1, y).squeeze(-1)  # (B, L)
    others = z.scatter(-1, y, NEG_INF).amax(-1)  # (B, L)
    return (zy - others)[committed.to(z.device)].cpu()


@torch.no_grad()
def teacher_forced_diagnostics(student, teacher_traj, chunk: int = 64) -> dict:
    """Replay `student` on `teacher_traj` (a Trajectory of the FP teacher with its default policy) ->
    {"flips_per_sequence": (B,) list, "mean_flips": float, "commit_events": int,
     "mean_margin": float, "margins": (n_events,) tensor, "flip_rate": flips / commit events}."""
    from faircalib.diffusion import iter_replay

    mask_id = int(student.mask_token_id)
    flips, margins = [], []
    for r0 in range(0, teacher_traj.batch_size, chunk):
        sub = teacher_traj.select(slice(r0, r0 + chunk))
        f = torch.zeros(sub.batch_size, dtype=torch.long)
        for st in iter_replay(student, sub, skip_empty=True):
            f += step_flips(st.logits, st.committed, st.teacher_tokens, mask_id)
            margins.append(step_margins(st.logits, st.committed, st.teacher_tokens, mask_id))
        flips.append(f)
    f = torch.cat(flips)
    m = torch.cat(margins) if margins else torch.zeros(0)
    events = int(m.numel())
    return {"flips_per_sequence": f.tolist(), "mean_flips": float(f.double().mean()), "commit_events": events,
            "flip_rate": float(f.sum()) / max(events, 1), "mean_margin": float(m.double().mean()) if events else
            float("nan"), "margins": m}
