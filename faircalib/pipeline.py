"""One method run: a frozen `MethodConfig` (method, bits, probe settings + ablation switch, calibration
data) and `run_method(model, tokenizer, cfg)` -> (quantized copy, info).

    cfg = MethodConfig(method="faircalib", bits="w4a4")                 # SPEC.md defaults
    qmodel, info = run_method(model, tokenizer, cfg)                     # probes, then calibrates
    cfg = MethodConfig.ablation_row("frontier_only")                     # beta = 0

Methods: fp (unchanged copy), rtn, quarot, flatquant (uniform position weights), qdrop, faircalib (the
same Stage II engine as flatquant with `prior.aligned(S, floor)` as position weights). QDrop with the
prior (paper App. E.2) is `method="qdrop", qdrop_weighted=True`.

Boundary: wiring only. Stage I = faircalib.probe, Stage II = faircalib.quant.quantize (the one quantizer).
"""
from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

import faircalib
from faircalib.errors import ConfigError
from faircalib.probe import DEFAULT_FLOOR, PositionPrior, PriorSettings, ProbeConfig, probe_prior
from faircalib.quant.config import SETTINGS, CalibConfig, QuantConfig

METHODS = ("fp", "rtn", "quarot", "flatquant", "qdrop", "faircalib")
BITS = ("w4a4", "w3a4", "w8a8", "w4a8", "w4a16", "w8a16", "w4a3", "w3a3")

# the paper's ablation rows (Table 3 and Table 4(b)): name -> (method, prior settings or None)
ABLATIONS: dict[str, tuple[str, PriorSettings | None]] = {
    "uniform": ("flatquant", None),                                         # Table 3 "baseline"
    "frontier_only": ("faircalib", PriorSettings(beta=0.0)),                 # early-boost frontier hits only
    "reliability_only": ("faircalib", PriorSettings(schedule="none")),       # Table 4(b) "w/o" alpha
    "both": ("faircalib", PriorSettings()),                                  # FAIR-Calib (= early-boost)
    "schedule_uniform": ("faircalib", PriorSettings(schedule="uniform")),
    "schedule_late": ("faircalib", PriorSettings(schedule="late")),
    "schedule_early": ("faircalib", PriorSettings(schedule="early")),
}

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class MethodConfig:
    """Everything one method run depends on. Defaults: SPEC.md (calibration 128 x 1024 tokens of real
    text, FlatQuant optimiser, prior floor 0.1, Stage I per ProbeConfig). Calibration text defaults to
    `builtin:mix:train` (the offline stand-in for WikiText-2; disjoint from every held-out split)."""

    method: str = "faircalib"
    bits: str = "w4a4"
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    floor: float = DEFAULT_FLOOR
    qdrop_weighted: bool = False
    calib_source: str = "builtin:mix:train"
    calib_n: int = 128
    calib_seq_len: int = 1024
    calib_seed: int = 0
    calib: CalibConfig = field(default_factory=CalibConfig)
    seed: int = 0  # QuantConfig seed (QuaRot signs, QDrop drops, block training order)

    def __post_init__(self) -> None:
        if isinstance(self.probe, Mapping):
            object.__setattr__(self, "probe", ProbeConfig.from_dict(self.probe))
        if isinstance(self.calib, Mapping):
            object.__setattr__(self, "calib", CalibConfig.from_dict(self.calib))
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is not supported; allowed: {', '.join(METHODS)}")
        if self.bits.lower() not in SETTINGS:
            raise ConfigError(f"bits={self.bits!r} is not supported; allowed: {', '.join(SETTINGS)}")
        object.__setattr__(self, "bits", self.bits.lower())
        if not 0.0 <= self.floor:
            raise ConfigError(f"floor={self.floor} must be >= 0")
        if self.qdrop_weighted and self.method != "qdrop":
            raise ConfigError("qdrop_weighted=True applies to method='qdrop' only (faircalib is weighted already)")
        for name in ("calib_n", "calib_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (2 if name == "calib_seq_len" else 1):
                raise ConfigError(f"{name}={v!r} must be a positive integer (calib_seq_len >= 2)")

    # ------------------------------------------------------------------ derived
    @property
    def uses_prior(self) -> bool:
        return self.method == "faircalib" or (self.method == "qdrop" and self.qdrop_weighted)

    @property
    def needs_calibration_data(self) -> bool:
        return self.method not in ("fp", "rtn")

    def quant_config(self) -> QuantConfig:
        return QuantConfig.from_bits(self.bits, method=self.method, seed=self.seed)

    @classmethod
    def ablation_row(cls, name: str, **kw: Any) -> MethodConfig:
        """The config of one ablation row (`ABLATIONS`), other fields from `kw` (e.g. probe=..., bits=...)."""
        if name not in ABLATIONS:
            raise ConfigError(f"ablation={name!r} is unknown; allowed: {', '.join(ABLATIONS)}")
        method, settings = ABLATIONS[name]
        cfg = cls(method=method, **kw)
        if settings is not None:
            cfg = replace(cfg, probe=cfg.probe.replace(prior=settings))
        return cfg

    def replace(self, **kw: Any) -> MethodConfig:
        return replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["probe"] = self.probe.to_dict()
        d["calib"] = self.calib.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MethodConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"method config has unknown field(s) {unknown}; allowed: {', '.join(sorted(names))}")
        return cls(**d)


