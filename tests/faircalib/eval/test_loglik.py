"""The masked-diffusion log-likelihood estimator against an exact enumeration, its determinism, the
greedy check and the rolling windows."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from faircalib.errors import ConfigError
from faircalib.eval.loglik import (
    exact_plan,
    greedy_matches,
    masked_loglikelihood,
    masked_nll,
    mc_plan,
    rolling_pairs,
    rows_needed,
)


def enc(tok, s):
    return tok(s, add_special_tokens=False)["input_ids"]


def enumerate_target(model, ctx, cont):
    """Independent reference: the estimator's target T = E_{m ~ U(1..L)} E_{|S| = m} [(L/m) sum_{i in S} CE_i]
    by enumerating every mask subset S (one unpadded forward pass each), plus the variance of one
    unstratified draw (for the Monte Carlo tolerance)."""
    L = len(cont)
    values, probs = [], []
    for m in range(1, L + 1):
        for S in itertools.combinations(range(L), m):
            x = torch.tensor(ctx + cont)
            for i in S:
                x[len(ctx) + i] = model.mask_token_id
            with torch.no_grad():
                logp = F.log_softmax(model(x[None]).float()[0], dim=-1)  # (T, V)
            ce = sum(-float(logp[len(ctx) + i, cont[i]]) for i in S)
            values.append(L / m * ce)
            probs.append(1.0 / (L * math.comb(L, m)))
    T = sum(p * v for p, v in zip(probs, values))
    var = sum(p * (v - T) ** 2 for p, v in zip(probs, values))
    return T, var


def test_plans_weight_every_position_once_in_expectation():
    # sum_r w_r |S_r| = L for both plans: a model with the same CE c everywhere gets T = L * c exactly
    for L in range(1, 6):
        p = exact_plan(L)
        assert p.rows == 2 ** L - 1
        assert abs(float((p.weights * p.masks.sum(1)).sum()) - L) < 1e-12
    g = torch.Generator().manual_seed(0)
    p = mc_plan(5, 20, g)
    assert sorted(p.masks.sum(1).tolist()) == sorted([1, 2, 3, 4, 5] * 4)  # stratified: each count n/L times
    assert abs(float((p.weights * p.masks.sum(1)).sum()) - 5) < 1e-12


def test_mc_estimate_matches_exact_enumeration(tiny_trained, byte_tokenizer, facts):
    """3-token continuation (7 mask subsets): Monte Carlo (no exact shortcut) within 4 sigma of the
    enumerated target; the exact path equals it; many small-mc_num seeds average to it (unbiased)."""
    tok = byte_tokenizer
    ctx, cont = enc(tok, facts[0][0]), enc(tok, " 64")  # a wrong answer: CE differs a lot across subsets
    assert len(cont) == 3
    T, var = enumerate_target(tiny_trained, ctx, cont)
    assert var > 1.0  # the case is not degenerate: different subsets give very different values
    n = 512
    est = masked_nll(tiny_trained, [(ctx, cont)], mc_num=n, exact_when_cheap=False, seed=3)[0]
    assert abs(est - T) < 4 * math.sqrt(var / n), (est, T, math.sqrt(var / n))
    exact = masked_nll(tiny_trained, [(ctx, cont)], mc_num=7, exact_when_cheap=True)[0]
    assert abs(exact - T) < 1e-4 * max(1.0, T)
    seeds = [masked_nll(tiny_trained, [(ctx, cont)], mc_num=4, exact_when_cheap=False, seed=s)[0] for s in range(60)]
    mean = sum(seeds) / len(seeds)
    assert abs(mean - T) < 4 * math.sqrt(var / (4 * 60)), (mean, T)


def test_mc_estimate_on_random_model_and_longer_continuation(tiny_random, byte_tokenizer):
    tok = byte_tokenizer
    ctx, cont = enc(tok, "In the beginning"), enc(tok, " God created")[:4]
    T, var = enumerate_target(tiny_random, ctx, cont)
    est = masked_nll(tiny_random, [(ctx, cont)], mc_num=256, exact_when_cheap=False, seed=1)[0]
    assert abs(est - T) < 4 * math.sqrt(var / 256) + 1e-6
    assert abs(masked_nll(tiny_random, [(ctx, cont)], mc_num=15)[0] - T) < 1e-4 * T  # 2^4 - 1 = 15: exact


def test_true_continuation_scores_higher(tiny_trained, byte_tokenizer, facts):
    tok = byte_tokenizer
    for prompt, answer in facts:
        wrong = {" 46": [" 64", " 47", " 45"], " 41": [" 14", " 42"], " earth": [" beginning", " heaven"],
                 " beginning": [" earth", " God"]}[answer]
        pairs = [(enc(tok, prompt), enc(tok, a)) for a in [answer] + wrong]
        ll = masked_loglikelihood(tiny_trained, pairs, mc_num=32, exact_when_cheap=False)
        assert ll[0] > max(ll[1:]) + 1.0, (prompt, ll)


def test_estimate_is_deterministic_and_independent_of_batching(tiny_random, byte_tokenizer):
    tok = byte_tokenizer
    pairs = [(enc(tok, "In the beginning God"), enc(tok, " created the heaven and")),
             (enc(tok, "12+34="), enc(tok, "46")), (enc(tok, "the earth."), enc(tok, " In the beginning God created"))]
    together = masked_nll(tiny_random, pairs, mc_num=16, batch_size=7, seed=5)
    alone = [masked_nll(tiny_random, [p], mc_num=16, batch_size=64, seed=5)[0] for p in reversed(pairs)][::-1]
    assert together == pytest.approx(alone, rel=1e-5)
    assert masked_nll(tiny_random, pairs, mc_num=16, batch_size=7, seed=5) == together
    assert masked_nll(tiny_random, pairs[2:], mc_num=16, seed=6) != together[2:]  # another seed, other draws


def test_rows_needed_counts_exact_and_mc_rows():
    pairs = [([1], [5]), ([1], [5, 6]), ([1], list(range(10, 20)))]
    assert rows_needed(pairs, 8) == 1 + 3 + 8
    assert rows_needed(pairs, 8, exact_when_cheap=False) == 24


def test_greedy_check(tiny_trained, byte_tokenizer, facts):
    tok = byte_tokenizer
    pairs = [(enc(tok, p), enc(tok, a)) for p, a in facts] + [(enc(tok, facts[0][0]), enc(tok, " 64"))]
    assert greedy_matches(tiny_trained, pairs, batch_size=2) == [True] * len(facts) + [False]


def test_bad_arguments_are_config_errors(tiny_random):
    with pytest.raises(ConfigError, match="mc_num"):
        masked_nll(tiny_random, [([1], [2])], mc_num=0)
    with pytest.raises(ConfigError, match="empty continuation"):
        masked_nll(tiny_random, [([1], [])])


def test_rolling_windows_cover_each_token_once():
    toks = list(range(100, 137))
    for max_len, ctx_len in ((8, 3), (16, 0), (64, 10), (5, 3)):
        pairs = rolling_pairs(toks, 7, max_len, ctx_len)
        assert [t for _, c in pairs for t in c] == toks
        assert pairs[0][0] == [7]
        assert all(len(c) + len(x) <= max_len and c for c, x in pairs)
        for c, x in pairs[1:]:
            start = toks.index(x[0])
            assert c == (toks[max(0, start - ctx_len):start] if ctx_len else [7])
    assert rolling_pairs([], 7, 8, 2) == []
    with pytest.raises(ConfigError):
        rolling_pairs(toks, 7, 8, 7)
