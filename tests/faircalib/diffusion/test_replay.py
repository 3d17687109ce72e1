"""Teacher forcing: replaying a trajectory feeds a model exactly the states the teacher decoded from."""
from __future__ import annotations

import pytest
import torch

from faircalib.diffusion import generate, iter_replay, replay
from faircalib.errors import ConfigError


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_replay_reproduces_teacher_states_and_logits(tiny_pair, prompts, arch):
    teacher = tiny_pair[arch]
    seen = []
    block = 4 if arch == "llada" else None
    traj = generate(teacher, prompts, steps=6, gen_length=12, block_length=block, seed=2, on_step=seen.append)
    steps = list(iter_replay(teacher, traj))
    assert [st.step for st in steps] == list(range(6))
    for st, ref in zip(steps, seen):
        assert torch.equal(st.ids, ref.ids)
        assert torch.equal(st.attention_mask, ref.attention_mask)
        assert torch.equal(st.masked, ref.masked)
        assert torch.equal(st.committed, ref.committed)
        assert torch.equal(st.written, ref.written)
        assert torch.equal(st.logits, ref.logits)  # same model + same states -> bit-identical logits
        # teacher forcing the teacher: no commit-step flips
        assert bool((st.logits.argmax(-1)[st.committed] == st.teacher_tokens[st.committed]).all())


def test_replay_other_model_same_states_batched(tiny_pair, prompts):
    from faircalib.models import tiny_model

    teacher = tiny_pair["dream"]
    student = tiny_model("dream", seed=7).init_weights(7, std=0.2).eval()  # stands in for a quantized model
    traj = generate(teacher, prompts, "random", steps=5, gen_length=10, seed=4, record=True)
    got = []
    n = replay(student, traj, got.append)
    assert n == 5
    flips = 0
    for st in got:
        assert torch.equal(st.ids, traj.state(st.step).ids)
        ref = student(st.ids, attention_mask=st.attention_mask, window=(st.window_start, st.ids.shape[1]))
        torch.testing.assert_close(st.logits, ref)
        assert set(st.teacher_records) == {"top1", "top1_prob"}
        assert st.teacher_records["top1"].shape == (4, 10)
        flips += int(((st.logits.argmax(-1) != st.teacher_tokens) & st.committed).sum())
    assert flips > 0  # a different model disagrees somewhere: the comparison is not vacuous
    # per-sample replay of one row equals the batched replay (padding is exact)
    one = next(iter_replay(student, traj.select([1]), steps=[3]))
    torch.testing.assert_close(one.logits[0], got[3].logits[1], atol=1e-5, rtol=1e-5)


def test_replay_step_selection_and_errors(tiny_pair, prompts, fakes):
    teacher = tiny_pair["dream"]
    traj = generate(teacher, prompts, steps=12, gen_length=6, seed=0)  # many Dream steps commit nothing
    empty = [s for s in range(12) if not bool(traj.committed_at(s).any())]
    assert empty  # the Dream schedule has zero-commit steps here
    kept = [st.step for st in iter_replay(teacher, traj, skip_empty=True)]
    assert kept == [s for s in range(12) if s not in empty]
    assert [st.step for st in iter_replay(teacher, traj, steps=[5, 1])] == [5, 1]
    with pytest.raises(ConfigError, match="step=12"):
        list(iter_replay(teacher, traj, steps=[12]))
    other = fakes.TableModel(torch.zeros(6, fakes.V), mask_id=3)
    with pytest.raises(ConfigError, match="mask_token_id"):
        list(iter_replay(other, traj))
