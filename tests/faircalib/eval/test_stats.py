"""Paired bootstrap over examples x seeds: coverage and width on synthetic data with a known answer, and
verdicts read from the interval."""
from __future__ import annotations

import pytest
import torch

from faircalib.errors import ConfigError
from faircalib.eval.stats import mean_std, paired_bootstrap, verdict


def test_ci_width_matches_the_analytic_standard_error_for_example_noise():
    # one seed, n examples, d ~ N(mu, sigma^2): the 95% CI half-width should be ~1.96 sigma / sqrt(n)
    g = torch.Generator().manual_seed(0)
    n, mu, sigma = 2000, 0.3, 1.0
    a = torch.zeros(1, n, dtype=torch.float64)
    b = mu + sigma * torch.randn(1, n, generator=g, dtype=torch.float64)
    ci = paired_bootstrap(a, b, n_boot=3000)
    half = (ci.ci_high - ci.ci_low) / 2
    assert abs(half - 1.96 * sigma / n ** 0.5) < 0.1 * 1.96 * sigma / n ** 0.5
    assert ci.ci_low < mu < ci.ci_high and ci.verdict == "holds"
    assert abs(ci.delta - float(b.mean())) < 1e-12


def test_coverage_is_near_95_percent_with_seed_and_example_effects():
    # d[s, e] = mu + seed effect + example effect + noise; the crossed bootstrap should cover mu ~95%
    mu, hits, trials = 0.5, 0, 120
    for t in range(trials):
        g = torch.Generator().manual_seed(100 + t)
        n_s, n_e = 6, 300
        seed_eff = 0.5 * torch.randn(n_s, 1, generator=g, dtype=torch.float64)
        ex_eff = 1.0 * torch.randn(1, n_e, generator=g, dtype=torch.float64)
        noise = 1.0 * torch.randn(n_s, n_e, generator=g, dtype=torch.float64)
        a = torch.randn(n_s, n_e, generator=g, dtype=torch.float64)
        b = a + mu + seed_eff + ex_eff + noise
        ci = paired_bootstrap(a, b, n_boot=800, seed=t)
        hits += ci.ci_low <= mu <= ci.ci_high
    assert 0.85 <= hits / trials <= 1.0  # percentile bootstrap with few seeds runs slightly narrow


def test_ignoring_seed_variation_would_be_too_narrow():
    # a large seed effect must widen the interval compared with the same data without it
    g = torch.Generator().manual_seed(1)
    base = torch.randn(5, 400, generator=g, dtype=torch.float64)
    with_seeds = base + 2.0 * torch.randn(5, 1, generator=g, dtype=torch.float64)
    zero = torch.zeros(5, 400, dtype=torch.float64)
    w0 = paired_bootstrap(zero, base).ci_high - paired_bootstrap(zero, base).ci_low
    w1 = paired_bootstrap(zero, with_seeds).ci_high - paired_bootstrap(zero, with_seeds).ci_low
    assert w1 > 3 * w0


def test_verdicts_and_direction():
    assert verdict(0.1, 0.4) == "holds"
    assert verdict(-0.4, -0.1) == "reversed"
    assert verdict(-0.1, 0.2) == "not resolved"
    assert verdict(-0.4, -0.1, direction=-1) == "holds"  # lower is better (flips, KL)
    zero = torch.zeros(3, 500, dtype=torch.float64)
    tie = paired_bootstrap(zero, zero + 1e-3 * torch.randn(3, 500, generator=torch.Generator().manual_seed(2),
                                                             dtype=torch.float64))
    assert tie.verdict == "not resolved"
    worse = paired_bootstrap(zero, zero + 1.0, direction=-1)
    assert worse.verdict == "reversed" and worse.delta == pytest.approx(1.0)


def test_deterministic_rows_broadcast_and_nan_examples_drop():
    a = torch.tensor([[1.0, 0.0, float("nan"), 1.0]])  # e.g. RTN, one run
    b = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])  # two seeds
    ci = paired_bootstrap(a, b)
    assert ci.n_seeds == 2 and ci.n_examples == 3
    assert ci.delta == pytest.approx((0 + 1 + 0 + 0 + 1 - 1) / 6)
    with pytest.raises(ConfigError, match="different examples"):
        paired_bootstrap(torch.zeros(1, 3), torch.zeros(1, 4))
    with pytest.raises(ConfigError, match="seeds"):
        paired_bootstrap(torch.zeros(2, 3), torch.zeros(3, 3))


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n_seeds": 3}
    assert mean_std([5.0]) == {"mean": 5.0, "std": 0.0, "n_seeds": 1}
