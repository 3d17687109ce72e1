"""The one-call entry point for the common case: quantize a model and save it.

    import faircalib
    q = faircalib.quantize_model("zoo:tiny-llada", method="faircalib", bits="w4a4",
                                 calibration={"n": 16, "seq_len": 64})
    q.report            # settings (and where the defaults came from), per-block losses, timings
    q.save("ckpt/")     # a checkpoint for faircalib.checkpoint.load_quantized / `faircalib eval ckpt/`
    q.model(ids)        # the quantized DiffusionLM: logits, decoding, diagnostics as for the FP model

SOURCE is a zoo name, a model directory (official LLaDA / Dream layout) or an already loaded faircalib
model (a LoadedDLLM from load_dllm, or its DiffusionLM with `tokenizer=`). Stage I probing defaults to
the model's own decoding settings (T = its steps, L = its gen_length: the zoo card, or the family's
documented defaults; faircalib.models.model_decoding), `paper_scale=True` is the paper's 512 prompts at
T = L = 256, and `probe=` overrides fields (a dict) or gives the whole ProbeConfig. The settings are
MethodConfig's, spelled as in Python and in a job file: `seed`, `qdrop_weighted`, `probe={...}`
(ProbeConfig fields), `calibration={...}` (CalibConfig fields: data, n, seq_len, data_seed, floor, epochs, ...).

Wiring only: faircalib.models.load_dllm -> faircalib.pipeline.run_method -> faircalib.checkpoint.
The lower-level API (run_method, probe_prior, faircalib.calibrate.quantize, save_quantized) stays as it is.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from faircalib.progress import ProgressFn

_RUNTIME = ("tokenizer", "prior", "state_dir", "device", "progress", "probe", "paper_scale", "calib_ids")


@dataclass
class QuantizedModel:
    """The result of `quantize_model`: the quantized model, what produced it, and where to save it."""

    model: Any                       # faircalib DiffusionLM with QuantLinear blocks
    tokenizer: Any
    config: Any                      # faircalib.pipeline.MethodConfig actually used
    info: dict[str, Any]             # run_method's record (prior, data hash, block losses, timings)
    source: str | None = None
    prior: Any = None                # the PositionPrior given as prior= (a probed one is described in info["prior"])
    defaults: dict[str, str] = field(default_factory=dict)  # setting -> where its default came from

    @property
    def report(self) -> dict[str, Any]:
        """What was done, as JSON-able facts."""
        cfg, info = self.config, self.info
        out: dict[str, Any] = {
            "source": self.source, "method": cfg.method, "bits": cfg.bits,
            "calibration": {"data": cfg.calibration.data, "n": cfg.calibration.n, "seq_len": cfg.calibration.seq_len,
                            "epochs": cfg.calibration.epochs, "floor": cfg.calibration.floor,
                            "data_sha256": (info.get("calib_data") or {}).get("sha256")},
            "block_losses": info.get("block_losses"),
            "fallbacks": (info.get("quant") or {}).get("fallbacks", []),
            "wall_time_s": info.get("wall_time_s"), "quantize_time_s": info.get("quantize_time_s"),
        }
        if cfg.uses_prior:
            p = cfg.probe
            out["probe"] = {"n_samples": p.n_samples, "steps": p.steps, "window": p.window,
                            "block_length": p.block_length, "prompts": p.prompts,
                            "defaults_from": self.defaults.get("probe"), "probe_time_s": info.get("probe_time_s"),
                            "prior_key": (info.get("prior") or {}).get("cache_key")}
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the checkpoint directory (format: docs/checkpoint.md); returns it."""
        from faircalib.checkpoint import save_quantized

        meta = {"source": self.source, "method_config": self.config.to_dict(), "prior": self.info.get("prior"),
                "defaults": dict(self.defaults)}
        return save_quantized(self.model, directory, meta=meta, tokenizer=self.tokenizer)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def _options_help() -> str:
    from faircalib.pipeline import MethodConfig

    names = [f.name for f in fields(MethodConfig) if f.name not in ("method", "bits", "probe")]
    return ", ".join(sorted(names + list(_RUNTIME)))


def _load(source_or_model: Any, tokenizer: Any):
    """-> (model, tokenizer, source string or None, resolved directory or None, owned: we loaded it)."""
    from faircalib.models import LoadedDLLM, load_dllm, require_dllm

    if isinstance(source_or_model, (str, Path)):
        m = load_dllm(source_or_model, device="cpu")
        return m.model, tokenizer or m.tokenizer, str(source_or_model), m.path, True
    if isinstance(source_or_model, LoadedDLLM):
        m = source_or_model
        return m.model, tokenizer or m.tokenizer, m.source, m.path, False
    model = require_dllm(source_or_model, "faircalib.quantize_model() (given a model object)")
    return model, tokenizer, None, None, False


