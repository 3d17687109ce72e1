"""The paper's mechanistic diagnostics (docs/method.md §7), each a function returning plain numbers/arrays:

- stability lag distribution             `stability_lags`, `summarize_lags`      (own trajectory, top1 record)
- post-commit mismatch                   `post_commit_mismatch`                   (own trajectory, top1 record)
- teacher-forced commit-step flips and
  frontier logit margin                  `teacher_forced_diagnostics`, `step_flips`, `step_margins`
- error amplification at the first
  false commit                           `rollout_with_teacher`, `first_false_commit`, `align_traces`
- cross-corpus rank consistency          `rank_consistency` (Spearman / Pearson of two prior curves)
"""
from faircalib.diagnostics.amplification import (
                                                 AlignedTrace,
                                                 align_traces,
                                                 first_false_commit,
                                                 prob_discrepancy,
                                                 rollout_with_teacher,
)
from faircalib.diagnostics.rank import average_ranks, pearson, rank_consistency, spearman
from faircalib.diagnostics.stability import LagSummary, post_commit_mismatch, stability_lags, summarize_lags
from faircalib.diagnostics.teacher_forced import step_flips, step_margins, teacher_forced_diagnostics

__all__ = ["AlignedTrace", "LagSummary", "align_traces", "average_ranks", "first_false_commit", "pearson",
           "post_commit_mismatch", "prob_discrepancy", "rank_consistency", "rollout_with_teacher", "spearman",
           "stability_lags", "step_flips", "step_margins", "summarize_lags", "teacher_forced_diagnostics"]
