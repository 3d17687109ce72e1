"""Every commit policy on hand-computed cases: which positions commit at which step, block boundaries,
schedule counts, Gumbel / alg_temp sampling determinism and distribution."""
from __future__ import annotations

import math

import pytest
import torch

from faircalib.diffusion import DecodeConfig, generate, llada_transfer_counts, schedule_counts
from faircalib.diffusion.policies import add_gumbel_noise, llada_proposals, sampled_commit
from faircalib.errors import ConfigError

MASK = 5  # the fakes' [MASK] id (conftest.MASK)
PROMPT = [torch.tensor([1, 2, 3])]

# Eight distributions over the 5 real tokens; row i is rolled by i so the argmax token is (argmax + i) % 5.
ROWS = [[0.50, 0.46, 0.02, 0.01, 0.01], [0.40, 0.15, 0.15, 0.15, 0.15], [0.70, 0.10, 0.10, 0.05, 0.05],
        [0.28, 0.05, 0.05, 0.05, 0.57], [0.90, 0.025, 0.025, 0.025, 0.025], [0.35, 0.33, 0.32, 1e-9, 1e-9],
        [0.60, 0.38, 0.01, 0.005, 0.005], [0.25, 0.20, 0.20, 0.20, 0.15]]
# By hand: top-1 prob   .50 .40 .70 .57 .90 .35 .60 .25 -> order 4 2 6 3 0 1 5 7
#          margin        .04 .25 .60 .29 .875 .02 .22 .05 -> order 4 2 3 1 6 7 0 5
#          -entropy     -.87 -1.50 -1.01 -1.13 -.46 -1.10 -.77 -1.60 -> order 4 6 0 2 5 3 1 7
ROLLED = [r[-(i % 5):] + r[:-(i % 5)] if i % 5 else r for i, r in enumerate(ROWS)]
ARGMAX = [0, 1, 2, 2, 4, 0, 1, 2]


def steps_of(traj) -> list[int]:
    return traj.commit_step[0].tolist()


# ------------------------------------------------------------------------------------------ schedules
def test_schedule_counts_by_hand(fakes):
    assert schedule_counts("llada", 10, 4) == [3, 3, 2, 2]  # 10 = 4*2 + 2 -> remainder to the first two steps
    assert schedule_counts("llada", 7, 3) == [3, 2, 2]
    assert schedule_counts("llada", 8, 4, block_length=4) == [2, 2, 2, 2]  # 2 blocks x 2 steps
    assert schedule_counts("llada", 12, 4, block_length=6) == [3, 3, 3, 3]
    # Dream, L=8, steps=4: ts = 1, .75025, .5005, .25075, .001
    #   step 0: int(8 * (1 - .75025/1))      = int(1.998) = 1
    #   step 1: int(7 * (1 - .5005/.75025))  = int(2.330) = 2
    #   step 2: int(5 * (1 - .25075/.5005))  = int(2.495) = 2
    #   step 3: the rest                      = 3
    assert schedule_counts("dream", 8, 4) == [1, 2, 2, 3]
    # L=4, steps=2: int(4 * .4995) = 1, then 3
    assert schedule_counts("dream", 4, 2) == [1, 3]
    for L, S in [(16, 16), (32, 5), (7, 30)]:
        c = schedule_counts("dream", L, S)
        assert sum(c) == L and len(c) == S
        ts = [1 + (1e-3 - 1) * i / S for i in range(S + 1)]
        n = L
        for i in range(S - 1):  # independent float64 recomputation of the formula
            assert c[i] == int(n * (1 - ts[i + 1] / ts[i])), (L, S, i)
            n -= c[i]


def test_llada_counts_per_row(fakes):
    counts = llada_transfer_counts(torch.tensor([10, 7, 3]), 4)
    assert counts.tolist() == [[3, 3, 2, 2], [2, 2, 2, 1], [1, 1, 1, 0]]


