"""Prior accumulation on hand-computed tiny trajectories (docs/method.md §4)."""
from __future__ import annotations

import pytest
import torch

from faircalib.errors import ConfigError
from faircalib.probe import PositionPrior, PriorAccumulator, PriorSettings, minmax_over_masked, sharpness


def test_alpha_schedules_values():
    early, late = PriorSettings(), PriorSettings(schedule="late")
    # T = 4: u = 1, .75, .5, .25 ; alpha = 1 + 3 u^2
    assert [early.alpha(s, 4) for s in range(4)] == [4.0, 2.6875, 1.75, 1.1875]
    assert [late.alpha(s, 4) for s in range(4)] == [1.0, 1.1875, 1.75, 2.6875]
    assert [PriorSettings(schedule="uniform").alpha(s, 4) for s in range(4)] == [1.0] * 4
    assert PriorSettings(schedule="none").alpha(0, 4) == 0.0


def test_minmax_is_rowwise_over_masked_only():
    score = torch.tensor([[0.2, 0.8, 0.5, 0.9], [0.3, 0.3, 0.1, 0.0]])
    masked = torch.tensor([[True, True, True, False], [True, True, False, False]])
    out = minmax_over_masked(score, masked)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def test_sharpness_kinds():
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1]]]))
    assert abs(float(sharpness(logits, "prob")) - 0.7) < 1e-6
    assert abs(float(sharpness(logits, "margin")) - 0.5) < 1e-6
    ent = -(0.7 * torch.log(torch.tensor(0.7)) + 0.2 * torch.log(torch.tensor(0.2)) + 0.1 * torch.log(torch.tensor(0.1)))
    assert abs(float(sharpness(logits, "neg_entropy")) + float(ent)) < 1e-6


def _hand_rollout(settings):
    """L=3, T=3: step0 commits pos1, step1 pos0, step2 pos2; scores given per step."""
    acc = PriorAccumulator(1, 3, 3, settings)
    steps = [([True, True, True], [False, True, False], [0.5, 0.9, 0.1]),
             ([True, False, True], [True, False, False], [0.3, 0.0, 0.6]),
             ([False, False, True], [False, False, True], [0.0, 0.0, 0.4])]
    for s, (m, c, r) in enumerate(steps):
        acc.update(s, torch.tensor([m]), torch.tensor([c]), torch.tensor([r]))
    return acc


def test_hand_computed_weights():
    acc = _hand_rollout(PriorSettings())
    # alpha (T=3): 4, 7/3, 4/3. reliability: step0 [.5, 1, 0]; step1 [0, -, 1]; step2 single masked -> 0
    raw = torch.tensor([[0.5 + 7 / 3, 1 + 4, 1 + 4 / 3]], dtype=torch.float64)
    torch.testing.assert_close(acc.w, raw)
    torch.testing.assert_close(acc.finalize(), raw / raw.mean())
    assert abs(float(acc.finalize().mean()) - 1.0) < 1e-12
    frontier_only = _hand_rollout(PriorSettings(beta=0.0)).finalize()
    torch.testing.assert_close(frontier_only, torch.tensor([[7 / 3, 4, 4 / 3]], dtype=torch.float64) / (23 / 9))
    rel_only = _hand_rollout(PriorSettings(schedule="none")).finalize()
    torch.testing.assert_close(rel_only, torch.tensor([[0.5, 1.0, 1.0]], dtype=torch.float64) / (2.5 / 3))


def _random_rollouts(n, L, T, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        order = torch.randperm(L, generator=g)
        commit_step = torch.empty(L, dtype=torch.long)
        commit_step[order] = torch.arange(L) * T // L
        scores = torch.rand(T, L, generator=g)
        out.append((commit_step, scores))
    return out


def _accumulate(rollouts, settings, T):
    L = rollouts[0][0].numel()
    acc = PriorAccumulator(len(rollouts), L, T, settings)
    cs = torch.stack([r[0] for r in rollouts])  # (B, L)
    sc = torch.stack([r[1] for r in rollouts])  # (B, T, L)
    for s in range(T):
        acc.update(s, cs >= s, cs == s, sc[:, s])
    return acc.finalize()


def test_merge_of_shards_equals_single_pass_in_any_order():
    settings, T = PriorSettings(), 6
    rolls = _random_rollouts(7, 12, T, seed=0)
    whole = PositionPrior(_accumulate(rolls, settings, T), torch.arange(7), settings, {"seed": 0})
    a = PositionPrior(_accumulate(rolls[:3], settings, T), torch.arange(3), settings, {"seed": 0})
    b = PositionPrior(_accumulate(rolls[3:5], settings, T), torch.arange(3, 5), settings, {"seed": 0})
    c = PositionPrior(_accumulate(rolls[5:], settings, T), torch.arange(5, 7), settings, {"seed": 0})
    for parts in ([a, b, c], [c, a, b], [b, c, a]):
        merged = PositionPrior.merge(parts)
        assert torch.equal(merged.per_sample, whole.per_sample)
        assert torch.equal(merged.curve, whole.curve)
    with pytest.raises(ValueError, match="different settings"):
        PositionPrior.merge([a, PositionPrior(b.per_sample, b.sample_ids, PriorSettings(beta=0.5), b.meta)])
    with pytest.raises(ValueError, match="duplicate sample ids"):
        PositionPrior.merge([a, a])


def test_alignment_and_floor():
    curve = torch.tensor([[1.6, 1.2, 0.8, 0.4]], dtype=torch.float64)
    p = PositionPrior(curve, torch.tensor([0]), PriorSettings(), {})
    torch.testing.assert_close(p.aligned(6), torch.tensor([0.1, 0.1, 1.6, 1.2, 0.8, 0.4]))
    torch.testing.assert_close(p.aligned(6, floor=0.5), torch.tensor([0.5, 0.5, 1.6, 1.2, 0.8, 0.4]))
    torch.testing.assert_close(p.aligned(3), torch.tensor([1.2, 0.8, 0.4]))
    torch.testing.assert_close(p.aligned(4), curve[0].float())


def test_save_load_and_cache_key(tmp_path):
    settings = PriorSettings(gamma=3.0)
    meta = {"model_hash": "m", "data_hash": "d", "policy": "random", "steps": 8, "window": 4, "seed": 1}
    p = PositionPrior(torch.rand(3, 4, dtype=torch.float64) + 0.5, torch.tensor([5, 1, 3]), settings, meta)
    q = PositionPrior.load(p.save(tmp_path / "prior"))
    assert torch.equal(q.per_sample, p.per_sample) and q.sample_ids.tolist() == [1, 3, 5]
    assert q.settings == settings and q.cache_key() == p.cache_key()
    assert p.cache_key() != PositionPrior(p.per_sample, p.sample_ids, PriorSettings(), meta).cache_key()
    assert p.cache_key() != PositionPrior(p.per_sample, p.sample_ids, settings, {**meta, "seed": 2}).cache_key()


def test_settings_validation():
    with pytest.raises(ConfigError, match="^schedule: 'cubic' is not allowed; allowed: early, uniform, late, none$"):
        PriorSettings(schedule="cubic")
    with pytest.raises(ConfigError, match="^reliability: 'logit' is not allowed; allowed: prob, neg_entropy, margin$"):
        PriorSettings(reliability="logit")
    with pytest.raises(ConfigError, match="^beta: schedule 'none' with beta 0 leaves no term"):
        PriorSettings(schedule="none", beta=0.0)
