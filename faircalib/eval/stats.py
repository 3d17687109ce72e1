"""Paired comparisons between quantization methods: a bootstrap confidence interval over examples x seeds
and a verdict read from it (never from a point estimate).

Data layout: for methods A and B, a per-(seed, example) metric `m[s, e]` measured on the SAME held-out
examples with the SAME seeds (a seed fixes the probe commit sets, the calibration sample and the quantizer
seed for both methods), so `d[s, e] = m_B[s, e] - m_A[s, e]` pairs them.

The interval resamples seeds and examples independently with replacement (a two-way crossed bootstrap),
so both sources of variation -- which calibration run you got, and which examples you tested on -- widen
it. One replicate's statistic is the grid mean over the resampled seeds x examples; with multiplicity
vectors c_s (n_s,) and c_e (n_e,) that is c_s^T d c_e / (n_s n_e), computed for all replicates at once.

Verdicts for a claimed ordering "B better than A" (direction +1 when higher is better, -1 when lower is):
  holds        the whole 95% interval lies on the claimed side of 0
  reversed     the whole interval lies on the other side
  not resolved the interval contains 0 (a tie within the data's resolution; never reported as a failure)

Boundary: pure tensor statistics; knows nothing about models.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from faircalib.errors import ConfigError

VERDICTS = ("holds", "reversed", "not resolved")


@dataclass(frozen=True)
class PairedCI:
    delta: float  # mean of d over seeds x examples (B - A)
    ci_low: float
    ci_high: float
    n_seeds: int
    n_examples: int
    verdict: str  # for the claimed direction given to paired_bootstrap

    def to_dict(self) -> dict:
        return {"delta": self.delta, "ci_low": self.ci_low, "ci_high": self.ci_high, "n_seeds": self.n_seeds,
                "n_examples": self.n_examples, "verdict": self.verdict}


def verdict(ci_low: float, ci_high: float, direction: int = 1) -> str:
    """'holds' / 'reversed' / 'not resolved' for the claim sign(delta) == direction."""
    if direction not in (1, -1):
        raise ConfigError(f"direction={direction}: use +1 (higher is better) or -1 (lower is better)")
    lo, hi = (ci_low, ci_high) if direction == 1 else (-ci_high, -ci_low)
    if lo > 0:
        return "holds"
    if hi < 0:
        return "reversed"
    return "not resolved"


def paired_bootstrap(a: torch.Tensor, b: torch.Tensor, direction: int = 1, n_boot: int = 4000,
                     level: float = 0.95, seed: int = 0) -> PairedCI:
    """a, b: (n_seeds, n_examples) per-(seed, example) values of methods A and B (NaN = missing, dropped
    example-wise for both). -> PairedCI of B - A with a percentile interval at `level`.

    A deterministic method measured once (FP, RTN) can be given as (1, n_examples): it is broadcast
    against the other method's seeds."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.ndim == 1:
        a = a.unsqueeze(0)
    if b.ndim == 1:
        b = b.unsqueeze(0)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"paired_bootstrap: methods were measured on different examples ({a.shape[1]} vs "
                          f"{b.shape[1]}); pair them on the same held-out set")
    if a.shape[0] != b.shape[0]:
        if 1 not in (a.shape[0], b.shape[0]):
            raise ConfigError(f"paired_bootstrap: {a.shape[0]} vs {b.shape[0]} seeds; give both the same seeds, or "
                              f"one single-run (deterministic) method")
        a, b = torch.broadcast_tensors(a, b)
    d = b - a  # (n_s, n_e)
    keep = ~torch.isnan(d).any(0)
    d = d[:, keep]
    n_s, n_e = d.shape
    if n_e == 0:
        raise ConfigError("paired_bootstrap: no example has finite values for both methods")
    if not 0 < level < 1:
        raise ConfigError(f"level={level} must be in (0, 1)")
    g = torch.Generator().manual_seed(seed)
    # multiplicities of a with-replacement resample = counts of uniform index draws
    cs = torch.zeros(n_boot, n_s, dtype=torch.float64)
    cs.scatter_add_(1, torch.randint(0, n_s, (n_boot, n_s), generator=g), torch.ones(n_boot, n_s, dtype=torch.float64))
    ce = torch.zeros(n_boot, n_e, dtype=torch.float64)
    ce.scatter_add_(1, torch.randint(0, n_e, (n_boot, n_e), generator=g), torch.ones(n_boot, n_e, dtype=torch.float64))
    stats = ((cs @ d) * ce).sum(1) / (n_s * n_e)  # (n_boot,)
    q = torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(stats, q).tolist()
    return PairedCI(delta=float(d.mean()), ci_low=lo, ci_high=hi, n_seeds=n_s, n_examples=n_e,
                    verdict=verdict(lo, hi, direction))


def mean_std(values: list[float]) -> dict:
    """{"mean", "std" (sample, ddof 1; 0 for one value), "n_seeds"} of per-seed summary values."""
    vals = [float(v) for v in values]
    if not vals:
        raise ConfigError("mean_std needs at least one value")
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return {"mean": m, "std": sd, "n_seeds": len(vals)}