# ------------------------------------------------------------------------------------------ LLaDA
def test_low_confidence_one_block_hand_case(fakes):
    conf = [0.5, 3, 1, 4, 2, 5, 0.2, 2.5, 1.5, 3.5]  # descending: 5 3 9 1 7 4 8 2 0 6
    toks = [1, 2, 3, 4, 0, 1, 2, 3, 4, 0]
    m = fakes.TableModel(fakes.peaked_table(conf, toks), "low_confidence")
    traj = generate(m, PROMPT, steps=4, gen_length=10)
    assert traj.policy == "low_confidence"
    # counts [3, 3, 2, 2]: {5,3,9} {1,7,4} {8,2} {0,6}
    assert steps_of(traj) == [3, 1, 2, 0, 1, 0, 3, 1, 2, 0]
    assert traj.tokens[0].tolist() == toks  # never the (high-logit) [MASK]
    assert traj.commits_per_step()[:, 0].tolist() == [3, 3, 2, 2]
    assert traj.commit_step.dtype == torch.int16


def test_low_confidence_block_boundaries(fakes):
    # block 2 is far more confident, but semi-AR blocks force block 1 first
    conf = [1, 2, 3, 4, 9, 8, 9.5, 7]
    m = fakes.TableModel(fakes.peaked_table(conf, [0] * 8))
    traj = generate(m, PROMPT, steps=4, gen_length=8, block_length=4)
    # block 0 (steps 0-1): {3,2} then {1,0}; block 1 (steps 2-3): {6,4} then {5,7}
    assert steps_of(traj) == [1, 1, 0, 0, 2, 3, 2, 3]
    # remainder to the earliest steps inside each block: block 5, 3 steps per block -> [2, 2, 1]
    m2 = fakes.TableModel(fakes.peaked_table([float(i) for i in range(10)], [0] * 10))
    traj2 = generate(m2, PROMPT, steps=6, gen_length=10, block_length=5)
    assert traj2.commits_per_step()[:, 0].tolist() == [2, 2, 1, 2, 2, 1]
    assert steps_of(traj2) == [2, 1, 1, 0, 0, 5, 4, 4, 3, 3]


def test_low_confidence_uses_top1_prob_order(fakes):
    m = fakes.TableModel(fakes.prob_table(ROLLED))
    traj = generate(m, PROMPT, steps=4, gen_length=8)
    assert steps_of(traj) == [2, 2, 0, 1, 0, 3, 1, 3]  # pairs from order 4 2 | 6 3 | 0 1 | 5 7
    assert traj.tokens[0].tolist() == ARGMAX


def test_add_gumbel_noise_matches_llada_formula(fakes):
    logits = torch.randn(2, 3, 7)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    noisy = add_gumbel_noise(logits, 0.7, g1)
    u = torch.rand((2, 3, 7), dtype=torch.float64, generator=g2)
    assert noisy.dtype == torch.float64
    torch.testing.assert_close(noisy, logits.double().exp() / (-torch.log(u)) ** 0.7, rtol=0, atol=0)
    assert add_gumbel_noise(logits, 0.0, None) is logits


def test_llada_confidence_is_clean_prob_of_noisy_argmax(fakes):
    logits = torch.tensor([[[2.0, 1.9, -1.0, 0.0]]]).expand(1, 200, 4).contiguous()
    x0, p = llada_proposals(logits, 5.0, torch.Generator().manual_seed(0))
    clean = torch.softmax(logits, -1)
    assert len(set(x0[0].tolist())) > 1  # the noise does change the argmax
    torch.testing.assert_close(p, clean.gather(-1, x0.unsqueeze(-1)).squeeze(-1))


def test_gumbel_decoding_deterministic_by_seed(fakes):
    m = fakes.TableModel(fakes.peaked_table([0.3] * 12, [0] * 12))  # flat-ish: noise decides tokens
    kw = {"steps": 6, "gen_length": 12, "block_length": 6, "temperature": 1.0}
    a, b = generate(m, PROMPT, seed=3, **kw), generate(m, PROMPT, seed=3, **kw)
    c = generate(m, PROMPT, seed=4, **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.commit_step, b.commit_step)
    assert not torch.equal(a.tokens, c.tokens)
    assert not bool((a.tokens == MASK).any())


