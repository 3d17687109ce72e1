"""Stability lag and post-commit mismatch on a hand-built trajectory record."""
from __future__ import annotations

import pytest
import torch

from faircalib.diagnostics import post_commit_mismatch, stability_lags, summarize_lags


def _case():
    # S = 5 steps, B = 2, L = 3.  top1[s, b, i] is the argmax on the state before step s's commit.
    tokens = torch.tensor([[7, 8, 9], [4, 4, 4]])
    commit = torch.tensor([[0, 2, 4], [0, 1, 3]], dtype=torch.int16)
    top1 = torch.tensor([
        [[1, 1, 1], [4, 4, 4]],
        [[5, 1, 1], [4, 4, 4]],
        [[7, 1, 1], [4, 4, 4]],
        [[6, 8, 1], [4, 4, 4]],
        [[7, 3, 1], [4, 4, 0]],
    ], dtype=torch.int32)
    return top1, commit, tokens


def test_stability_lags_by_hand():
    lags, censored = stability_lags(*_case())
    # row 0: pos0 (c=0) agrees at s=2,4, disagrees at 1,3 -> settled after the last disagreement: 3 - 0 = 3;
    #        pos1 (c=2) agrees at 3, disagrees at 4 -> lag 2, censored; pos2 committed at the last step -> -1
    # row 1: pos0, pos1 agree at every later step -> 0; pos2 (c=3) disagrees at 4 -> lag 1, censored
    assert lags.tolist() == [[3, 2, -1], [0, 0, 1]]
    assert censored.tolist() == [[False, True, False], [False, False, True]]
    s = summarize_lags(lags, censored)
    assert s.n_positions == 5 and s.mean == pytest.approx(6 / 5) and s.max == 3
    assert s.histogram == [2, 1, 1, 1]
    assert s.frac_unstable == pytest.approx(3 / 5) and s.frac_censored == pytest.approx(2 / 5)
    assert s.p50 == pytest.approx(1.0)


def test_post_commit_mismatch_by_hand():
    out = post_commit_mismatch(*_case())
    # per-position disagree fractions: row0 pos0 2/4, pos1 1/2; row1 pos0 0/4, pos1 0/3, pos2 1/1 (never agrees)
    assert out["n_positions"] == 5
    assert out["mean_disagree_rate"] == pytest.approx((0.5 + 0.5 + 0 + 0 + 1) / 5)
    assert out["never_agree_rate"] == pytest.approx(1 / 5)
    assert out["per_sequence_disagree"] == pytest.approx([0.5, 1 / 3])


def test_a_perfectly_stable_trajectory_has_zero_lag_and_mismatch():
    tokens = torch.tensor([[3, 1, 2]])
    commit = torch.tensor([[1, 0, 2]], dtype=torch.int16)
    top1 = tokens.view(1, 1, 3).expand(4, 1, 3).clone()
    top1[0, 0, 0] = 9  # before its commit a position may show anything
    lags, cens = stability_lags(top1, commit, tokens)
    assert lags.tolist() == [[0, 0, 0]] and not cens.any()
    out = post_commit_mismatch(top1, commit, tokens)
    assert out["mean_disagree_rate"] == 0.0 and out["never_agree_rate"] == 0.0 and out["n_positions"] == 3


def test_on_a_real_trajectory_record(byte_tokenizer):
    from faircalib.diffusion import generate
    from faircalib.models import tiny_model

    m = tiny_model("dream", vocab_size=len(byte_tokenizer), mask_token_id=byte_tokenizer.mask_token_id)
    traj = generate(m, [torch.tensor([5, 6, 7]), torch.tensor([8, 9])], steps=6, gen_length=6, record=("top1",))
    lags, _cens = stability_lags(traj.records["top1"], traj.commit_step, traj.tokens)
    valid = traj.commit_step.long() < 5
    assert bool(((lags >= 0) == valid).all())
    assert bool((lags[valid] <= 5 - traj.commit_step.long()[valid]).all())
    out = post_commit_mismatch(traj.records["top1"], traj.commit_step, traj.tokens)
    assert 0.0 <= out["never_agree_rate"] <= out["mean_disagree_rate"] + 1e-12 <= 1.0 + 1e-12