def _probe_config(probe: Any, paper_scale: bool, source: str | None, path: Path | None, model: Any):
    """(ProbeConfig, where its T / L came from): a given ProbeConfig as it is, else
    faircalib.probe.probe_defaults with the given fields."""
    from faircalib.errors import ConfigError
    from faircalib.probe import ProbeConfig, probe_defaults

    if isinstance(probe, ProbeConfig):
        return probe, "probe= (given)"
    if probe is not None and not isinstance(probe, Mapping):
        raise ConfigError(f"probe: give a ProbeConfig or a dict of ProbeConfig fields, got {probe!r}", field="probe")
    return probe_defaults(source, path, arch=model.config.arch, paper_scale=paper_scale, **dict(probe or {}))


def quantize_model(source_or_model: Any, method: str = "faircalib", bits: str = "w4a4", **options: Any
                   ) -> QuantizedModel:
    """Quantize SOURCE with `method` at `bits` (Stage I probing + Stage II calibration for faircalib).

    options: MethodConfig's fields `seed`, `qdrop_weighted`, `calibration` (a CalibConfig or a dict of its
      fields: data, n, seq_len, data_seed, floor, epochs, ...), `probe` (a dict of ProbeConfig fields
      over the model's defaults, or a ProbeConfig); and `paper_scale`, `prior` (a PositionPrior or a
      prior directory from `faircalib probe`: skips probing), `tokenizer` (needed with a bare DiffusionLM),
      `calib_ids` ((N, S) ids instead of drawing them), `state_dir` (per-block resume), `device`,
      `progress` (a callback receiving faircalib.progress events).
    A model object passed in is left unchanged (a quantized copy is returned); a source is loaded here.
    """
    from faircalib.calibrate import CalibConfig
    from faircalib.errors import ConfigError
    from faircalib.pipeline import MethodConfig, run_method
    from faircalib.probe import PositionPrior

    names = {f.name for f in fields(MethodConfig)} - {"method", "bits", "probe"}
    unknown = sorted(set(options) - names - set(_RUNTIME))
    if unknown:
        raise TypeError(f"quantize_model() got unknown option(s) {unknown}; allowed: {_options_help()}")
    runtime = {k: options.pop(k) for k in _RUNTIME if k in options}
    device = runtime.get("device", "cpu")
    model, tokenizer, source, path, owned = _load(source_or_model, runtime.get("tokenizer"))

    prior = runtime.get("prior")
    if isinstance(prior, (str, Path)):
        prior = PositionPrior.load(prior)
    probe, origin = _probe_config(runtime.get("probe"), bool(runtime.get("paper_scale")), source, path, model)
    if prior is not None:
        probe, origin = probe.replace(prior=prior.settings), "the given prior"
    calibration = options.pop("calibration", None)
    if calibration is not None and not isinstance(calibration, (Mapping, CalibConfig)):
        raise ConfigError(f"calibration: expected a CalibConfig or a dict of its fields, got {calibration!r}",
                          field="calibration")
    if isinstance(calibration, Mapping):
        calibration = CalibConfig.from_dict(dict(calibration), "calibration")
    cfg = MethodConfig(method=method, bits=bits, probe=probe, **options,
                       **({"calibration": calibration} if calibration is not None else {}))
    if tokenizer is None and (cfg.needs_calibration_data and runtime.get("calib_ids") is None
                              or cfg.uses_prior and prior is None):
        raise ConfigError(f"quantize_model(): method {method!r} needs a tokenizer (probe prompts / calibration text) "
                          f"and the model has none; pass tokenizer=, or a LoadedDLLM / model directory with one")
    progress: ProgressFn | None = runtime.get("progress")
    qmodel, info = run_method(model, tokenizer, cfg, prior=prior, calib_ids=runtime.get("calib_ids"),
                              state_dir=runtime.get("state_dir"), progress=progress, device=device, inplace=owned)
    return QuantizedModel(model=qmodel, tokenizer=tokenizer, config=cfg, info=info, source=source, prior=prior,
                          defaults={"probe": origin} if cfg.uses_prior else {})


__all__ = ["QuantizedModel", "quantize_model"]