# ------------------------------------------------------------------------------------------ Dream
@pytest.mark.parametrize("policy,expected", [
    ("maskgit_plus", [2, 3, 1, 2, 0, 3, 1, 3]),  # counts [1,2,2,3] over 4 | 2 6 | 3 0 | 1 5 7
    ("topk_margin", [3, 2, 1, 1, 0, 3, 2, 3]),   # 4 | 2 3 | 1 6 | 7 0 5
    ("entropy", [1, 3, 2, 3, 0, 2, 1, 3]),       # 4 | 6 0 | 2 5 | 3 1 7
])
def test_dream_confidence_policies_hand_case(policy, expected, fakes):
    m = fakes.TableModel(fakes.prob_table(ROLLED), "entropy")
    traj = generate(m, PROMPT, policy, steps=4, gen_length=8)
    assert steps_of(traj) == expected
    assert traj.tokens[0].tolist() == ARGMAX
    assert traj.commits_per_step()[:, 0].tolist() == [1, 2, 2, 3]


def test_dream_default_policy_is_entropy(fakes):
    m = fakes.TableModel(fakes.prob_table(ROLLED), "entropy")
    assert generate(m, PROMPT, steps=4, gen_length=8).policy == "entropy"


def test_origin_transfer_probability_and_completion(fakes):
    B, L, S = 3000, 8, 4
    m = fakes.TableModel(fakes.prob_table(ROLLED), "entropy")
    traj = generate(m, [torch.tensor([1, 2])] * B, "origin", steps=S, gen_length=L, seed=11)
    assert bool((traj.commit_step >= 0).all()) and bool((traj.commit_step < S).all())
    frac0 = (traj.commit_step == 0).double().mean().item()
    assert abs(frac0 - (1 - 0.75025)) < 0.01  # p_transfer = 1 - s/t at step 0
    # step 1 transfers 1 - .5005/.75025 of what is still masked
    left = (traj.commit_step >= 1).double().sum().item()
    frac1 = (traj.commit_step == 1).double().sum().item() / left
    assert abs(frac1 - (1 - 0.5005 / 0.75025)) < 0.01
    assert torch.equal(traj.tokens[0], torch.tensor(ARGMAX))
    again = generate(m, [torch.tensor([1, 2])] * B, "origin", steps=S, gen_length=L, seed=11)
    assert torch.equal(again.commit_step, traj.commit_step)


def test_alg_temp_samples_commit_set_from_softmax(fakes):
    # L=4, steps=2 -> step 0 commits exactly one position, drawn from softmax(neg_entropy / alg_temp)
    rows = [ROWS[4], ROWS[6], ROWS[0], ROWS[7]]
    m = fakes.TableModel(fakes.prob_table(rows), "entropy")
    B, alg_temp = 4000, 0.5
    traj = generate(m, [torch.tensor([1])] * B, "entropy", steps=2, gen_length=4, alg_temp=alg_temp, seed=2)
    first = (traj.commit_step == 0)
    assert first.sum(1).eq(1).all()
    p = torch.tensor(rows, dtype=torch.float64)
    negent = (p * torch.log(p + 1e-10)).sum(1)
    want = torch.softmax(negent / alg_temp, 0)
    got = first.double().mean(0)
    assert (got - want).abs().max().item() < 0.03, (got, want)
    assert got.argmax().item() == 0 and got.min().item() > 0.02  # sampled, not top-k
    again = generate(m, [torch.tensor([1])] * B, "entropy", steps=2, gen_length=4, alg_temp=alg_temp, seed=2)
    assert torch.equal(again.commit_step, traj.commit_step)


def test_sampled_commit_survives_softmax_underflow(fakes):
    conf = torch.tensor([[0.0, -200.0, -400.0, -600.0]])
    chosen = sampled_commit(conf, torch.ones(1, 4, dtype=torch.bool), torch.tensor([3]), 0.01,
                            torch.Generator().manual_seed(0))
    assert chosen.tolist() == [[True, True, True, False]]


# ------------------------------------------------------------------------------------------ random
def test_random_policy_model_independent_and_scheduled(fakes):
    a = fakes.TableModel(fakes.prob_table(ROLLED), "entropy")
    b = fakes.TableModel(fakes.peaked_table([5, 4, 3, 2, 1, 0, 1, 2], [3] * 8), "entropy")
    ta = generate(a, PROMPT * 3, "random", steps=4, gen_length=8, seed=9)
    tb = generate(b, PROMPT * 3, "random", steps=4, gen_length=8, seed=9, temperature=0.8)
    assert torch.equal(ta.commit_step, tb.commit_step)  # same sets: model- and temperature-independent
    assert ta.commits_per_step().T.tolist() == [[1, 2, 2, 3]] * 3  # Dream schedule borrowed from the model
    assert ta.tokens[0].tolist() == ARGMAX  # token = teacher argmax at temperature 0
    tc = generate(a, PROMPT * 3, "random", steps=4, gen_length=8, seed=10)
    assert not torch.equal(ta.commit_step, tc.commit_step)
    assert not torch.equal(ta.commit_step[0], ta.commit_step[1])  # rows draw different sets


