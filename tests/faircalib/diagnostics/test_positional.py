"""Per-example / per-position teacher-forced errors: hand-known flips and KL with fixed-logit models, and
never_agree per sequence."""
from __future__ import annotations

import math

import pytest
import torch

from faircalib.diagnostics.positional import never_agree_per_sequence, positional_errors
from faircalib.diffusion import DecodeConfig, Trajectory


def _traj():
    tokens = torch.tensor([[4, 5, 6], [7, 4, 5]])
    commit = torch.tensor([[2, 0, 1], [0, 0, 2]], dtype=torch.int16)
    prompt = torch.tensor([[1, 3], [0, 3]])
    cfg = DecodeConfig(policy="low_confidence", steps=3, gen_length=3, block_length=3, schedule="llada")
    return Trajectory(prompt, torch.tensor([[1, 1], [0, 1]]), tokens, commit, cfg, mask_token_id=2, pad_token_id=0)


def test_flips_and_kl_by_hand(fixed_logits):
    V = 8
    t_table = torch.zeros(2, 3, V)
    t_table.scatter_(-1, torch.tensor([[4, 5, 6], [7, 4, 5]]).unsqueeze(-1), 3.0)
    teacher = fixed_logits(t_table, mask_token_id=2)
    same = positional_errors(teacher, teacher, _traj())
    assert same["flips"].tolist() == [0, 0] and float(same["kl"].abs().max()) < 1e-9
    s_table = t_table.clone()
    s_table[0, 1] = 0.0
    s_table[0, 1, 1] = 3.0  # row 0 position 1: argmax 1 != 5 -> a flip
    student = fixed_logits(s_table, mask_token_id=2)
    out = positional_errors(student, teacher, _traj())
    assert out["flips"].tolist() == [1, 0]
    assert out["flip_matrix"].tolist() == [[False, True, False], [False, False, False]]
    assert out["flip_by_pos"].tolist() == [0.0, 0.5, 0.0]
    # KL at the changed position (V-1 = 7 tokens in the policy view, [MASK]=2 excluded): teacher p puts
    # e^3/(e^3+6) on token 5, student the same mass on token 1
    pt = torch.full((7,), 1.0)
    idx5, idx1 = 4, 1  # positions of tokens 5 and 1 among the 7 non-mask tokens [0,1,3,4,5,6,7]
    pt[idx5] = math.e ** 3
    pt /= pt.sum()
    pq = torch.full((7,), 1.0)
    pq[idx1] = math.e ** 3
    pq /= pq.sum()
    kl = float((pt * (pt / pq).log()).sum())
    # row 0 position 1 is masked only at step 0 (committed at step 0): one event of KL kl among row 0's
    # masked events: step0: 3 positions, step1: positions 0, 2; step2: position 0 -> 6 events
    assert out["kl"][0].item() == pytest.approx(kl / 6, rel=1e-5)
    assert out["kl"][1].item() == pytest.approx(0.0, abs=1e-9)
    assert out["kl_by_pos"][1].item() == pytest.approx(kl / 2, rel=1e-5)  # mean over rows of per-row means


def test_never_agree_per_sequence():
    # S=3 steps, B=2, L=2
    tokens = torch.tensor([[1, 2], [3, 4]])
    commit = torch.tensor([[0, 2], [0, 1]])
    top1 = torch.tensor([[[1, 9], [3, 9]], [[5, 9], [3, 9]], [[5, 2], [3, 4]]])  # (S, B, L)
    out = never_agree_per_sequence(top1, commit, tokens)
    # row0: pos0 committed at 0, later top1 5,5 -> never; pos1 committed at last step -> not valid => 1/1
    # row1: pos0 later 3,3 agrees; pos1 committed at 1, later 4 agrees => 0/2
    assert out.tolist() == [1.0, 0.0]
