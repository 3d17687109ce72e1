"""Commit-step flips and frontier margins: per-step functions and the replay loop with known answers."""
from __future__ import annotations

import pytest
import torch

from faircalib.diagnostics import step_flips, step_margins, teacher_forced_diagnostics
from faircalib.diffusion import DecodeConfig, Trajectory


def test_step_flips_and_margins_by_hand():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0],     # argmax 1
                            [5.0, 1.0, 2.0, 0.0],     # argmax 0 = [MASK] when mask id 0 -> 2
                            [0.0, 0.0, 0.0, 9.0]]])   # not committed: never counted
    committed = torch.tensor([[True, True, False]])
    written = torch.tensor([[1, 2, 0]])
    assert step_flips(logits, committed, written).tolist() == [1]  # pos1: 0 != 2
    assert step_flips(logits, committed, written, mask_token_id=0).tolist() == [0]
    assert step_margins(logits, committed, written).tolist() == [1.0, -3.0]  # 3-2 ; 2-5
    assert step_margins(logits, committed, written, mask_token_id=0).tolist() == [1.0, 1.0]  # 2-1 once [MASK] is out


def _teacher_traj():
    # B = 2 rows, L = 3, S = 3 steps; every position committed exactly once
    tokens = torch.tensor([[4, 5, 6], [7, 4, 5]])
    commit = torch.tensor([[2, 0, 1], [0, 0, 2]], dtype=torch.int16)
    prompt = torch.tensor([[1, 3], [0, 3]])
    cfg = DecodeConfig(policy="low_confidence", steps=3, gen_length=3, block_length=3, schedule="llada")
    return Trajectory(prompt, torch.tensor([[1, 1], [0, 1]]), tokens, commit, cfg, mask_token_id=2, pad_token_id=0)


def test_replay_counts_every_commit_event_once(fixed_logits):
    V = 8
    table = torch.zeros(2, 3, V)
    # student argmax per position: row0 [4, 1, 6] (pos1 flips), row1 [3, 3, 5] (pos0, pos1 flip)
    argmax = torch.tensor([[4, 1, 6], [3, 3, 5]])
    table.scatter_(-1, argmax.unsqueeze(-1), 2.0)
    table[..., 7] = 0.5  # the runner-up everywhere
    student = fixed_logits(table, mask_token_id=2)
    out = teacher_forced_diagnostics(student, _teacher_traj())
    assert out["flips_per_sequence"] == [1, 2] and out["mean_flips"] == 1.5
    assert out["commit_events"] == 6 and out["flip_rate"] == pytest.approx(3 / 6)
    # margins z(teacher token) - max other: agreeing positions 2 - 0.5 = 1.5 (x3); flipped positions 0 - 2 = -2
    # (row0 pos1 -> token 5, row1 pos1 -> token 4) and 0.5 - 2 = -1.5 (row1 pos0 -> token 7, the runner-up)
    assert out["mean_margin"] == pytest.approx((3 * 1.5 - 2.0 - 2.0 - 1.5) / 6)
    assert student.calls == 3  # one forward per step (no empty steps here)


def test_fp_teacher_has_no_flips_on_its_own_trajectory(byte_tokenizer):
    from faircalib.diffusion import generate
    from faircalib.models import tiny_model

    m = tiny_model("llada", vocab_size=len(byte_tokenizer), mask_token_id=byte_tokenizer.mask_token_id)
    traj = generate(m, [torch.tensor([5, 6, 7]), torch.tensor([8, 9])], steps=4, gen_length=8)
    out = teacher_forced_diagnostics(m, traj)
    assert out["flips_per_sequence"] == [0, 0] and out["commit_events"] == 16
    assert out["mean_margin"] >= 0  # greedy low-confidence writes the argmax
    other = tiny_model("llada", seed=5, vocab_size=len(byte_tokenizer), mask_token_id=byte_tokenizer.mask_token_id)
    assert teacher_forced_diagnostics(other, traj)["mean_flips"] > 0
