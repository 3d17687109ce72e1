"""`quantize(model, qcfg, ...)`: the one entry point that turns an FP DiffusionLM into its quantized
deployment form, dispatching by method:

  rtn        round-to-nearest weights, per-token activations; needs no data
  quarot     rotate (faircalib.quant.quarot) -> Stage II pass collecting Hessians -> GPTQ weights
  flatquant  Stage II with Kronecker transforms, uniform position weights
  faircalib  the same with the Stage I position prior (`position_weights`)
  qdrop      Stage II learning clipping directly, QDrop's random activation-quantization drop

The returned model is the same object, modified in place: its block linears are `QuantLinear`s, online
transforms sit in `block.act_transforms`, and `model(ids)` still returns logits, so decoding and
diagnostics run unchanged. `model.faircalib_quant` records what was done (saved by faircalib.checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import faircalib
from faircalib.errors import ConfigError
from faircalib.models.base import DiffusionLM
from faircalib.quant.config import FP_BITS, CalibConfig, QuantConfig
from faircalib.quant.fold import fold_block
from faircalib.quant.runtime import QuantEmbedding, QuantLinear

INFO_ATTR = "faircalib_quant"


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> str:
    """Put `new` where `old` sits in `root`'s tree (found by identity); returns its dotted path."""
    for name, mod in root.named_modules():
        if mod is old and name:
            parent, _, attr = name.rpartition(".")
            owner = root.get_submodule(parent) if parent else root
            if isinstance(owner, nn.ModuleDict):
                owner[attr] = new
            else:
                setattr(owner, attr, new)
            return name
    raise ValueError("module not found in the model")


@torch.no_grad()
def quantize_head_and_embed(model: DiffusionLM, qcfg: QuantConfig) -> None:
    """RTN for the LM head / embedding when the config asks for it (both stay FP by default)."""
    if not (qcfg.quantize_head or qcfg.quantize_embed):
        return
    if model.lm_head is None:
        raise ConfigError("quantize_head/quantize_embed with tied word embeddings is not supported; keep them FP "
                          "(quantize_head=False, quantize_embed=False)")
    if qcfg.quantize_head and not isinstance(model.lm_head, QuantLinear):
        head = model.lm_head
        replace_module(model, head, QuantLinear.from_float(head.weight, head.bias, qcfg.w_bits, qcfg.a_bits))
    if qcfg.quantize_embed and not isinstance(model.embed_tokens, QuantEmbedding):
        emb = model.embed_tokens
        replace_module(model, emb, QuantEmbedding.from_float(emb.weight, qcfg.w_bits))


def quantize(model: DiffusionLM, qcfg: QuantConfig | str, calib_ids: torch.Tensor | None = None,
             position_weights: torch.Tensor | None = None, calib_cfg: CalibConfig | None = None,
             state_dir: str | Path | None = None, progress=None, device: str | torch.device = "cpu") -> DiffusionLM:
    """Quantize `model` in place per `qcfg` and return it (see the module docstring)."""
    qcfg = QuantConfig(method=qcfg) if isinstance(qcfg, str) else qcfg
    ccfg = calib_cfg or CalibConfig()
    if qcfg.w_bits >= FP_BITS:
        raise ConfigError("quantize() needs quantized weights (w_bits 2..8)")
    if qcfg.method == "faircalib" and position_weights is None:
        raise ConfigError("method 'faircalib' needs position_weights (the Stage I prior); without them use "
                          "method 'flatquant'")
    if qcfg.needs_data and calib_ids is None:
        raise ConfigError(f"method {qcfg.method!r} needs calibration data (calib_ids of shape (N, S))")
    info: dict[str, Any] = {"quant_config": qcfg.to_dict(), "code_version": faircalib.__version__}
    if qcfg.method == "rtn":
        for block in model.blocks:
            fold_block(block, qcfg)
        info["calib_config"] = None
        info["fallbacks"] = []
        info["prior_hash"] = None
    else:
        from faircalib.calibrate.engine import calibrate_layerwise

        result = calibrate_layerwise(model, calib_ids, qcfg, ccfg, position_weights, state_dir, progress, device)
        info["calib_config"] = ccfg.to_dict()
        info["calibration"] = result.to_dict()
        info["fallbacks"] = result.fallbacks
        info["prior_hash"] = result.prior_hash
        info["calib_sequences"] = list(calib_ids.shape)
    quantize_head_and_embed(model, qcfg)
    model.requires_grad_(False)
    setattr(model, INFO_ATTR, info)
    return model.eval()
