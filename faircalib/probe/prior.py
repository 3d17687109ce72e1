"""The Stage I position prior (docs/method.md §4), as pure tensor code.

For every probe sample and every window position i, over the steps of a random-commit teacher rollout:

    w_i = sum_t [ alpha(t) * 1{i in C_t}  +  beta * r_t(i) * 1{i in M_t} ]

C_t = positions committed at step t (the frontier hit), M_t = positions still masked at step t (before
that step's commit), r_t(i) = the teacher's sharpness at i min-max normalised across M_t (row-wise),
alpha(t) the early-boost schedule. Each sample's w is normalised to mean 1 over the window; the prior is
the mean over samples. `PositionPrior` keeps the per-sample vectors (keyed by sample id) so shards from
many workers merge exactly and order-independently, and aligns the curve to Stage II sequences (last L
positions, floor elsewhere).

Steps are indexed s = 0..T-1 in decoding order; the schedule's u = t/T with t = T - s, so u = 1 at the
first step and 1/T at the last.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from faircalib.configs import Config, check_choice, check_float, set_field
from faircalib.errors import ConfigError

SCHEDULES = ("early", "uniform", "late", "none")
RELIABILITY = ("prob", "neg_entropy", "margin")
PRIOR_FORMAT_VERSION = 1
DEFAULT_FLOOR = 0.1  # ours (docs/method.md §6): the weight of positions outside the answer window


@dataclass(frozen=True)
class PriorSettings(Config):
    """How per-step signals become weights. Defaults: docs/method.md §4 (a_min 1, a_max 4, gamma 2, beta 1,
    token-probability reliability). The alignment floor is a Stage II setting (`CalibConfig.floor`)."""

    schedule: str = "early"
    a_min: float = 1.0
    a_max: float = 4.0
    gamma: float = 2.0
    beta: float = 1.0
    reliability: str = "prob"

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("a_min", "a_max", "gamma", "beta"):
            set_field(self, name, check_float(name, getattr(self, name), 0.0))
        check_choice("reliability", self.reliability, RELIABILITY)
        if self.a_max < self.a_min:
            raise ConfigError(f"a_max: expected a number >= a_min ({self.a_min}), got {self.a_max}", field="a_max")
        if self.schedule == "none" and self.beta == 0:
            raise ConfigError("beta: schedule 'none' with beta 0 leaves no term in the prior; set beta > 0 or a "
                              "schedule in early, uniform, late", field="beta")

    def alpha(self, step: int, total_steps: int) -> float:
        """Frontier-hit weight of decoding step `step` (0 = first) out of `total_steps`."""
        if self.schedule == "none":
            return 0.0
        if self.schedule == "uniform":
            return 1.0
        u = (total_steps - step) / total_steps  # 1 at the first step, 1/T at the last
        if self.schedule == "late":
            u = 1.0 - u
        return self.a_min + (self.a_max - self.a_min) * u ** self.gamma


def sharpness(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Teacher sharpness per position. logits: (B, L, V) -> (B, L) float32."""
    p = torch.softmax(logits.float(), dim=-1)
    if kind == "prob":
        return p.amax(-1)
    if kind == "neg_entropy":
        return (p * torch.log(p.clamp_min(1e-30))).sum(-1)
    if kind == "margin":
        top2 = p.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    raise ConfigError(f"reliability={kind!r} is not allowed; use one of {', '.join(RELIABILITY)}")


