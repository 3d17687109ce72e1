"""`quantize(model, qcfg, ...)`: the one entry point that turns an FP DiffusionLM into its quantized
deployment form, dispatching on the method's registry entry (faircalib.quant.methods):

  no Stage II hooks (rtn)   round-to-nearest weights, per-token activations; needs no data
  Stage II hooks            the streaming layer-wise engine (faircalib.calibrate.engine): QuaRot's
                            rotation + GPTQ, or the learned methods (flatquant, qdrop, faircalib with
                            the Stage I position prior as `position_weights`)

The returned model is the same object, modified in place: its block linears are `QuantLinear`s, online
transforms sit in `block.act_transforms`, and `model(ids)` still returns logits, so decoding and
diagnostics run unchanged. `model.faircalib_quant` records what was done (saved by faircalib.checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import faircalib
from faircalib.calibrate.config import CalibConfig
from faircalib.calibrate.engine import ProgressFn, calibrate_layerwise
from faircalib.errors import ConfigError
from faircalib.models.base import DiffusionLM
from faircalib.finite import check_module
from faircalib.quant.bits import FP_BITS
from faircalib.quant.config import QuantConfig
from faircalib.quant.fold import fold_block, quantize_head_and_embed
from faircalib.quant.runtime import INFO_ATTR


def quantize(model: DiffusionLM, qcfg: QuantConfig | str, calib_ids: torch.Tensor | None = None,
             position_weights: torch.Tensor | None = None, calib_cfg: CalibConfig | None = None,
             state_dir: str | Path | None = None, progress: ProgressFn | None = None,
             device: str | torch.device = "cpu") -> DiffusionLM:
    """Quantize `model` in place per `qcfg` and return it (see the module docstring)."""
    from faircalib.models.loader import require_dllm

    require_dllm(model, "faircalib.calibrate.quantize()")
    qcfg = QuantConfig(method=qcfg) if isinstance(qcfg, str) else qcfg
    ccfg = calib_cfg or CalibConfig()
    spec = qcfg.spec
    if qcfg.w_bits >= FP_BITS:
        raise ConfigError("w_bits: quantize() needs quantized weights (2..8)", field="w_bits")
    if spec.prior == "required" and position_weights is None:
        raise ConfigError(f"method: {qcfg.method!r} needs position_weights (the Stage I prior); without them use "
                          "a method that does not (e.g. 'flatquant')", field="method")
    if spec.needs_data and calib_ids is None:
        raise ConfigError(f"method: {qcfg.method!r} needs calibration data (calib_ids of shape (N, S))",
                          field="method")
    info: dict[str, Any] = {"quant_config": qcfg.to_dict(), "code_version": faircalib.__version__}
    if spec.stage2 is None:
        for block in model.blocks:
            fold_block(block, qcfg)
        info["calib_config"] = None
        info["fallbacks"] = []
        info["prior_hash"] = None
    else:
        result = calibrate_layerwise(model, calib_ids, qcfg, ccfg, position_weights, state_dir, progress, device)
        info["calib_config"] = ccfg.to_dict()
        info["calibration"] = result.to_dict()
        info["fallbacks"] = result.fallbacks
        info["prior_hash"] = result.prior_hash
        info["calib_sequences"] = list(calib_ids.shape)
    info["head_and_embedding"] = quantize_head_and_embed(model, qcfg)
    model.requires_grad_(False)
    check_module(model, where=f"quantize ({qcfg.method} W{qcfg.w_bits}A{qcfg.a_bits}): the quantized model",
                 fix="check the input weights for NaN/inf (faircalib models inspect) or lower the calibration lr")
    setattr(model, INFO_ATTR, info)
    return model.eval()
