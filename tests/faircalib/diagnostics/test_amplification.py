"""Error amplification: first false commit, trace alignment by hand, and the teacher hook on real states."""
from __future__ import annotations

import math

import pytest
import torch

from faircalib.diagnostics import align_traces, first_false_commit, prob_discrepancy, rollout_with_teacher


def test_first_false_commit_by_hand():
    tokens = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    teacher = torch.tensor([[1, 0, 3], [4, 5, 6], [0, 8, 0]])
    commit = torch.tensor([[0, 2, 1], [0, 1, 2], [3, 0, 1]], dtype=torch.int16)
    assert first_false_commit(tokens, commit, teacher).tolist() == [2, -1, 1]


def test_align_traces_by_hand():
    trace = torch.tensor([[1.0, 1.0, 5.0, 6.0], [0.5, 0.5, 0.5, 0.5], [2.0, 7.0, 8.0, 9.0]])
    a = align_traces(trace, torch.tensor([2, -1, 1]))
    assert a.offsets == [-2, -1, 0, 1, 2]
    assert a.mean == pytest.approx([1.0, 1.5, 6.0, 7.0, 9.0]) and a.count == [1, 2, 2, 2, 1]
    assert a.n_rows == 3 and a.n_false == 2
    assert a.mean_before == pytest.approx(4 / 3) and a.mean_after == pytest.approx(7.0)
    assert a.jump == pytest.approx(7.0 - 4 / 3) and a.mean_clean == pytest.approx(0.5)
    assert a.mean_all == pytest.approx(41 / 12)
    assert a.as_dict()["false_commit_rate"] == pytest.approx(2 / 3)
    # step-matched excess over the clean row (0.5 at every step): before = (0.5 + 0.5 + 1.5) / 3,
    # after = (4.5 + 5.5 + 6.5 + 7.5 + 8.5) / 5
    assert a.excess_before == pytest.approx(2.5 / 3) and a.excess_after == pytest.approx(6.5)
    none_clean = align_traces(trace[[0, 2]], torch.tensor([2, 1]))
    assert math.isnan(none_clean.excess_after) and math.isnan(none_clean.mean_clean)


def test_prob_discrepancy_by_hand():
    s = torch.log(torch.tensor([[[0.5, 0.5, 1e-30], [1.0, 1e-30, 1e-30]]]))
    t = torch.log(torch.tensor([[[1.0, 1e-30, 1e-30], [1.0, 1e-30, 1e-30]]]))
    # position 0: (0.5^2 + 0.5^2) = 0.5; position 1: 0 -> mean 0.25
    assert prob_discrepancy(s, t).tolist() == pytest.approx([0.25])


def test_teacher_runs_on_the_students_own_states(byte_tokenizer):
    from faircalib.diffusion import DecodeConfig, generate, iter_replay
    from faircalib.models import tiny_model

    kw = {"vocab_size": len(byte_tokenizer), "mask_token_id": byte_tokenizer.mask_token_id}
    teacher, student = tiny_model("dream", seed=0, **kw), tiny_model("dream", seed=3, **kw)
    prompts = [torch.tensor([5, 6, 7]), torch.tensor([8, 9])]
    cfg = DecodeConfig(steps=5, gen_length=5)
    traj, disc = rollout_with_teacher(student, teacher, prompts, cfg)
    assert disc.shape == (2, 5) and bool((disc > 0).all())
    alone = generate(student, prompts, config=cfg)
    assert torch.equal(traj.tokens, alone.tokens) and torch.equal(traj.commit_step, alone.commit_step)
    for st_t, st_s in zip(iter_replay(teacher, traj), iter_replay(student, traj)):
        expect = prob_discrepancy(st_s.logits, st_t.logits, student.mask_token_id)
        torch.testing.assert_close(disc[:, st_t.step], expect)
    _, first = rollout_with_teacher(student, teacher, prompts, cfg, teacher_rows=1)
    assert first.shape == (1, 5)
    torch.testing.assert_close(first, disc[:1], rtol=1e-4, atol=1e-9)
    _, same = rollout_with_teacher(teacher, teacher, prompts, cfg)
    assert float(same.abs().max()) == 0.0
