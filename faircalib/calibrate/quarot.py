"""QuaRot inside the Stage II engine: rotate the FP model (faircalib.quant.quarot.rotate_model), then per
block collect each activation point's input Hessian during the engine's FP pass (the input the linears
really see, i.e. after QuaRot's online rotation) and quantize the weights with GPTQ
(faircalib.quant.gptq). Activations are quantized per token at run time by `QuantLinear` (clip 1).

Boundary: glue only. The rotation math is quant/quarot.py + quant/hadamard.py, GPTQ is quant/gptq.py.
Token weights are uniform (QuaRot is a baseline; the position prior applies to learned methods).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from faircalib.models.base import ACT_POINTS, DecoderBlock, DiffusionLM
from faircalib.quant.config import QuantConfig
from faircalib.quant.gptq import HessianAccumulator, gptq_quantize
from faircalib.quant.quarot import rotate_model
from faircalib.quant.runtime import QuantLinear


def prepare_quarot(model: DiffusionLM, qcfg: QuantConfig) -> dict[str, Any]:
    """Rotate the FP model in place (function-preserving); returns rotate_model's record."""
    return rotate_model(model, seed=qcfg.effective_rotation_seed)


def hessian_observer(stats: dict[str, Any]) -> Callable[[str, torch.Tensor], None]:
    """Observer for the engine's FP pass: accumulates H = 2/n Σ x xᵀ per activation point in `stats`."""
    def observe(point: str, x: torch.Tensor) -> None:
        if point not in stats:
            stats[point] = HessianAccumulator(x.shape[-1], device=x.device)
        stats[point].add(x.detach())
    return observe


@torch.no_grad()
def quarot_block(block: DecoderBlock, qcfg: QuantConfig, stats: dict[str, Any]) -> dict[str, torch.Tensor]:
    """GPTQ every quantized linear of the block with its point's Hessian; install QuantLinears.
    Returns the codes/scales (the block's state for resume)."""
    state: dict[str, torch.Tensor] = {}
    for point in qcfg.points:
        H = stats[point].H
        for role in ACT_POINTS[point]:
            lin = block.role(role)
            res = gptq_quantize(lin.weight.detach(), H, qcfg.w_bits, blocksize=qcfg.gptq_blocksize,
                                damp=qcfg.gptq_damp)
            state[f"{role}.codes"], state[f"{role}.scales"] = res.codes, res.scales
            block.set_role(role, QuantLinear.from_codes(res.codes, res.scales, lin.bias, qcfg.w_bits, qcfg.a_bits))
    return state


@torch.no_grad()
def load_quarot_block(block: DecoderBlock, qcfg: QuantConfig, state: dict[str, torch.Tensor]) -> None:
    """Rebuild a block's QuantLinears from saved GPTQ codes/scales (resume)."""
    for point in qcfg.points:
        for role in ACT_POINTS[point]:
            lin = block.role(role)
            codes = state[f"{role}.codes"].to(lin.weight.device)
            block.set_role(role, QuantLinear.from_codes(codes, state[f"{role}.scales"], lin.bias, qcfg.w_bits,
                                                        qcfg.a_bits))