def minmax_over_masked(score: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Row-wise min-max normalisation over the masked positions: (B, L) -> (B, L) in [0, 1], 0 where
    not masked. A row whose masked scores are all equal (incl. a single masked position) gets 0: no
    position is more reliable than another."""
    big = torch.finfo(score.dtype).max
    lo = torch.where(masked, score, big).amin(-1, keepdim=True)  # (B, 1)
    hi = torch.where(masked, score, -big).amax(-1, keepdim=True)
    span = hi - lo
    norm = torch.where(span > 0, (score - lo) / span.clamp_min(1e-30), torch.zeros_like(score))
    return torch.where(masked, norm, torch.zeros_like(score))


class PriorAccumulator:
    """Accumulates w for a batch of rollouts step by step; `finalize()` gives per-sample vectors."""

    def __init__(self, batch: int, window: int, total_steps: int, settings: PriorSettings):
        self.settings = settings
        self.total_steps = total_steps
        self.w = torch.zeros(batch, window, dtype=torch.float64)  # (B, L)
        self.frontier = torch.zeros(batch, window, dtype=torch.float64)
        self.reliability = torch.zeros(batch, window, dtype=torch.float64)

    def update(self, step: int, masked_before: torch.Tensor, committed: torch.Tensor,
               score: torch.Tensor | None) -> None:
        """masked_before, committed: (B, L) bool; score: (B, L) teacher sharpness (None if beta == 0)."""
        a = self.settings.alpha(step, self.total_steps)
        f = a * committed.double().cpu()
        self.frontier += f
        self.w += f
        if self.settings.beta > 0:
            if score is None:
                raise ValueError("score is required when beta > 0")
            r = self.settings.beta * minmax_over_masked(score.float().cpu(), masked_before.cpu()).double()
            self.reliability += r
            self.w += r

    def finalize(self) -> torch.Tensor:
        """Per-sample weights normalised to mean 1 over the window: (B, L) float64."""
        mean = self.w.mean(-1, keepdim=True)
        if bool((mean <= 0).any()):
            raise ValueError("a probe sample accumulated no weight (all-zero signal); check T, L and the settings")
        return self.w / mean


@dataclass
class PositionPrior:
    """Per-sample prior vectors (N, L) keyed by `sample_ids` (N,), plus what produced them."""

    per_sample: torch.Tensor  # (N, L) float64, each row mean 1
    sample_ids: torch.Tensor  # (N,) int64, unique
    settings: PriorSettings
    meta: dict  # probe facts: model hash, data hash, policy, steps, window, seed, ...

    def __post_init__(self) -> None:
        if self.per_sample.ndim != 2 or self.sample_ids.shape != (self.per_sample.shape[0],):
            raise ValueError("per_sample must be (N, L) and sample_ids (N,)")
        order = torch.argsort(self.sample_ids)
        self.sample_ids = self.sample_ids[order].long()
        self.per_sample = self.per_sample[order].double()
        if len(self.sample_ids) > 1 and bool((self.sample_ids[1:] == self.sample_ids[:-1]).any()):
            raise ValueError("duplicate sample ids in a prior")

    @property
    def window(self) -> int:
        return self.per_sample.shape[1]

    @property
    def n_samples(self) -> int:
        return self.per_sample.shape[0]

    @property
    def curve(self) -> torch.Tensor:
        """Mean over samples: (L,) float64, mean 1."""
        return self.per_sample.mean(0)

    @classmethod
    def merge(cls, parts: list[PositionPrior]) -> PositionPrior:
        """Exact, order-independent union of shards (rows sorted by sample id)."""
        if not parts:
            raise ValueError("nothing to merge")
        first = parts[0]
        for p in parts[1:]:
            if p.settings != first.settings or p.window != first.window:
                raise ValueError("cannot merge priors with different settings or windows")
            if _merge_meta(p.meta) != _merge_meta(first.meta):
                raise ValueError("cannot merge priors probed with different model/data/policy settings")
        return cls(torch.cat([p.per_sample for p in parts]), torch.cat([p.sample_ids for p in parts]),
                   first.settings, dict(first.meta))

    def aligned(self, seq_len: int, floor: float = DEFAULT_FLOOR) -> torch.Tensor:
        """Stage II position weights for a length-S sequence: the curve on the last L positions, `floor`
        elsewhere; if S < L the last S entries of the curve. (S,) float32."""
        c = self.curve
        L = c.numel()
        if seq_len <= L:
            return c[L - seq_len:].float()
        w = torch.full((seq_len,), float(floor), dtype=torch.float64)
        w[seq_len - L:] = c
        return w.float()

    # ------------------------------------------------------------------ persistence
    def cache_key(self) -> str:
        return prior_cache_key(self.settings, self.meta)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"per_sample": self.per_sample.contiguous(), "sample_ids": self.sample_ids.contiguous(),
                   "curve": self.curve.contiguous()}, str(d / "prior.safetensors"))
        (d / "prior.json").write_text(json.dumps({
            "format_version": PRIOR_FORMAT_VERSION, "settings": asdict(self.settings), "meta": self.meta,
            "cache_key": self.cache_key(), "n_samples": self.n_samples, "window": self.window,
        }, indent=2, sort_keys=True))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> PositionPrior:
        d = Path(directory)
        info = json.loads((d / "prior.json").read_text())
        if info.get("format_version") != PRIOR_FORMAT_VERSION:
            raise ValueError(f"{d}: prior format {info.get('format_version')} is not {PRIOR_FORMAT_VERSION}")
        t = load_file(str(d / "prior.safetensors"))
        return cls(t["per_sample"], t["sample_ids"], PriorSettings(**info["settings"]), info["meta"])


# what a prior depends on besides its PriorSettings (the probe driver fills all of them; "schedule" is the
# commit-count family the random policy follows, "batch_size" fixes how commit sets are drawn per batch)
_KEY_FIELDS = ("model_hash", "data_hash", "policy", "schedule", "steps", "window", "block_length", "seed",
               "temperature", "batch_size")


def _merge_meta(meta: dict) -> dict:
    return {k: meta.get(k) for k in _KEY_FIELDS}


def prior_cache_key(settings: PriorSettings, meta: dict) -> str:
    """sha256 of everything the prior depends on: model weights, probe data, policy schedule, T, L,
    alpha/beta/reliability settings, seed, probe batch size (docs/method.md §4). Not the Stage II floor."""
    payload = {"v": PRIOR_FORMAT_VERSION, "settings": asdict(settings), **_merge_meta(meta)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
