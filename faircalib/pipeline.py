"""One method run: a frozen `MethodConfig` (method, bits, quantizer seed, Stage I `ProbeConfig`, Stage II
`CalibConfig`) and `run_method(model, tokenizer, cfg)` -> (quantized copy, info).

    cfg = MethodConfig(method="faircalib", bits="w4a4")                 # docs/method.md defaults
    qmodel, info = run_method(model, tokenizer, cfg)                     # probes, then calibrates
    cfg = MethodConfig.ablation_row("frontier_only")                     # beta = 0

Methods (faircalib.quant.methods): fp (unchanged copy), rtn, quarot, flatquant (uniform position
weights), qdrop, faircalib (the same Stage II engine as flatquant with `prior.aligned(S, floor)` as
position weights). QDrop with the prior (paper App. E.2) is `method="qdrop", qdrop_weighted=True`.

The job service's job file holds exactly these fields (`method`, `bits`, `seed`, `qdrop_weighted`,
`probe:`, `calibration:`) next to its own (model, evaluation, resources, storage).

Boundary: wiring only. Stage I = faircalib.probe, Stage II = faircalib.calibrate.quantize (the one quantizer).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import faircalib
from faircalib.calibrate.config import CalibConfig
from faircalib.configs import Config, check_bool, check_int, set_field
from faircalib.errors import ConfigError
from faircalib.models.hashing import tensor_hash
from faircalib.probe import PositionPrior, PriorSettings, ProbeConfig, probe_prior
from faircalib.quant.bits import parse_setting
from faircalib.quant.config import QuantConfig
from faircalib.quant.methods import MethodSpec, method_spec

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
class MethodConfig(Config):
    """Everything one method run depends on. Defaults: docs/method.md (Stage I per ProbeConfig,
    Stage II per CalibConfig: 128 x 1024 tokens of `builtin:mix:train`, FlatQuant optimiser, floor 0.1).

    seed: the quantizer's seed (QuaRot signs, QDrop drops, block training order); the calibration
    sample has its own, `calibration.data_seed`, and Stage I its own, `probe.seed`."""

    method: str = "faircalib"
    bits: str = "w4a4"
    seed: int = 0
    qdrop_weighted: bool = False
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    calibration: CalibConfig = field(default_factory=CalibConfig)

    def __post_init__(self) -> None:
        if isinstance(self.probe, Mapping):
            set_field(self, "probe", ProbeConfig.from_dict(self.probe, "probe"))
        if isinstance(self.calibration, Mapping):
            set_field(self, "calibration", CalibConfig.from_dict(self.calibration, "calibration"))
        spec = method_spec(self.method)
        bits, _ = parse_setting("bits", self.bits)
        set_field(self, "bits", bits)
        if bits not in spec.bits:
            raise ConfigError(f"bits: {bits!r} is not offered for method {self.method!r}; allowed: "
                              f"{', '.join(spec.bits)}", field="bits")
        check_int("seed", self.seed, 0)
        check_bool("qdrop_weighted", self.qdrop_weighted)
        if self.qdrop_weighted and spec.prior != "optional":
            raise ConfigError(f"qdrop_weighted: applies to method 'qdrop' only, not {self.method!r} "
                              "(faircalib is weighted already)", field="qdrop_weighted")
        if not isinstance(self.probe, ProbeConfig):
            raise ConfigError(f"probe: expected probe settings (a mapping), got {self.probe!r}", field="probe")
        if not isinstance(self.calibration, CalibConfig):
            raise ConfigError(f"calibration: expected calibration settings (a mapping), got {self.calibration!r}",
                              field="calibration")

    # ------------------------------------------------------------------ derived
    @property
    def spec(self) -> MethodSpec:
        return method_spec(self.method)

    @property
    def uses_prior(self) -> bool:
        return self.spec.uses_prior(self.qdrop_weighted)

    @property
    def needs_calibration_data(self) -> bool:
        return self.spec.needs_data

    def quant_config(self) -> QuantConfig:
        return QuantConfig.from_bits(self.bits, method=self.method, seed=self.seed)

    @classmethod
    def ablation_row(cls, name: str, **kw: Any) -> MethodConfig:
        """The config of one ablation row (`ABLATIONS`), other fields from `kw` (e.g. probe=..., bits=...)."""
        if name not in ABLATIONS:
            raise ConfigError(f"ablation: {name!r} is unknown; allowed: {', '.join(ABLATIONS)}", field="ablation")
        method, settings = ABLATIONS[name]
        cfg = cls(method=method, **kw)
        if settings is not None:
            cfg = cfg.replace(probe=cfg.probe.replace(prior=settings))
        return cfg


def calibration_ids(tokenizer, calib: CalibConfig, window: int | None = None,
                    mask_token_id: int | None = None) -> torch.Tensor:
    """(n, seq_len) calibration token ids (docs/method.md §3): fully observed text windows (layout
    "stream"), or task sequences ending on an answer window (layout "answer"); with masking "window"
    the answer window is masked at t ~ U(0, 1) per sequence. `window` is used when calib.window is None
    (the probe window L); `mask_token_id` is needed for masking."""
    from faircalib.data import sample_task_sequences, sample_token_sequences

    L = calib.window or window
    if (calib.layout == "answer" or calib.masking == "window") and not L:
        raise ConfigError("calibration.window: layout 'answer' / masking 'window' need the answer-window length; "
                          "set calibration.window (or probe.window)")
    if calib.layout == "answer":
        ids = sample_task_sequences(tokenizer, calib.data, calib.n, calib.seq_len, L, calib.data_seed)
    else:
        ids = sample_token_sequences(tokenizer, calib.data, calib.n, calib.seq_len, calib.data_seed)
    if calib.masking == "window":
        from faircalib.calibrate.masked import mask_window

        if mask_token_id is None:
            raise ConfigError("calibration.masking: 'window' needs the model's mask token id")
        ids = mask_window(ids, mask_token_id, L, seed=calib.data_seed).ids
    return ids


def run_method(model, tokenizer, cfg: MethodConfig, prior: PositionPrior | None = None, *,
               calib_ids: torch.Tensor | None = None, state_dir: str | Path | None = None,
               progress: ProgressFn | None = None, device: str | torch.device | None = "auto",
               inplace: bool = False) -> tuple[Any, dict[str, Any]]:
    """Quantize (a copy of) `model` with `cfg.method` -> (model, info).

    prior: the Stage I prior for faircalib / weighted qdrop; None = probe `model` now with cfg.probe.
      A given prior must have been probed with cfg.probe.prior (ConfigError otherwise).
    calib_ids: (N, S) calibration ids to use instead of drawing cfg.calibration.n x seq_len from
      cfg.calibration.data (lets a benchmark give every method the same data).
    device: where the compute runs (auto = CUDA when available): Stage I moves the model there for the
      rollouts; Stage II keeps the model on the host and streams one block at a time to the device.
    info: method config, quantization info (faircalib.quant), prior key/curve, data hash, wall times.
    """
    from faircalib.devices import resolve_device
    from faircalib.models.loader import require_dllm

    require_dllm(model, "faircalib.pipeline.run_method()")
    t0 = time.perf_counter()
    device = resolve_device(device)
    emit = progress or (lambda event: None)
    info: dict[str, Any] = {"method_config": cfg.to_dict(), "code_version": faircalib.__version__,
                            "device": str(device)}
    target = model if inplace else copy.deepcopy(model)
    if not cfg.spec.quantizes:  # fp: the unquantized reference
        info["wall_time_s"] = time.perf_counter() - t0
        return target.eval(), info

    position_weights = None
    if cfg.uses_prior:
        if prior is None:
            emit({"event": "probe_start", "n_samples": cfg.probe.n_samples})
            tp = time.perf_counter()
            prior = probe_prior(model, tokenizer, None, cfg.probe, device=device,
                                progress=lambda e: emit({**e, "stage": "probe"}))
            info["probe_time_s"] = time.perf_counter() - tp
        elif prior.settings != cfg.probe.prior:
            raise ConfigError(f"the given prior was probed with {prior.settings} but the method config asks for "
                              f"{cfg.probe.prior}; probe again or pass the matching prior")
        info["prior"] = {"cache_key": prior.cache_key(), "n_samples": prior.n_samples, "window": prior.window,
                         "settings": prior.settings.to_dict(), "curve": prior.curve.tolist(),
                         "meta": dict(prior.meta)}

    if cfg.needs_calibration_data:
        given = calib_ids is not None
        if not given:
            calib_ids = calibration_ids(tokenizer, cfg.calibration, cfg.probe.window,
                                        getattr(model, "mask_token_id", None))
        info["calib_data"] = {"shape": list(calib_ids.shape), "sha256": tensor_hash(calib_ids.long()),
                              "source": "given" if given else cfg.calibration.data}
        if prior is not None:
            position_weights = prior.aligned(calib_ids.shape[1], cfg.calibration.floor)  # (S,)
    else:
        calib_ids = None

    from faircalib.calibrate import quantize

    tq = time.perf_counter()
    quantize(target, cfg.quant_config(), calib_ids=calib_ids, position_weights=position_weights,
             calib_cfg=cfg.calibration, state_dir=state_dir, progress=progress, device=device)
    info["quantize_time_s"] = time.perf_counter() - tq
    info["quant"] = {k: v for k, v in getattr(target, "faircalib_quant", {}).items() if k != "calibration"}
    calib = getattr(target, "faircalib_quant", {}).get("calibration")
    if calib:
        info["block_losses"] = [{"block": b["block"], "init": b["init_loss"], "final": b["final_loss"]}
                                for b in calib.get("blocks", [])]
    info["wall_time_s"] = time.perf_counter() - t0
    return target, info
