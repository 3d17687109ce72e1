"""Decoding configuration: which commit policy, how many steps, window/block sizes, sampling knobs and
what to record. Validation lives here (ConfigError naming the field); `resolve_config` fills the
model-dependent parts (the model's default policy, the schedule family, the block length).

Module boundary: pure configuration, no tensors and no model calls.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from faircalib.configs import Config, check_choice, check_int
from faircalib.errors import ConfigError

# -- policy names --------------------------------------------------------------------------------
LLADA_POLICIES = ("low_confidence",)
DREAM_CONFIDENCE_POLICIES = ("entropy", "maskgit_plus", "topk_margin")
DREAM_POLICIES = DREAM_CONFIDENCE_POLICIES + ("origin",)
POLICIES = ("random",) + LLADA_POLICIES + DREAM_POLICIES
SCHEDULES = ("llada", "dream")  # llada: even split per semi-AR block; dream: linspace timestep schedule
MAX_STEPS = 32767  # commit_step is stored as int16


def schedule_of(policy: str) -> str | None:
    """The schedule family a policy implies (None for `random`, which borrows the model's)."""
    if policy in LLADA_POLICIES:
        return "llada"
    if policy in DREAM_POLICIES:
        return "dream"
    return None


def _allowed(values: Iterable[str]) -> str:
    return ", ".join(values)


@dataclass(frozen=True)
class DecodeConfig(Config):
    """One decoding run. `policy=None` / `schedule=None` / `block_length=None` are resolved against the
    model by `resolve_config` (model.default_policy; the policy's schedule family; block = gen_length).

    Defaults follow docs/method.md §1 (steps = gen_length = 128, one block, greedy).
    """

    policy: str | None = None
    steps: int = 128
    gen_length: int = 128
    block_length: int | None = None
    # 0 = greedy; >0: Gumbel noise in float64 (low_confidence, and `random` on the LLaDA schedule) or
    # sampling from softmax(logits / temperature) (Dream policies, and `random` on the Dream schedule)
    temperature: float = 0.0
    alg_temp: float = 0.0  # Dream confidence policies: >0 samples the commit set from softmax(conf/alg_temp)
    # Dream policies only (Dream's `diffusion_generate` semantics): after the temperature, keep the top-p
    # nucleus (top_p < 1), then the top_k largest logits; confidence and argmax/sample use the filtered
    # distribution. None = no filter. Dream's documented calls use top_p=0.95 and get top_k=50 from
    # transformers' generation defaults (faircalib.models.defaults.FAMILY_DECODING["dream"]).
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    eps: float = 1e-3  # Dream: timesteps = linspace(1, eps, steps + 1)
    schedule: str | None = None  # only meaningful for `random`: "llada" | "dream" (default: the model's)

    def __post_init__(self) -> None:
        if self.policy is not None:
            check_choice("policy", self.policy, POLICIES)
        check_int("steps", self.steps, 1, MAX_STEPS)
        check_int("gen_length", self.gen_length, 1)
        check_int("seed", self.seed)
        if self.block_length is not None:
            check_int("block_length", self.block_length, 1, optional=True)
            if self.gen_length % self.block_length:
                _bad("block_length", f"{self.block_length} must divide gen_length={self.gen_length}")
            n_blocks = self.gen_length // self.block_length
            if self.steps % n_blocks:
                _bad("steps", f"{self.steps} must be divisible by the number of blocks (gen_length/block_length "
                              f"= {n_blocks})")
        for name in ("temperature", "alg_temp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                _bad(name, f"{value!r} must be a finite number >= 0")
        check_int("top_k", self.top_k, 1, optional=True)  # None = no filter
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float))
                                       or not 0.0 < self.top_p <= 1.0):
            _bad("top_p", f"{self.top_p!r} must be in (0, 1] or None (no filter)")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0.0 < self.eps < 1.0:
            _bad("eps", f"{self.eps!r} must be in (0, 1)")
        if self.schedule is not None:
            check_choice("schedule", self.schedule, SCHEDULES)
        if self.policy is not None:
            implied = schedule_of(self.policy)
            if implied is not None and self.schedule is not None and self.schedule != implied:
                _bad("schedule", f"{self.schedule!r} conflicts with policy={self.policy!r} (which uses the "
                                 f"{implied!r} schedule); leave schedule unset")
            if self.alg_temp > 0 and self.policy not in DREAM_CONFIDENCE_POLICIES:
                _bad("alg_temp", f"{self.alg_temp} only applies to the Dream confidence policies "
                                 f"({_allowed(DREAM_CONFIDENCE_POLICIES)}), not policy={self.policy!r}")
        family = self.schedule or (schedule_of(self.policy) if self.policy else None)
        if family == "llada" and (self.top_k is not None or self.top_p is not None):
            _bad("top_k" if self.top_k is not None else "top_p",
                 f"top_k/top_p apply to the Dream policies ({_allowed(DREAM_POLICIES)}) only, not to "
                 f"{self.policy or 'random'!r} on the LLaDA schedule; leave them unset")
        if family == "dream" and self.block_length not in (None, self.gen_length):
            _bad("block_length", f"{self.block_length} is not supported by the Dream schedule (no "
                                 f"semi-autoregressive blocks); leave it unset or equal to gen_length")

    # -- derived ------------------------------------------------------------------------------
    @property
    def resolved(self) -> bool:
        return self.policy is not None and self.schedule is not None and self.block_length is not None

    @property
    def n_blocks(self) -> int:
        return self.gen_length // (self.block_length or self.gen_length)

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.n_blocks