def test_random_policy_llada_schedule_honours_blocks(fakes):
    m = fakes.TableModel(fakes.peaked_table([1.0] * 12, [2] * 12), "low_confidence")
    traj = generate(m, PROMPT * 4, "random", steps=6, gen_length=12, block_length=4, seed=1)
    assert traj.config.schedule == "llada"
    cs = traj.commit_step.long()
    for blk in range(3):  # block j is decoded during steps 2j, 2j+1 only, 2 tokens each
        part = cs[:, 4 * blk:4 * blk + 4]
        assert bool(((part >= 2 * blk) & (part < 2 * blk + 2)).all())
    assert traj.commits_per_step().T.tolist() == [[2] * 6] * 4
    assert bool((traj.tokens == 2).all())
    # explicit schedule override: the Dream schedule on a LLaDA model
    m8 = fakes.TableModel(fakes.peaked_table([1.0] * 8, [2] * 8), "low_confidence")
    td = generate(m8, PROMPT, "random", steps=4, gen_length=8, schedule="dream")
    assert td.commits_per_step()[:, 0].tolist() == [1, 2, 2, 3]


# ------------------------------------------------------------------------------------------ config
def test_config_errors_name_the_field(fakes):
    m = fakes.TableModel(fakes.prob_table(ROLLED))
    with pytest.raises(ConfigError, match="^policy: 'greedy' is not allowed; allowed: random, low_confidence, entropy"):
        generate(m, PROMPT, "greedy", steps=4, gen_length=8)
    with pytest.raises(ConfigError, match="^block_length: 3 must divide gen_length=8$"):
        generate(m, PROMPT, steps=4, gen_length=8, block_length=3)
    with pytest.raises(ConfigError, match="^steps: 3 must be divisible by the number of blocks"):
        generate(m, PROMPT, steps=3, gen_length=8, block_length=4)
    with pytest.raises(ConfigError, match="alg_temp"):
        generate(m, PROMPT, "low_confidence", steps=4, gen_length=8, alg_temp=0.5)
    with pytest.raises(ConfigError, match="^block_length: 4 is not supported by the Dream schedule"):
        generate(m, PROMPT, "entropy", steps=4, gen_length=8, block_length=4)
    with pytest.raises(ConfigError, match="temperature"):
        DecodeConfig(temperature=-1.0)
    with pytest.raises(ConfigError, match="steps"):
        DecodeConfig(steps=0)
    with pytest.raises(ConfigError, match="unknown decode option"):
        generate(m, PROMPT, steps=4, gen_length=8, top_q=0.5)
    with pytest.raises(ConfigError, match="^schedule: 'dream' conflicts"):
        DecodeConfig(policy="low_confidence", schedule="dream")
    with pytest.raises(ConfigError, match="mask token"):
        generate(m, [torch.tensor([1, MASK])], steps=4, gen_length=8)
    bad = fakes.TableModel(fakes.prob_table(ROLLED), default_policy="best")
    with pytest.raises(ConfigError, match="default_policy='best'"):
        generate(bad, PROMPT, steps=4, gen_length=8)


def test_engine_feeds_reconstructed_states_and_window_only(fakes):
    m = fakes.TableModel(fakes.prob_table(ROLLED))
    traj = generate(m, [torch.tensor([1, 2, 3]), torch.tensor([4])], steps=4, gen_length=8)
    assert len(m.calls) == 4
    for s, (ids, window) in enumerate(m.calls):
        assert window == (3, 11)
        assert torch.equal(ids, traj.state(s).ids)
    assert traj.state(0).ids[1].tolist() == [0, 0, 4] + [MASK] * 8  # left-padded with pad id 0
    assert math.isclose(float(traj.state(4).masked.float().sum()), 0.0)