def calibration_ids(tokenizer, cfg: MethodConfig) -> torch.Tensor:
    """(calib_n, calib_seq_len) token ids of fully observed text (SPEC.md §3)."""
    from faircalib.data import sample_token_sequences

    return sample_token_sequences(tokenizer, cfg.calib_source, cfg.calib_n, cfg.calib_seq_len, cfg.calib_seed)


def _ids_hash(ids: torch.Tensor) -> str:
    t = ids.detach().long().cpu().contiguous()
    return hashlib.sha256(f"{tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest()


def run_method(model, tokenizer, cfg: MethodConfig, prior: PositionPrior | None = None, *,
               calib_ids: torch.Tensor | None = None, state_dir: str | Path | None = None,
               progress: ProgressFn | None = None, device: str | torch.device = "cpu",
               inplace: bool = False) -> tuple[Any, dict[str, Any]]:
    """Quantize (a copy of) `model` with `cfg.method` -> (model, info).

    prior: the Stage I prior for faircalib / weighted qdrop; None = probe `model` now with cfg.probe.
      A given prior must have been probed with cfg.probe.prior (ConfigError otherwise).
    calib_ids: (N, S) calibration ids to use instead of drawing cfg.calib_n x cfg.calib_seq_len from
      cfg.calib_source (lets a benchmark give every method the same data).
    info: method config, quantization info (faircalib.quant), prior key/curve, data hash, wall times.
    """
    t0 = time.perf_counter()
    emit = progress or (lambda event: None)
    info: dict[str, Any] = {"method_config": cfg.to_dict(), "code_version": faircalib.__version__}
    target = model if inplace else copy.deepcopy(model)
    if cfg.method == "fp":
        info["wall_time_s"] = time.perf_counter() - t0
        return target.eval(), info

    position_weights = None
    if cfg.uses_prior:
        if prior is None:
            emit({"event": "probe_start", "n_samples": cfg.probe.n_samples})
            tp = time.perf_counter()
            prior = probe_prior(model, tokenizer, None, cfg.probe,
                                progress=lambda e: emit({**e, "stage": "probe"}))
            info["probe_time_s"] = time.perf_counter() - tp
        elif prior.settings != cfg.probe.prior:
            raise ConfigError(f"the given prior was probed with {prior.settings} but the method config asks for "
                              f"{cfg.probe.prior}; probe again or pass the matching prior")
        info["prior"] = {"cache_key": prior.cache_key(), "n_samples": prior.n_samples, "window": prior.window,
                         "settings": prior.settings.__dict__.copy(), "curve": prior.curve.tolist(),
                         "meta": dict(prior.meta)}

    if cfg.needs_calibration_data:
        given = calib_ids is not None
        if not given:
            calib_ids = calibration_ids(tokenizer, cfg)
        info["calib_data"] = {"shape": list(calib_ids.shape), "sha256": _ids_hash(calib_ids),
                              "source": "given" if given else cfg.calib_source}
        if prior is not None:
            position_weights = prior.aligned(calib_ids.shape[1], cfg.floor)  # (S,)
    else:
        calib_ids = None

    from faircalib.quant import quantize

    tq = time.perf_counter()
    quantize(target, cfg.quant_config(), calib_ids=calib_ids, position_weights=position_weights,
             calib_cfg=cfg.calib, state_dir=state_dir, progress=progress, device=device)
    info["quantize_time_s"] = time.perf_counter() - tq
    info["quant"] = {k: v for k, v in getattr(target, "faircalib_quant", {}).items() if k != "calibration"}
    calib = getattr(target, "faircalib_quant", {}).get("calibration")
    if calib:
        info["block_losses"] = [{"block": b["block"], "init": b["init_loss"], "final": b["final_loss"]}
                                for b in calib.get("blocks", [])]
    info["wall_time_s"] = time.perf_counter() - t0
    return target, info