def _bad(field: str, problem: str) -> None:
    raise ConfigError(f"{field}: {problem}", field=field)


# the DecodeConfig fields a caller may set as decoding defaults/overrides (the seed is per call)
DECODE_FIELDS = tuple(f.name for f in fields(DecodeConfig) if f.name != "seed")


def model_default_policy(model: Any) -> str:
    policy = getattr(model, "default_policy", None)
    if policy not in POLICIES or policy == "random":
        raise ConfigError(f"model {type(model).__name__} declares default_policy={policy!r}; it must be one of "
                          f"{_allowed(LLADA_POLICIES + DREAM_POLICIES)}")
    return policy


def resolve_config(model: Any, cfg: DecodeConfig) -> DecodeConfig:
    """Fill policy (model default), schedule (the policy's family; `random` borrows the model's default
    policy's family) and block_length (= gen_length when unset). Re-validates the result."""
    policy = cfg.policy or model_default_policy(model)
    schedule = schedule_of(policy) or cfg.schedule or schedule_of(model_default_policy(model))
    block = cfg.block_length if cfg.block_length is not None else cfg.gen_length
    return replace(cfg, policy=policy, schedule=schedule, block_length=block)


# -- recording ----------------------------------------------------------------------------------
RECORD_DTYPES = {"top1": "int32", "top1_prob": "float16", "neg_entropy": "float16", "margin": "float16",
                 "probs": "float16"}


@dataclass(frozen=True)
class RecordSpec:
    """What `generate` stores per step for the answer window, each as an (S, B, L) array (probs:
    (S, B, L, V)) on the CPU in a compact dtype. Quantities are computed from the policy's view of the
    logits (the [MASK] column excluded, no temperature, no noise):

    top1 (int32): argmax token; top1_prob (float16): its probability; neg_entropy (float16): sum p log p;
    margin (float16): top-1 minus top-2 probability; probs (float16): the full distribution (large!).
    `max_bytes` bounds the total; exceeding it is a ConfigError before decoding starts.
    """

    top1: bool = True
    top1_prob: bool = True
    neg_entropy: bool = False
    margin: bool = False
    probs: bool = False
    max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if not isinstance(self.max_bytes, int) or self.max_bytes < 0:
            raise ConfigError(f"record max_bytes={self.max_bytes!r} must be a non-negative integer")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in RECORD_DTYPES if getattr(self, n))

    def nbytes(self, steps: int, batch: int, gen_length: int, vocab: int) -> int:
        per = {"top1": 4, "top1_prob": 2, "neg_entropy": 2, "margin": 2, "probs": 2 * vocab}
        return steps * batch * gen_length * sum(per[n] for n in self.names)

    @classmethod
    def coerce(cls, record: Any) -> RecordSpec | None:
        """None/False -> nothing; True -> defaults (top1 + top1_prob); a RecordSpec; or names to record."""
        if record is None or record is False:
            return None
        if record is True:
            return cls()
        if isinstance(record, cls):
            return record if record.names else None
        if isinstance(record, str):
            record = (record,)
        names = tuple(record)
        unknown = [n for n in names if n not in RECORD_DTYPES]
        if unknown:
            raise ConfigError(f"record fields {unknown} are unknown; allowed: {_allowed(RECORD_DTYPES)}")
        return cls(**{n: (n in names) for n in RECORD_DTYPES})
